"""The naive baseline server, the load generator and the limit runner against the real MiniLM.

One naive server process for the module, started and stopped by bench.procs as `make bench` does.
Its vectors must equal our encoder's: the benchmark compares designs, not models.
"""

from __future__ import annotations

import asyncio
import base64
import json
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np
import pytest

from bench.corpus import Item, make_corpus, tokenizer_counter
from bench.limit import BatchLimits, run_limit_round
from bench.loadgen import ClosedLoop, Payload, PhaseResult, make_payloads
from bench.modelfiles import default_model_path, max_tokens
from bench.procs import ServerError, ServerProcess, free_port
from bench.scrape import check_embedding_body
from bench.segment import SegmentPlan
from service.encoder import Encoder, EncoderConfig

HOST = "127.0.0.1"
MINILM_DIMENSION = 384


@pytest.fixture(scope="module")
def model_path() -> str:
    return default_model_path()


@pytest.fixture(scope="module")
def naive(model_path: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    port = free_port()
    argv = [sys.executable, "-m", "bench.naive_server", "--host", HOST, "--port", str(port)]
    server = ServerProcess(
        "naive server",
        [*argv, "--model", model_path],
        host=HOST,
        port=port,
        ready_path="/ready",
        log_path=tmp_path_factory.mktemp("naive") / "naive.log",
        ready_timeout_s=120,
    )
    with server:
        yield server


@pytest.fixture(scope="module")
def encoder(model_path: str) -> Encoder:
    return Encoder.load(EncoderConfig(model=model_path))


@pytest.fixture(scope="module")
def corpus(model_path: str) -> list[Item]:
    return make_corpus("short", 40, 0, tokenizer_counter(model_path, max_tokens(model_path)))


def _post(server: ServerProcess, body: dict[str, object]) -> tuple[int, bytes]:
    payload = make_payloads(
        HOST, server.port, "/v1/embeddings", [(json.dumps(body).encode(), 1, 1)]
    )
    result = _run_loop(server.port, payload, SegmentPlan(warmup=0, measured=1), clients=1)
    return next(iter(result.statuses)), result.sample_body or b""


def _run_loop(
    port: int,
    payloads: list[Payload],
    plan: SegmentPlan,
    clients: int,
    timeout_s: float = 30,
    clock: Callable[[], float] = time.perf_counter,
) -> PhaseResult:
    async def run() -> PhaseResult:
        async with ClosedLoop(HOST, port, clients, timeout_s) as loop:
            return await loop.run(payloads, plan, clock=clock)

    return asyncio.run(run())


class JumpClock:
    """A clock that stands still, then jumps once: after `reads` readings it is `by` seconds
    later for good. Budgets then run out at a known point of the loop, whatever the machine's
    speed."""

    def __init__(self, reads: int, by: float) -> None:
        self.reads = 0
        self.after = reads
        self.by = by

    def __call__(self) -> float:
        self.reads += 1
        return self.by if self.reads > self.after else 0.0


def _corpus_payloads(server: ServerProcess, corpus: list[Item]) -> list[Payload]:
    bodies = [(json.dumps({"input": item.text}).encode(), 1, item.tokens) for item in corpus]
    return make_payloads(HOST, server.port, "/v1/embeddings", bodies)


def test_naive_server_returns_the_same_vectors_as_our_encoder(
    naive: ServerProcess, encoder: Encoder
) -> None:
    text = "A quick brown fox jumps over the lazy dog."
    expected = encoder.encode([text])[0]

    status, body = _post(naive, {"input": text, "model": "any"})
    assert status == 200
    vector = np.asarray(check_embedding_body(body, MINILM_DIMENSION, "float"))
    assert float(vector @ expected) > 0.9999

    status, body = _post(naive, {"input": [text, "unrelated"], "encoding_format": "base64"})
    data = json.loads(body)
    assert status == 200
    assert [item["index"] for item in data["data"]] == [0, 1]
    decoded = np.frombuffer(base64.b64decode(data["data"][0]["embedding"]), dtype="<f4")
    assert float(decoded @ expected) > 0.9999
    assert data["usage"]["prompt_tokens"] > 0


def test_closed_loop_records_exactly_the_measured_requests_after_its_warm_up(
    naive: ServerProcess, corpus: list[Item]
) -> None:
    payloads = _corpus_payloads(naive, corpus)
    result = _run_loop(naive.port, payloads, SegmentPlan(warmup=8, measured=20), clients=4)
    assert result.statuses == {200: 20}
    assert result.requests == 20
    assert result.inputs == 20
    assert result.tokens == sum(item.tokens for item in corpus[8:28])
    assert len(result.latencies_s) == 20
    assert (result.segment_requests, result.segment_inputs) == (29, 29)  # + the closing request
    assert result.window.elapsed_s > 0
    # One continuous loop: every send in the window follows an answer inside it, the warm-up
    # answers of the 3 clients still waiting when it opened included. Had the clients drained
    # between warm-up and measurement, 3 measured answers would come after the window closed.
    assert result.window.inputs == 20


def test_closed_loop_stops_sending_when_its_time_budget_is_spent(
    naive: ServerProcess, corpus: list[Item]
) -> None:
    payloads = _corpus_payloads(naive, corpus)
    clock = JumpClock(reads=12, by=1.0)  # the budget runs out after a few requests
    plan = SegmentPlan(0, 100_000, budget_s=0.3)
    result = _run_loop(naive.port, payloads, plan, clients=2, clock=clock)
    assert 0 < result.requests < 20
    assert result.statuses[200] == result.requests  # what was sent still completed


def test_closed_loop_measures_after_a_warm_up_that_ran_out_of_time(
    naive: ServerProcess, corpus: list[Item]
) -> None:
    payloads = _corpus_payloads(naive, corpus)
    # The warm-up's budget runs out after a dozen clock readings (a few warm-up requests); then
    # the clock stands still again, so the measured part's own budget never does.
    clock = JumpClock(reads=12, by=1.0)
    plan = SegmentPlan(100_000, 6, budget_s=0.3)
    result = _run_loop(naive.port, payloads, plan, clients=2, clock=clock)
    assert result.statuses == {200: 6}
    assert result.segment_requests > 6 + 1


def test_closed_loop_counts_failures_apart_from_successes(naive: ServerProcess) -> None:
    bad = make_payloads(HOST, naive.port, "/v1/embeddings", [(b'{"input": []}', 1, 1)])
    result = _run_loop(naive.port, bad, SegmentPlan(warmup=4, measured=6), clients=2)
    assert result.statuses == {422: 6}  # the warm-up's failures are not recorded
    assert result.inputs == 0
    assert result.segment_inputs == 0
    assert result.latencies_s == []
    assert "HTTP 422" in result.error_samples[0]


def test_closed_loop_records_a_refused_connection_as_a_transport_error() -> None:
    port = free_port()  # nothing listens there
    payloads = make_payloads(HOST, port, "/v1/embeddings", [(b"{}", 1, 1)])
    result = _run_loop(port, payloads, SegmentPlan(warmup=0, measured=3), clients=2, timeout_s=5)
    assert result.statuses == {0: 3}


def test_server_process_reports_a_server_that_dies_at_start(tmp_path: Path) -> None:
    port = free_port()
    argv = [sys.executable, "-c", "print('cannot load the model'); raise SystemExit(3)"]
    server = ServerProcess(
        "broken", argv, host=HOST, port=port, ready_path="/ready", log_path=tmp_path / "log"
    )
    with pytest.raises(ServerError, match="broken exited with status 3\ncannot load"), server:
        pass


def test_limit_runner_embeds_every_request_in_bounded_batches(
    encoder: Encoder, corpus: list[Item]
) -> None:
    limit_round = run_limit_round(
        encoder,
        corpus,
        BatchLimits(4, 4096),
        concurrency=8,
        plan=SegmentPlan(warmup=2, measured=16),
    )
    result = limit_round.result
    assert (result.requests, result.ok, len(result.latencies_s)) == (16, 16, 16)
    assert (result.rejected, result.errors, result.cut_short) == (0, 0, False)
    assert result.segment_inputs == 2 + 16 + 1
    inputs, passes = result.batch_totals
    assert inputs == 19
    assert 1 <= inputs / passes <= 4
    assert result.cpu_s is not None
    assert result.cpu_s > 0
    assert 0 <= limit_round.tokenize_share < 1


@pytest.mark.parametrize(
    "concurrency",
    [
        4,  # lockstep: every pass answers all 4 clients
        8,  # two alternating batches: 4 warm-up inputs are still queued when measuring starts
    ],
)
def test_limit_runner_records_the_measured_inputs_after_its_warm_up_in_one_loop(
    encoder: Encoder, corpus: list[Item], concurrency: int
) -> None:
    # Equal lengths, so batches are taken in arrival order, and a pass cost that never pays for a
    # length cut: the schedule is exact.
    uniform = [Item(item.text, 10) for item in corpus]
    result = run_limit_round(
        encoder,
        uniform,
        BatchLimits(4, 4096, pass_cost_tokens=1_000_000),
        concurrency=concurrency,
        plan=SegmentPlan(warmup=8, measured=16),
    ).result
    assert (result.requests, result.ok, len(result.latencies_s)) == (16, 16, 16)
    assert result.segment_inputs == 8 + 16 + 1
    assert result.batch_totals == (25, 7)  # 6 passes of 4, then the closing input alone
    # The window holds 4 whole passes: from the one that freed the first measured client to the
    # one that freed the closing request's.
    assert result.window.inputs == 16
    assert result.window.tokens == 160
    assert result.window.elapsed_s > 0


def test_limit_runner_cuts_a_window_of_mixed_lengths_like_the_server(encoder: Encoder) -> None:
    """Half sentences, half paragraphs: with the CPU pass cost each window of 8 runs as two length
    buckets (the server's plan_batches); with a pass cost no padding is worth, as one batch."""
    paragraph = " ".join(["the quick brown fox jumps over the lazy dog"] * 15)
    corpus = [Item("a short query", 5) if i % 2 else Item(paragraph, 140) for i in range(16)]
    passes = {}
    for cost in (64, 1_000_000):
        result = run_limit_round(
            encoder,
            corpus,
            BatchLimits(8, 32768, pass_cost_tokens=cost),
            concurrency=8,
            plan=SegmentPlan(warmup=8, measured=16),
        ).result
        assert result.ok == 16
        passes[cost] = result.batch_totals[1]
    assert passes[1_000_000] == 4  # three windows of 8, then the closing input
    assert passes[64] == 7  # each full window in two buckets
