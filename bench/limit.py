"""The physical limit: the server's own encoder in-process, fed ideal batches by a simulated closed
loop.

At concurrency c, c clients each have one input outstanding. Every forward pass takes as many of the
queued inputs as the server's batch limits allow (max_batch_size inputs and max_batch_tokens padded
tokens, shortest first so padding is minimal), and each client whose input was answered sends its
next one at once. There is no HTTP, no event loop and no queue bookkeeping, so throughput and
latency are what the model can do with perfect batching; the server's job is to come close.
Tokenisation is inside the measured time (the server must tokenise too) and reported separately."""

from __future__ import annotations

import math
import time
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

from tqdm import tqdm

from bench.corpus import Item
from bench.stats import LevelStats, percentiles_ms

if TYPE_CHECKING:
    from service.encoder import Encoder


@dataclass(frozen=True)
class BatchLimits:
    max_batch_size: int
    max_batch_tokens: int


@dataclass(frozen=True)
class LimitLevel:
    stats: LevelStats
    tokenize_share: float
    """Share of the measured time spent tokenising."""


@dataclass
class _Pending:
    item: Item
    submitted_at: float


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


def run_limit_level(
    encoder: Encoder,
    corpus: Sequence[Item],
    limits: BatchLimits,
    *,
    concurrency: int,
    requests: int,
    warmup: int,
    start: int = 0,
    label: str | None = None,
    budget_s: float | None = None,
) -> LimitLevel:
    """Embed `requests` inputs with `concurrency` simulated clients, after `warmup`; after
    `budget_s` seconds no client sends again (like the HTTP load generator)."""
    if warmup:
        _closed_loop(encoder, corpus, limits, concurrency, warmup, start, None, None)
    return _closed_loop(
        encoder, corpus, limits, concurrency, requests, start + warmup, label, budget_s
    )


def _closed_loop(
    encoder: Encoder,
    corpus: Sequence[Item],
    limits: BatchLimits,
    concurrency: int,
    requests: int,
    start: int,
    label: str | None,
    budget_s: float | None,
) -> LimitLevel:
    progress = tqdm(total=requests, desc=label, unit="req", mininterval=0.5, disable=label is None)
    began = time.perf_counter()
    cpu_began = time.process_time()
    deadline = math.inf if budget_s is None else began + budget_s
    queue = deque(
        _Pending(corpus[(start + i) % len(corpus)], began)
        for i in range(min(concurrency, requests))
    )
    issued = len(queue)
    latencies: list[float] = []
    tokens = batches = 0
    tokenize_s = 0.0
    while queue:
        batch = take_batch(queue, limits)
        tokenize_began = time.perf_counter()
        ids = encoder.tokenize([pending.item.text for pending in batch]).ids
        tokenize_s += time.perf_counter() - tokenize_began
        encoder.encode_ids(ids)
        done = time.perf_counter()
        batches += 1
        for pending in batch:
            latencies.append(done - pending.submitted_at)
            tokens += pending.item.tokens
            if issued < requests and done < deadline:
                queue.append(_Pending(corpus[(start + issued) % len(corpus)], done))
                issued += 1
        progress.update(len(batch))
    elapsed = time.perf_counter() - began
    cpu_s = time.process_time() - cpu_began
    progress.close()
    p50, p95, p99 = percentiles_ms(latencies)
    stats = LevelStats(
        system="limit",
        concurrency=concurrency,
        requests=issued,
        ok=len(latencies),
        rejected=0,
        errors=0,
        elapsed_s=elapsed,
        inputs=len(latencies),
        tokens=tokens,
        p50_ms=p50,
        p95_ms=p95,
        p99_ms=p99,
        mean_batch_size=len(latencies) / batches if batches else None,
        cpu_ms_per_input=1000 * cpu_s / len(latencies) if latencies else None,
        cut_short=issued < requests,
    )
    return LimitLevel(stats, tokenize_s / elapsed if elapsed > 0 else 0.0)
