"""The naive baseline server, the load generator and the limit runner against the real MiniLM.

One naive server process for the module, started and stopped by bench.procs as `make bench` does.
Its vectors must equal our encoder's: the benchmark compares designs, not models.
"""

from __future__ import annotations

import asyncio
import base64
import json
import sys
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

from bench.corpus import Item, make_corpus, tokenizer_counter
from bench.limit import BatchLimits, run_limit_level
from bench.loadgen import ClosedLoop, PhaseResult, make_payloads
from bench.modelfiles import default_model_path, max_tokens
from bench.procs import ServerError, ServerProcess, free_port
from bench.scrape import check_embedding_body
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

    async def send() -> tuple[int, bytes]:
        async with ClosedLoop(HOST, server.port, 1, timeout_s=30) as loop:
            result = await loop.run(payload, 1)
        status = next(iter(result.statuses))
        return status, result.sample_body or b""

    return asyncio.run(send())


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


def test_closed_loop_sends_exactly_the_requests_asked(
    naive: ServerProcess, corpus: list[Item]
) -> None:
    bodies = [(json.dumps({"input": item.text}).encode(), 1, item.tokens) for item in corpus]
    payloads = make_payloads(HOST, naive.port, "/v1/embeddings", bodies)

    async def run() -> tuple[int, int, PhaseResult]:
        async with ClosedLoop(HOST, naive.port, 4, timeout_s=30) as loop:
            warm = await loop.run(payloads, 4)
            result = await loop.run(payloads, 25, start=4)
        return warm.statuses[200], result.statuses[200], result

    warm_ok, ok, result = asyncio.run(run())
    assert warm_ok == 4
    assert ok == 25
    assert result.inputs == 25
    assert result.tokens == sum(item.tokens for item in corpus[4:29])
    assert len(result.latencies_s) == 25
    assert result.elapsed_s > 0


def test_closed_loop_stops_sending_when_its_time_budget_is_spent(
    naive: ServerProcess, corpus: list[Item]
) -> None:
    bodies = [(json.dumps({"input": item.text}).encode(), 1, item.tokens) for item in corpus]
    payloads = make_payloads(HOST, naive.port, "/v1/embeddings", bodies)

    async def run() -> PhaseResult:
        async with ClosedLoop(HOST, naive.port, 2, timeout_s=30) as loop:
            return await loop.run(payloads, 100_000, budget_s=0.3)

    result = asyncio.run(run())
    assert 0 < result.requests < 100_000
    assert result.statuses[200] == result.requests  # what was sent still completed


def test_closed_loop_counts_failures_apart_from_successes(naive: ServerProcess) -> None:
    bad = make_payloads(HOST, naive.port, "/v1/embeddings", [(b'{"input": []}', 1, 1)])

    async def run() -> PhaseResult:
        async with ClosedLoop(HOST, naive.port, 2, timeout_s=30) as loop:
            return await loop.run(bad, 6)

    result = asyncio.run(run())
    assert result.statuses == {422: 6}
    assert result.inputs == 0
    assert result.latencies_s == []
    assert "HTTP 422" in result.error_samples[0]


def test_closed_loop_records_a_refused_connection_as_a_transport_error() -> None:
    port = free_port()  # nothing listens there
    payloads = make_payloads(HOST, port, "/v1/embeddings", [(b"{}", 1, 1)])

    async def run() -> PhaseResult:
        async with ClosedLoop(HOST, port, 2, timeout_s=5) as loop:
            return await loop.run(payloads, 3)

    result = asyncio.run(run())
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
    level = run_limit_level(
        encoder, corpus, BatchLimits(4, 4096), concurrency=8, requests=16, warmup=2
    )
    stats = level.stats
    assert (stats.system, stats.ok, stats.inputs) == ("limit", 16, 16)
    assert stats.mean_batch_size is not None
    assert 1 <= stats.mean_batch_size <= 4
    assert stats.tokens == sum(item.tokens for item in corpus[2:18])
    assert 0 <= level.tokenize_share < 1
