"""The physical limit: the server's own encoder in-process, fed ideal batches by a simulated closed
loop.

At concurrency c, c clients each have one input outstanding. Each step takes as many of the queued
inputs as the server's batch limits allow (max_batch_size inputs and max_batch_tokens padded
tokens, shortest first so padding is minimal), cuts them into length buckets with the server's own
rule (service.batcher.plan_batches, the same pass cost), and runs one forward pass per bucket; each
client whose input was answered sends its next one at once. There is no HTTP, no event loop and no
queue bookkeeping, so throughput and latency are what the model can do with perfect batching; the
server's job is to come close.
Tokenisation is inside the measured time (the server must tokenise too) and reported separately."""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

from bench.corpus import Item
from bench.segment import Segment, SegmentPlan, progress_bar
from bench.stats import RoundResult
from service.batcher import plan_batches

if TYPE_CHECKING:
    from service.encoder import Encoder


@dataclass(frozen=True)
class BatchLimits:
    max_batch_size: int
    max_batch_tokens: int
    pass_cost_tokens: int = 0


@dataclass(frozen=True)
class LimitRound:
    result: RoundResult
    tokenize_share: float
    """Share of the segment's time spent tokenising."""


@dataclass
class _Pending:
    item: Item
    submitted_at: float
    number: int
    """The request's number in its segment (bench/segment.py)."""


def take_batch(queue: deque[_Pending], limits: BatchLimits) -> list[_Pending]:
    """The shortest queued inputs that fit the limits (padded tokens = inputs x longest), >= 1.

    Shortest first maximises throughput; in a closed loop it cannot starve long inputs for long,
    because their clients send nothing else while they wait: the queue fills up with them.
    """
    batch: list[_Pending] = []
    for pending in sorted(queue, key=lambda pending: pending.item.tokens):
        size = len(batch) + 1
        if batch and (
            size > limits.max_batch_size or size * pending.item.tokens > limits.max_batch_tokens
        ):
            break
        batch.append(pending)
    chosen = {id(pending) for pending in batch}
    remaining = [pending for pending in queue if id(pending) not in chosen]
    queue.clear()
    queue.extend(remaining)
    return batch


def run_limit_round(
    encoder: Encoder,
    corpus: Sequence[Item],
    limits: BatchLimits,
    *,
    concurrency: int,
    plan: SegmentPlan,
    start: int = 0,
    label: str | None = None,
) -> LimitRound:
    """One steady-state segment with `concurrency` simulated clients, cycling through `corpus` from
    index `start`: `plan.warmup` unrecorded inputs, `plan.measured` recorded ones and the closing
    one, without a pause between them (like the HTTP load generator, bench/segment.py)."""
    progress = progress_bar(plan, label)
    began = time.perf_counter()
    cpu_began = time.process_time()
    segment = Segment(plan, began)
    queue: deque[_Pending] = deque()
    _submit(queue, segment, corpus, start, began, concurrency)
    latencies: list[float] = []
    batches = 0
    tokenize_s = 0.0
    while queue:
        window = take_batch(queue, limits)
        tokenize_began = time.perf_counter()
        ids = encoder.tokenize([pending.item.text for pending in window]).ids
        tokenize_s += time.perf_counter() - tokenize_began
        buckets = plan_batches(
            list(zip(window, ids, strict=True)),
            _length,
            max_tokens=limits.max_batch_tokens,
            max_rows=limits.max_batch_size,
            pass_cost_tokens=limits.pass_cost_tokens,
        )
        for bucket in buckets:
            encoder.encode_ids([bucket_ids for _, bucket_ids in bucket])
            done = time.perf_counter()
            batches += 1
            for pending, _ in bucket:
                segment.succeeded(done, inputs=1, tokens=pending.item.tokens)
                if segment.is_measured(pending.number):
                    latencies.append(done - pending.submitted_at)
            _submit(queue, segment, corpus, start, done, len(bucket))
            progress.update(len(bucket))
    elapsed = time.perf_counter() - began
    cpu_s = time.process_time() - cpu_began
    progress.close()
    result = RoundResult(
        requests=segment.measured_sent,
        ok=len(latencies),
        rejected=0,
        errors=0,
        window=segment.window(),
        latencies_s=tuple(latencies),
        cpu_s=cpu_s,
        segment_inputs=segment.completed_inputs,
        batch_totals=(segment.completed_inputs, batches),
        cut_short=segment.cut_short,
    )
    return LimitRound(result, tokenize_s / elapsed if elapsed > 0 else 0.0)


def _length(pair: tuple[_Pending, list[int]]) -> int:
    return len(pair[1])


def _submit(
    queue: deque[_Pending],
    segment: Segment,
    corpus: Sequence[Item],
    start: int,
    now: float,
    clients: int,
) -> None:
    """The next input of each of `clients` clients, as far as the segment still sends."""
    for _ in range(clients):
        number = segment.next(now)
        if number is None:
            return
        queue.append(_Pending(corpus[(start + number) % len(corpus)], now, number))
