"""The server under faults, on a live uvicorn: a device that runs out of memory or dies (the real
encoder in front of a faulty torch module, as a GPU would fail), NaN vectors, clients that go away
while sending their body (raw sockets)."""

from __future__ import annotations

import asyncio
import copy
import logging
import time
from collections.abc import Callable
from types import SimpleNamespace

import httpx
import numpy as np
import pytest
import torch
from service_testkit import LiveServer, raw_post

from service import contract
from service.encoder import Encoder

pytestmark = pytest.mark.anyio


class FlakyGpu(torch.nn.Module):
    """The tiny BERT on a pretend GPU: memory for `rows` inputs per pass; a CUDA error poisons it
    for good once an input holds `poison_id`; rows holding `nan_id` overflow to NaN."""

    def __init__(self, model: torch.nn.Module, rows: int, poison_id: int, nan_id: int) -> None:
        super().__init__()
        self.model = model
        self.rows = rows
        self.poison_id = poison_id
        self.nan_id = nan_id
        self.poisoned = False
        self.passes: list[int] = []

    def forward(self, **inputs: torch.Tensor) -> SimpleNamespace:
        ids = inputs["input_ids"]
        if self.poisoned or bool((ids == self.poison_id).any()):
            self.poisoned = True
            raise torch.AcceleratorError("CUDA error: an illegal memory access was encountered")
        if ids.shape[0] > self.rows:
            raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 20.00 GiB")
        self.passes.append(int(ids.shape[0]))
        hidden = self.model(**inputs).last_hidden_state
        overflow = (ids == self.nan_id).any(dim=1)
        hidden[overflow] = float("nan")
        return SimpleNamespace(last_hidden_state=hidden)


def on_flaky_gpu(encoder: Encoder, rows: int = 2) -> tuple[Encoder, FlakyGpu]:
    poison, nan = (encoder.tokenize([word]).ids[0][1] for word in ("rain", "weather"))
    gpu = FlakyGpu(encoder._model, rows, poison, nan)
    faulty = copy.copy(encoder)
    faulty._model = gpu
    return faulty, gpu


def post(server: LiveServer, body: dict) -> httpx.Response:
    return httpx.post(f"{server.base_url}{contract.EMBEDDINGS_PATH}", json=body, timeout=30)


def get(server: LiveServer, path: str) -> httpx.Response:
    return httpx.get(f"{server.base_url}{path}", timeout=30)


def error_code(response: httpx.Response, status: int) -> str:
    assert response.status_code == status, response.text
    code: str = response.json()["error"]["code"]
    return code


def test_a_batch_that_runs_out_of_memory_is_served_in_smaller_batches(
    start_server: Callable[..., LiveServer], tiny_encoder: Encoder
) -> None:
    encoder, gpu = on_flaky_gpu(tiny_encoder, rows=2)
    server = start_server(encoder)
    texts = ["the cat sat", "hello world", "a big red dog", "the quick brown fox", "sunny today"]
    response = post(server, {"input": texts})
    assert response.status_code == 200, response.text
    vectors = np.array([d["embedding"] for d in response.json()["data"]], dtype=np.float32)
    np.testing.assert_allclose(vectors, tiny_encoder.encode(texts), atol=1e-5)
    assert max(gpu.passes) <= 2
    assert server.metric(contract.DEVICE_ERRORS_TOTAL, {"kind": "out_of_memory"}) >= 1
    assert server.metric(contract.DEVICE_ERRORS_TOTAL, {"kind": "device_failed"}) == 0
    assert get(server, contract.HEALTH_PATH).status_code == 200
    assert get(server, contract.READY_PATH).status_code == 200


def test_a_dead_device_fails_liveness_and_readiness(
    start_server: Callable[..., LiveServer], tiny_encoder: Encoder
) -> None:
    encoder, _ = on_flaky_gpu(tiny_encoder, rows=64)
    server = start_server(encoder)
    assert post(server, {"input": "hello world"}).status_code == 200
    assert error_code(post(server, {"input": "rain today"}), 503) == "device_failed"
    health = get(server, contract.HEALTH_PATH)
    assert error_code(health, 503) == "device_failed"
    assert "illegal memory access" in health.json()["error"]["message"]
    assert error_code(get(server, contract.READY_PATH), 503) == "not_ready"
    assert server.metric(contract.READY) == 0
    assert server.metric(contract.DEVICE_ERRORS_TOTAL, {"kind": "device_failed"}) == 1
    # Nothing reaches the device any more: every request is refused at once.
    assert error_code(post(server, {"input": "hello world"}), 503) == "device_failed"


@pytest.mark.parametrize("encoding_format", ["float", "base64"])
def test_nan_vectors_are_never_answered_200(
    start_server: Callable[..., LiveServer], tiny_encoder: Encoder, encoding_format: str
) -> None:
    encoder, _ = on_flaky_gpu(tiny_encoder, rows=64)
    server = start_server(encoder)
    body = {"input": ["hello world", "weather today"], "encoding_format": encoding_format}
    response = post(server, body)
    assert error_code(response, 500) == "non_finite_embedding"
    assert "input[1]" in response.json()["error"]["message"]
    similarity = httpx.post(
        f"{server.base_url}{contract.SIMILARITY_PATH}",
        json={"source_text": "weather today", "candidates": ["hello"]},
    )
    assert error_code(similarity, 500) == "non_finite_embedding"
    assert post(server, {"input": "hello world"}).status_code == 200
    assert get(server, contract.HEALTH_PATH).status_code == 200


# --- Clients that go away while sending --------------------------------------------------------
@pytest.fixture(scope="module")
def plain(start_server: Callable[..., LiveServer], tiny_encoder: Encoder) -> LiveServer:
    return start_server(tiny_encoder)


async def send_and_close(server: LiveServer, head_extra: str, body: bytes) -> None:
    _, writer = await raw_post(server.base_url, contract.EMBEDDINGS_PATH, head_extra, body)
    writer.close()
    await writer.wait_closed()


def count(server: LiveServer, status: str) -> float:
    labels = {"route": contract.EMBEDDINGS_PATH, "status": status}
    return server.metric(contract.REQUESTS_TOTAL, labels)


@pytest.mark.parametrize(
    ("head_extra", "body"),
    [
        pytest.param("Content-Length: 400\r\n", b'{"input": ["half a bo', id="half-body"),
        pytest.param("Content-Length: 400\r\n", b"", id="headers-only"),
        # One whole chunk (0xf = 15 bytes), then nothing: a chunk that overran its size would be a
        # malformed body, answered 400 before the close.
        pytest.param("Transfer-Encoding: chunked\r\n", b'f\r\n{"input": ["a",\r\n', id="chunked"),
    ],
)
async def test_a_client_gone_while_sending_is_not_a_server_error(
    plain: LiveServer, caplog: pytest.LogCaptureFixture, head_extra: str, body: bytes
) -> None:
    before = count(plain, "499")
    errors_before = count(plain, "500")
    with caplog.at_level(logging.INFO):
        await send_and_close(plain, head_extra, body)
        deadline = time.monotonic() + 20  # a bound for a stuck server, not a speed budget
        while count(plain, "499") == before and count(plain, "500") == errors_before:
            assert time.monotonic() < deadline, "the request was never counted"
            await asyncio.sleep(0.02)
    assert count(plain, "500") == errors_before
    assert count(plain, "499") == before + 1
    assert [r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR] == []
    assert plain.metric(contract.REQUESTS_IN_FLIGHT) == 0
    assert (await asyncio.to_thread(get, plain, contract.READY_PATH)).status_code == 200
