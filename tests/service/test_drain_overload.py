"""Backpressure and shutdown on the real MiniLM: overload answers 429 at once and the server
recovers; SIGTERM under load loses no accepted request, /ready is 503 during the drain, exit 0;
what the drain timeout cuts off is answered 503 in the envelope; drain log lines carry no
request's id."""

from __future__ import annotations

import asyncio
import json
import logging
import os
import signal
import sys
import time
from collections.abc import Callable
from pathlib import Path

import httpx
import pytest
import uvicorn
from service_testkit import LiveServer, free_port, raw_post, wait_ready

from service import contract, logs
from service.__main__ import DrainingServer
from service.encoder import Encoder
from service.metrics import Metrics
from service.runtime import Runtime
from service.settings import Settings

ROOT = Path(__file__).resolve().parents[2]
LONG_TEXT = "The quick brown fox jumps over the lazy dog while the band plays on. " * 3
pytestmark = pytest.mark.anyio


async def timed_post(client: httpx.AsyncClient, body: dict) -> tuple[httpx.Response, float]:
    start = time.perf_counter()
    response = await client.post(contract.EMBEDDINGS_PATH, json=body)
    return response, time.perf_counter() - start


async def test_overload_gets_fast_429s_and_the_server_recovers(
    start_server: Callable[..., LiveServer], minilm_encoder: Encoder
) -> None:
    """Admission by estimated time: far fewer inputs than max_queue_items are queued when the
    work would take the queue over its 0.2 s target; the 429 says when to come back."""
    if minilm_encoder.seconds_per_token is None:
        minilm_encoder.warm_up(1)  # what the server's own loader does: a measured prior
    server = start_server(minilm_encoder, max_queue_seconds=0.2, max_batch_size=16)
    body = {"input": [LONG_TEXT] * 16}
    async with httpx.AsyncClient(base_url=server.base_url, timeout=120) as client:
        results = await asyncio.gather(*(timed_post(client, body) for _ in range(16)))
        ok = [seconds for response, seconds in results if response.status_code == 200]
        rejected = [(r, seconds) for r, seconds in results if r.status_code == 429]
        assert ok, "no request was served"
        assert rejected, "the time target never triggered"
        assert len(ok) + len(rejected) == len(results)
        for response, _ in rejected:
            assert response.json()["error"]["code"] == "overloaded"
            assert "target of 0.2 s" in response.json()["error"]["message"]
            seconds, millis = (int(response.headers[h]) for h in ("retry-after", "retry-after-ms"))
            assert seconds >= 1
            assert seconds == max(1, -(-millis // 1000))  # the same delay, rounded up
        # Rejection does not wait for the device: every 429 came back before the slowest answer.
        assert max(seconds for _, seconds in rejected) < max(ok)
        assert (await client.get(contract.READY_PATH)).status_code == 200
        info = (await client.get(contract.INFO_PATH)).json()["limits"]
        assert info["max_queue_seconds"] == 0.2
        assert info["seconds_per_token"] > 0  # measured by the passes that ran
        again, _ = await timed_post(client, body)
        assert again.status_code == 200
    labels = {"route": contract.EMBEDDINGS_PATH, "status": "429"}
    assert server.metric(contract.REQUESTS_TOTAL, labels) == len(rejected)
    assert server.metric(contract.QUEUE_ITEMS) == 0
    assert server.metric(contract.QUEUE_SECONDS) == 0
    assert server.metric(contract.REQUESTS_IN_FLIGHT) == 0


async def test_sigterm_under_load_drains_without_losing_requests() -> None:
    port = free_port()
    base_url = f"http://127.0.0.1:{port}"
    env = {
        **os.environ,
        "HF_HUB_OFFLINE": "1",
        contract.ENV_DRAIN_DELAY_SECONDS: "3",
        contract.ENV_DRAIN_TIMEOUT_SECONDS: "30",
        # Every request here must be accepted: on a slow machine the three large ones sent
        # together exceed the default 1 s admission target (a 429 is no drain loss; the overload
        # test covers admission).
        contract.ENV_MAX_QUEUE_SECONDS: "60",
    }
    env.pop(contract.ENV_MODEL, None)  # the bundled MiniLM: what `make serve` runs
    process = await asyncio.create_subprocess_exec(
        *[sys.executable, "-m", "service", "--host", "127.0.0.1", "--port", str(port)],
        cwd=ROOT,
        env=env,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
    )
    try:
        await asyncio.to_thread(wait_ready, base_url, 90)
        statuses, ready_during_drain = await _load_through_sigterm(process, base_url)
        output = (await asyncio.wait_for(process.communicate(), 60))[0].decode()
    finally:
        if process.returncode is None:
            process.kill()
    assert process.returncode == 0, output
    assert statuses, "no request completed"
    assert set(statuses) == {200}, f"{statuses} / {output[-2000:]}"
    # A 200 can come before the signal is handled; from the first 503 on, /ready stays 503.
    assert 503 in ready_during_drain, ready_during_drain
    assert ready_during_drain[ready_during_drain.index(503) :] == [503] * 3, ready_during_drain
    assert "SIGTERM" in output


async def _load_through_sigterm(
    process: asyncio.subprocess.Process, base_url: str
) -> tuple[list[int], list[int]]:
    """Clients keep sending through the drain delay; a few large requests start during it, so
    they are still in flight (and queued) when the listener closes.

    Nothing here races the drain delay: the load opens a fresh connection per request only until
    /ready answers 503, and the /ready reads and the large requests go over keep-alive
    connections opened before SIGTERM, so a slow machine cannot turn the closed listener into a
    connection error."""
    statuses: list[int] = []
    ready_during_drain: list[int] = []
    stop_sending = asyncio.Event()
    fresh = httpx.Limits(max_keepalive_connections=0)  # a new connection per request

    async def steady(client: httpx.AsyncClient) -> None:
        while not stop_sending.is_set():
            response = await client.post(contract.EMBEDDINGS_PATH, json={"input": ["hi"] * 8})
            statuses.append(response.status_code)

    async def ready(probe: httpx.AsyncClient) -> int:
        return (await probe.get(contract.READY_PATH)).status_code

    async with (
        httpx.AsyncClient(base_url=base_url, timeout=60, limits=fresh) as client,
        httpx.AsyncClient(base_url=base_url, timeout=60) as probe,
    ):
        # Four connections open and idle in the probe's pool: one for /ready, three for the
        # large requests.
        assert await asyncio.gather(*(ready(probe) for _ in range(4))) == [200] * 4
        workers = [asyncio.create_task(steady(client)) for _ in range(6)]
        for _ in range(1200):  # until the load is flowing (a bound for a stuck server, 60 s)
            if len(statuses) >= len(workers):
                break
            await asyncio.sleep(0.05)
        assert statuses, "no request completed before SIGTERM"
        process.send_signal(signal.SIGTERM)
        for _ in range(50):
            ready_during_drain.append(await ready(probe))
            if ready_during_drain[-1] == 503:
                break
            await asyncio.sleep(0.05)
        stop_sending.set()
        for _ in range(2):  # and it stays 503
            ready_during_drain.append(await ready(probe))
        big = [
            asyncio.create_task(
                probe.post(contract.EMBEDDINGS_PATH, json={"input": [LONG_TEXT] * 32})
            )
            for _ in range(3)
        ]
        await asyncio.gather(*workers)
        statuses.extend(response.status_code for response in await asyncio.gather(*big))
    return statuses, ready_during_drain


async def test_a_client_that_goes_away_has_its_queued_inputs_dropped(
    start_server: Callable[..., LiveServer], minilm_encoder: Encoder
) -> None:
    server = start_server(minilm_encoder, max_batch_size=8)
    texts = [LONG_TEXT] * 256
    full_tokens = minilm_encoder.tokenize(texts).token_count
    before = server.metric(contract.TOKENS_TOTAL)
    body = json.dumps({"input": texts}).encode()
    length = f"Content-Length: {len(body)}\r\n"
    _, writer = await raw_post(server.base_url, contract.EMBEDDINGS_PATH, length, body)
    # Leave once the first batch has run: most of the request is still queued.
    for _ in range(600):  # a bound for a stuck server (30 s), not a speed budget
        if server.metric(contract.TOKENS_TOTAL) > before:
            break
        await asyncio.sleep(0.05)
    writer.close()
    await writer.wait_closed()
    for _ in range(600):  # a bound for a stuck server (30 s), not a speed budget
        await asyncio.sleep(0.05)
        if (
            server.metric(contract.QUEUE_ITEMS) == 0
            and server.metric(contract.REQUESTS_IN_FLIGHT) == 0
        ):
            break
    await asyncio.sleep(0.3)  # let a batch that was already running finish
    embedded = server.metric(contract.TOKENS_TOTAL) - before
    assert embedded < full_tokens / 2, (embedded, full_tokens)
    assert server.metric(contract.QUEUE_ITEMS) == 0
    labels = {"route": contract.EMBEDDINGS_PATH, "status": "499"}
    assert server.metric(contract.REQUESTS_TOTAL, labels) == 1


async def start_process(port: int, **env_overrides: str) -> asyncio.subprocess.Process:
    env = {**os.environ, "HF_HUB_OFFLINE": "1", **env_overrides}
    env.pop(contract.ENV_MODEL, None)  # the bundled MiniLM: what `make serve` runs
    return await asyncio.create_subprocess_exec(
        *[sys.executable, "-m", "service", "--host", "127.0.0.1", "--port", str(port)],
        cwd=ROOT,
        env=env,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
    )


async def gauge(client: httpx.AsyncClient, name: str) -> float:
    text = (await client.get(contract.METRICS_PATH)).text
    line = next(x for x in text.splitlines() if x.startswith(name + " "))
    return float(line.split()[1])


async def until_gauge(
    client: httpx.AsyncClient, name: str, reached: Callable[[float], bool]
) -> None:
    for _ in range(1200):  # a bound for a stuck server (60 s), not a speed budget
        if reached(await gauge(client, name)):
            return
        await asyncio.sleep(0.05)
    raise AssertionError(f"{name} is {await gauge(client, name)}, never the value waited for")


async def test_the_drain_timeout_answers_what_is_left_503_in_the_envelope() -> None:
    """uvicorn's graceful-shutdown timeout used to cancel the handler first: a plain-text 500 and
    a CancelledError traceback."""
    port = free_port()
    base_url = f"http://127.0.0.1:{port}"
    process = await start_process(
        port,
        **{
            contract.ENV_DRAIN_DELAY_SECONDS: "0",
            contract.ENV_DRAIN_TIMEOUT_SECONDS: "1",
            # One input per forward pass: 2048 passes cannot all run within the 1 s drain.
            contract.ENV_MAX_BATCH_SIZE: "1",
        },
    )
    try:
        await asyncio.to_thread(wait_ready, base_url, 90)
        async with httpx.AsyncClient(base_url=base_url, timeout=60) as client:
            bulk = asyncio.create_task(
                client.post(
                    contract.EMBEDDINGS_PATH,
                    json={"input": [LONG_TEXT] * 2048},
                    headers={"x-request-id": "bulk-1"},
                )
            )
            while (
                await gauge(client, contract.QUEUE_ITEMS) == 0
            ):  # accepted and queued: now stop the server
                assert not bulk.done(), bulk.result().text
                await asyncio.sleep(0.05)
            process.send_signal(signal.SIGTERM)
            response = await bulk
        output = (await asyncio.wait_for(process.communicate(), 60))[0].decode()
    finally:
        if process.returncode is None:
            process.kill()
    assert response.status_code == 503, response.text
    assert response.headers["content-type"] == "application/json"
    assert response.json()["error"]["code"] == "shutting_down"
    assert response.headers["x-request-id"] == "bulk-1"
    assert process.returncode == 0, output
    assert "drain timeout" in output
    assert "Traceback" not in output, output[-3000:]
    # Lines of the shutdown itself belong to no request.
    assert not [line for line in output.splitlines() if "[bulk-1]" in line and "drain" in line]


async def test_requests_still_arriving_at_the_end_of_the_drain_get_503_in_the_envelope(
    tiny_model_dir: Path,
) -> None:
    """A slow client's body still arriving once the drain is over is answered 503 under its own
    request id, and the shutdown does not wait for it: uvicorn used to wait out its graceful
    timeout, log "ERROR ... Cancel 1 running task(s)" and cancel the handler. A head still
    arriving is answered 503 too (uvicorn closed it without a word)."""
    port = free_port()
    base_url = f"http://127.0.0.1:{port}"
    process = await start_process(
        port,
        **{
            contract.ENV_MODEL: str(tiny_model_dir),
            contract.ENV_DRAIN_DELAY_SECONDS: "0",
            contract.ENV_DRAIN_TIMEOUT_SECONDS: "0",
        },
    )
    try:
        await asyncio.to_thread(wait_ready, base_url, 90)
        headers = "Content-Length: 100\r\nX-Request-ID: slow-1\r\n"
        reader, writer = await raw_post(base_url, contract.EMBEDDINGS_PATH, headers, b'{"input"')
        host, _, port_text = base_url.removeprefix("http://").partition(":")
        head_reader, head_writer = await asyncio.open_connection(host, int(port_text))
        head_writer.write(b"GET /health HTTP/1.1\r\nHost: x\r\n")  # the rest never comes
        await head_writer.drain()
        async with httpx.AsyncClient(base_url=base_url, timeout=30) as client:
            # Wait until the server is reading the body, and holds the head.
            await until_gauge(client, contract.REQUESTS_IN_FLIGHT, lambda value: value > 0)
            assert not reader.at_eof(), "the server answered before the body was complete"
            await until_gauge(client, contract.CONNECTIONS_OPEN, lambda value: value >= 3)
        process.send_signal(signal.SIGTERM)
        answer = await asyncio.wait_for(reader.read(), 60)
        head_answer = await asyncio.wait_for(head_reader.read(), 60)
        writer.close()
        head_writer.close()
        output = (await asyncio.wait_for(process.communicate(), 60))[0].decode()
    finally:
        if process.returncode is None:
            process.kill()
    for got in (answer, head_answer):
        head, _, body = got.decode().partition("\r\n\r\n")
        assert head.startswith("HTTP/1.1 503"), got
        assert "content-type: application/json" in head.lower()
        assert json.loads(body)["error"]["code"] == "shutting_down"
    assert "x-request-id: slow-1" in answer.decode().lower()
    assert process.returncode == 0, output
    assert "Traceback" not in output, output[-3000:]
    assert not [line for line in output.splitlines() if " ERROR " in line], output[-3000:]


async def test_drain_log_lines_carry_no_request_id(caplog: pytest.LogCaptureFixture) -> None:
    """The SIGTERM handler runs inside whatever the loop thread was doing, often a request's
    handler; its lines (and the ones it schedules) used to carry that request's id."""
    runtime = Runtime(Settings(), Metrics(), frozenset())
    server = DrainingServer(uvicorn.Config(app=None), runtime, drain_delay_s=0.01)
    server._loop = asyncio.get_running_loop()
    caplog.handler.addFilter(logs.RequestIdFilter())
    with caplog.at_level(logging.INFO, logger="service"):
        token = logs.request_id.set("req-7")  # as inside a request's handler
        server.handle_exit(signal.SIGTERM, None)
        logs.request_id.reset(token)
        for _ in range(1000):  # until the drain delay (0.01 s) has run out
            if server.should_exit:
                break
            await asyncio.sleep(0.01)
    lines = [(r.getMessage(), r.request_id) for r in caplog.records if r.name.startswith("service")]
    assert any("SIGTERM" in message for message, _ in lines)
    assert any("drain delay over" in message for message, _ in lines)
    assert {rid for _, rid in lines} == {"-"}, lines
