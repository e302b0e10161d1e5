"""The HTTP layer's limits (service.httpserver) on a live server: slow and silent connections are
closed, oversized heads get 431, connections past the limit replace idle or slow ones or are
refused, 413 and 408 close the connection, protocol errors are answered in the envelope and
counted, and the probes have a listener of their own.

Each test waits for the condition (an answer, the server closing the connection) under a generous
timeout; none measures how fast it happens."""

from __future__ import annotations

import asyncio
import json
import logging
import os
import resource
import select
import socket
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import pytest
from service_testkit import LiveServer, free_port, wait_ready

from service import contract, httpserver
from service.encoder import Encoder
from service.httpserver import RESERVED_FILES
from service.logs import RequestIdFilter

pytestmark = pytest.mark.anyio
PATIENCE_S = 60.0
"""How long a test waits for the server to act before failing (never a measured bound)."""
REJECTIONS = contract.HTTP_REJECTIONS_TOTAL


async def connect(server: LiveServer) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    host, port = server.base_url.removeprefix("http://").split(":")
    return await asyncio.open_connection(host, int(port))


async def until_closed(reader: asyncio.StreamReader) -> bytes:
    """Everything the server sends until it closes the connection."""
    return await asyncio.wait_for(reader.read(), PATIENCE_S)


def stream_until_answered(server: LiveServer, head: bytes, piece: bytes) -> tuple[bytes, int]:
    """Send `head`, then `piece` after `piece` (up to 100 MB) until the server answers; return
    the answer (read to the server's close) and the bytes sent after the head. Blocking sockets:
    Linux keeps what arrived before a reset readable, where asyncio's streams drop it."""
    host, port = server.base_url.removeprefix("http://").split(":")
    with socket.create_connection((host, int(port)), timeout=PATIENCE_S) as sock:
        sock.sendall(head)
        sent = 0
        while sent < 100_000_000 and not select.select([sock], [], [], 0)[0]:
            try:
                sock.sendall(piece)
            except OSError:  # closed by the server: its answer is waiting
                break
            sent += len(piece)
        answer = b""
        while True:
            try:
                data = sock.recv(65536)
            except ConnectionResetError:
                break
            if not data:
                break
            answer += data
    return answer, sent


def parse(answer: bytes) -> tuple[int, dict[str, str], bytes]:
    head, _, body = answer.partition(b"\r\n\r\n")
    status_line, *lines = head.decode("latin-1").split("\r\n")
    headers = {}
    for line in lines:
        name, _, value = line.partition(":")
        headers[name.strip().lower()] = value.strip()
    return int(status_line.split()[1]), headers, body


def assert_envelope(answer: bytes, status: int, code: str) -> dict[str, str]:
    got, headers, body = parse(answer)
    assert got == status, answer[:500]
    assert headers["content-type"] == "application/json"
    assert headers["connection"] == "close"
    assert headers["x-request-id"]
    assert json.loads(body)["error"]["code"] == code, body
    return headers


async def request(method: str, url: str, **kwargs: Any) -> httpx.Response:
    async with httpx.AsyncClient(timeout=PATIENCE_S) as client:
        return await client.request(method, url, **kwargs)


async def wait_for_metric(server: LiveServer, name: str, labels: dict[str, str], value: float):
    for _ in range(int(PATIENCE_S / 0.02)):
        if server.metric(name, labels) == value:
            return
        await asyncio.sleep(0.02)
    raise AssertionError(f"{name}{labels} is {server.metric(name, labels)}, never {value}")


@pytest.fixture
def limited(start_server: Callable[..., LiveServer], tiny_encoder: Encoder) -> LiveServer:
    return start_server(
        tiny_encoder,
        header_timeout_seconds=0.5,
        body_timeout_seconds=0.5,
        max_header_bytes=8192,
        max_headers=20,
        max_request_bytes=4096,
    )


# --- slow and silent connections -----------------------------------------------------------------
async def test_a_silent_connection_is_closed_without_an_answer(limited: LiveServer) -> None:
    reader, writer = await connect(limited)
    assert await until_closed(reader) == b""
    writer.close()
    assert limited.metric(REJECTIONS, {"reason": "header_timeout"}) == 1


async def test_a_slowloris_head_is_answered_408_and_closed(limited: LiveServer) -> None:
    """One header byte at a time, each well within any per-read timeout: the head as a whole is
    late. uvicorn alone kept such a connection open for as long as the bytes kept coming."""
    reader, writer = await connect(limited)
    writer.write(b"POST /v1/embeddings HTTP/1.1\r\nHost: x\r\n")
    assert_envelope(await trickle_until_answered(reader, writer, b"X"), 408, "request_timeout")
    writer.close()
    assert limited.metric(REJECTIONS, {"reason": "header_timeout"}) == 1


async def trickle_until_answered(
    reader: asyncio.StreamReader, writer: asyncio.StreamWriter, piece: bytes
) -> bytes:
    """Send `piece` every 50 ms, each well within any per-read timeout, until the server answers
    and closes (or PATIENCE_S runs out: until_closed's bound); the answer."""
    answer = asyncio.create_task(until_closed(reader))
    while not answer.done():
        try:
            writer.write(piece)
            await writer.drain()
        except ConnectionError:
            break
        await asyncio.sleep(0.05)
    return await answer


async def header_timeout_passed(server: LiveServer) -> None:
    """Returns once a header timeout has run out since the call: a connection opened now, silent,
    is closed by it (so every head timer armed before the call has fired too)."""
    reader, writer = await connect(server)
    assert await until_closed(reader) == b""
    writer.close()


async def test_a_keep_alive_connection_then_gets_a_fresh_header_timeout(
    limited: LiveServer,
) -> None:
    """The head deadline of a later request starts at its first byte, not at the connection's
    start: a client that keeps a connection for longer than the header timeout is served."""
    async with httpx.AsyncClient(base_url=limited.base_url) as client:
        assert (await client.get(contract.HEALTH_PATH)).status_code == 200
        await header_timeout_passed(limited)  # shorter than the keep-alive
        assert (await client.get(contract.HEALTH_PATH)).status_code == 200
    # The one silent connection of header_timeout_passed, nothing else.
    assert limited.metric(REJECTIONS, {"reason": "header_timeout"}) == 1


async def test_empty_lines_after_a_request_do_not_keep_the_connection_open(
    limited: LiveServer,
) -> None:
    """A CRLF every so often after a first request never starts a request for the parser (RFC
    9112 2.2 lets a server skip empty lines before a request line), and each byte cancelled
    uvicorn's keep-alive timer: the connection stayed open for as long as the CRLFs came. Any
    byte now starts a head, timed like any other."""
    reader, writer = await connect(limited)
    writer.write(b"GET /health HTTP/1.1\r\nHost: x\r\n\r\n")
    status, _, _ = await read_one(reader)
    assert status == 200
    assert_envelope(await trickle_until_answered(reader, writer, b"\r\n"), 408, "request_timeout")
    writer.close()
    assert limited.metric(REJECTIONS, {"reason": "header_timeout"}) == 1


async def test_a_late_body_is_answered_408_and_counted_on_its_route(limited: LiveServer) -> None:
    reader, writer = await connect(limited)
    writer.write(
        b"POST /v1/embeddings HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
        b'Content-Length: 100\r\nX-Request-ID: late-1\r\n\r\n{"input"'
    )
    headers = assert_envelope(await until_closed(reader), 408, "request_timeout")
    writer.close()
    assert headers["x-request-id"] == "late-1"
    labels = {"route": contract.EMBEDDINGS_PATH, "status": "408"}
    assert limited.metric(contract.REQUESTS_TOTAL, labels) == 1
    assert limited.metric(REJECTIONS, {"reason": "body_timeout"}) == 1
    assert limited.metric(contract.REQUESTS_IN_FLIGHT) == 0


async def read_one(reader: asyncio.StreamReader) -> tuple[int, dict[str, str], bytes]:
    """One response of a kept-alive connection."""
    head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), PATIENCE_S)
    status, headers, _ = parse(head)
    body = await reader.readexactly(int(headers["content-length"]))
    return status, headers, body


async def test_a_body_sent_after_an_early_answer_is_not_timed_out(
    start_server: Callable[..., LiveServer], tiny_encoder: Encoder
) -> None:
    """A route may answer before the body has arrived (401 here): the body's timer must not then
    close the connection the client keeps using."""
    server = start_server(tiny_encoder, api_keys="sk-1", body_timeout_seconds=0.3)
    reader, writer = await connect(server)
    writer.write(b"POST /v1/embeddings HTTP/1.1\r\nHost: x\r\nContent-Length: 20\r\n\r\n{")
    status, _, _ = await read_one(reader)
    assert status == 401
    writer.write(b'"input": "hello"}  ')  # the rest of the 20 bytes
    # A body timer armed later than this one's (same timeout) fires after it: once a late body
    # on another connection has been answered 408, a timer left running here would have fired.
    late_reader, late_writer = await connect(server)
    late_writer.write(
        b"POST /v1/embeddings HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer sk-1\r\n"
        b"Content-Length: 20\r\n\r\n{"
    )
    assert parse(await until_closed(late_reader))[0] == 408
    late_writer.close()
    writer.write(b"GET /health HTTP/1.1\r\nHost: x\r\n\r\n")
    status, _, _ = await read_one(reader)
    writer.close()
    assert status == 200
    assert server.metric(REJECTIONS, {"reason": "body_timeout"}) == 1  # the other one's


async def test_an_idle_keep_alive_connection_is_closed(
    start_server: Callable[..., LiveServer], tiny_encoder: Encoder
) -> None:
    server = start_server(tiny_encoder, keep_alive_timeout_seconds=1)
    reader, writer = await connect(server)
    writer.write(b"GET /health HTTP/1.1\r\nHost: x\r\n\r\n")
    status, headers, _ = parse(await until_closed(reader))
    writer.close()
    assert status == 200
    assert headers.get("connection") != "close"  # kept alive, then closed for idling


# --- heads ------------------------------------------------------------------------------------
async def test_a_header_over_the_size_limit_gets_431(limited: LiveServer) -> None:
    big = {"X-Big": "v" * 100_000}
    response = await request("GET", limited.base_url + contract.HEALTH_PATH, headers=big)
    assert response.status_code == 431
    assert response.json()["error"]["code"] == "headers_too_large"
    assert response.headers["connection"] == "close"
    assert limited.metric(REJECTIONS, {"reason": "headers_too_large"}) == 1


async def test_a_head_streamed_past_the_limit_is_cut_off_before_it_ends(
    limited: LiveServer,
) -> None:
    """Unfinished headers are not buffered without bound: the answer comes while the client is
    still sending its header (uvicorn alone read a 10 MB value into memory and answered 200)."""
    head = b"GET /health HTTP/1.1\r\nHost: x\r\nX-Big: "
    answer, sent = await asyncio.to_thread(stream_until_answered, limited, head, b"v" * 4096)
    assert_envelope(answer, 431, "headers_too_large")
    assert sent < 100_000_000


async def test_too_many_header_fields_get_431(limited: LiveServer) -> None:
    headers = {f"X-H{i}": "1" for i in range(50)}
    response = await request("GET", limited.base_url + contract.HEALTH_PATH, headers=headers)
    assert response.status_code == 431
    assert "header fields" in response.json()["error"]["message"]
    assert limited.metric(REJECTIONS, {"reason": "too_many_headers"}) == 1


async def test_requests_within_the_limits_are_served_as_before(limited: LiveServer) -> None:
    headers = {f"X-H{i}": "v" * 500 for i in range(10)}  # with httpx's 7: 17 fields, 5.5 KB
    async with httpx.AsyncClient(base_url=limited.base_url, headers=headers) as client:
        for _ in range(20):
            response = await client.post(contract.EMBEDDINGS_PATH, json={"input": "hello world"})
            assert response.status_code == 200, response.text
    for reason in ("headers_too_large", "too_many_headers", "header_timeout", "body_timeout"):
        assert limited.metric(REJECTIONS, {"reason": reason}) == 0


# --- protocol errors ----------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("request_bytes", "reason"),
    [
        (b"GARBAGE\r\n\r\n", "Invalid method"),
        (
            b"GET /health HTTP/1.1\r\nHost: x\r\nContent-Length: 3\r\nContent-Length: 4\r\n\r\n",
            "Duplicate Content-Length",
        ),
    ],
)
async def test_a_protocol_error_is_answered_in_the_envelope_and_counted(
    limited: LiveServer, request_bytes: bytes, reason: str
) -> None:
    reader, writer = await connect(limited)
    writer.write(request_bytes)
    answer = await until_closed(reader)
    writer.close()
    assert_envelope(answer, 400, "malformed_request")
    assert reason in json.loads(parse(answer)[2])["error"]["message"]
    assert limited.metric(REJECTIONS, {"reason": "malformed"}) == 1


async def test_a_protocol_error_in_a_body_is_that_requests_answer_counted_once(
    start_server: Callable[..., LiveServer],
    tiny_encoder: Encoder,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """A bad chunk size arrives while the route reads the body: the request is answered 400
    `malformed_request` under its own X-Request-ID, counted once on its route and logged once.
    Before, the HTTP layer answered under a new id and the route counted and logged a 499 too."""
    server = start_server(tiny_encoder, access_log=True)
    caplog.handler.addFilter(RequestIdFilter())
    with caplog.at_level(logging.INFO, logger="service.access"):
        reader, writer = await connect(server)
        writer.write(
            b"POST /v1/embeddings HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n"
            b'X-Request-ID: bad-chunk-1\r\n\r\n5\r\n{"inp\r\n'
        )
        await writer.drain()
        await wait_for_metric(server, contract.REQUESTS_IN_FLIGHT, {}, 1)  # reading the body
        writer.write(b"ZZ\r\n")  # not a chunk size
        headers = assert_envelope(await until_closed(reader), 400, "malformed_request")
        writer.close()
        route = {"route": contract.EMBEDDINGS_PATH}
        await wait_for_metric(server, contract.REQUESTS_TOTAL, {**route, "status": "400"}, 1)
    assert headers["x-request-id"] == "bad-chunk-1"
    assert server.metric(contract.REQUESTS_TOTAL, {**route, "status": "499"}) == 0
    assert server.metric(REJECTIONS, {"reason": "malformed"}) == 1
    lines = [(r.request_id, r.getMessage()) for r in caplog.records if r.name == "service.access"]
    assert len(lines) == 1, lines
    assert lines[0][0] == "bad-chunk-1"
    assert lines[0][1].startswith(f"POST {contract.EMBEDDINGS_PATH} 400 ")


async def test_a_refused_head_echoes_the_clients_request_id(limited: LiveServer) -> None:
    headers = {"X-Request-ID": "many-1", **{f"X-H{i}": "1" for i in range(50)}}
    response = await request("GET", limited.base_url + contract.HEALTH_PATH, headers=headers)
    assert response.status_code == 431
    assert response.headers["x-request-id"] == "many-1"


# --- 413 --------------------------------------------------------------------------------------
@pytest.mark.parametrize("chunked", [False, True])
async def test_413_closes_the_connection_instead_of_reading_the_rest(
    limited: LiveServer, chunked: bool
) -> None:
    """uvicorn read and discarded the rest of a body answered 413 (100 MB of it): now the answer
    says Connection: close and the server closes while the client is still sending."""
    framing = b"Transfer-Encoding: chunked" if chunked else b"Content-Length: 100000000"
    head = b"POST /v1/embeddings HTTP/1.1\r\nHost: x\r\n" + framing + b"\r\n\r\n"
    piece = b"1000\r\n" + b"x" * 4096 + b"\r\n" if chunked else b"x" * 4096
    answer, sent = await asyncio.to_thread(stream_until_answered, limited, head, piece)
    assert_envelope(answer, 413, "request_too_large")
    assert sent < 100_000_000


async def test_413_by_content_length_closes_the_connection(limited: LiveServer) -> None:
    url = limited.base_url + contract.EMBEDDINGS_PATH
    response = await request("POST", url, content=b"x" * 10_000)
    assert response.status_code == 413
    assert response.headers["connection"] == "close"


# --- connections ----------------------------------------------------------------------------
async def test_past_the_connection_limit_a_slow_head_makes_room(
    start_server: Callable[..., LiveServer], tiny_encoder: Encoder, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A flood of connections that send nothing (or too slowly) cannot lock clients out: once a
    head has taken longer than any client's (SLOW_HEAD_SECONDS, 0 here so that every waiting
    head has), each new connection closes the one that has waited longest."""
    monkeypatch.setattr(httpserver, "SLOW_HEAD_SECONDS", 0.0)
    server = start_server(tiny_encoder, max_connections=4, header_timeout_seconds=600)
    silent = [await connect(server) for _ in range(4)]
    await wait_for_metric(server, contract.CONNECTIONS_OPEN, {}, 4)
    response = await request("GET", server.base_url + contract.HEALTH_PATH)
    assert response.status_code == 200
    assert await until_closed(silent[0][0]) == b""  # the oldest made room
    assert server.metric(REJECTIONS, {"reason": "evicted"}) == 1
    for _, writer in silent:
        writer.close()
    await wait_for_metric(server, contract.CONNECTIONS_OPEN, {}, 0)


async def test_past_the_connection_limit_an_idle_connection_makes_room(
    start_server: Callable[..., LiveServer], tiny_encoder: Encoder, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A keep-alive connection between requests is closed for a newcomer, however recent."""
    monkeypatch.setattr(httpserver, "SLOW_HEAD_SECONDS", 600.0)
    server = start_server(tiny_encoder, max_connections=2, header_timeout_seconds=600)
    idle = []
    for _ in range(2):
        reader, writer = await connect(server)
        writer.write(b"GET /health HTTP/1.1\r\nHost: x\r\n\r\n")
        assert (await read_one(reader))[0] == 200
        idle.append((reader, writer))
    response = await request("GET", server.base_url + contract.HEALTH_PATH)
    assert response.status_code == 200
    assert await until_closed(idle[0][0]) == b""  # the one idle longest made room
    assert server.metric(REJECTIONS, {"reason": "evicted"}) == 1
    for _, writer in idle:
        writer.close()


async def test_past_the_connection_limit_heads_still_arriving_are_not_evicted(
    start_server: Callable[..., LiveServer], tiny_encoder: Encoder, monkeypatch: pytest.MonkeyPatch
) -> None:
    """In a burst every connection is a client's head still on its way: closing one for the
    newcomer traded one client for another (the oldest was evicted however young). The
    newcomer is refused at once instead, with Retry-After, and the others are served."""
    monkeypatch.setattr(httpserver, "SLOW_HEAD_SECONDS", 600.0)
    server = start_server(tiny_encoder, max_connections=3, header_timeout_seconds=600)
    arriving = []
    for _ in range(3):
        reader, writer = await connect(server)
        writer.write(b"GET /health HTTP/1.1\r\n")  # the rest of the head is on its way
        arriving.append((reader, writer))
    await wait_for_metric(server, contract.CONNECTIONS_OPEN, {}, 3)
    reader, writer = await connect(server)
    headers = assert_envelope(await until_closed(reader), 503, "too_many_connections")
    assert headers["retry-after"] == "1"
    writer.close()
    for reader, writer in arriving:  # every head that was arriving is served
        writer.write(b"Host: x\r\n\r\n")
        assert (await read_one(reader))[0] == 200
        writer.close()
    assert server.metric(REJECTIONS, {"reason": "evicted"}) == 0
    assert server.metric(REJECTIONS, {"reason": "connection_limit"}) == 1


async def busy_connections(server: LiveServer, count: int) -> list[Any]:
    """`count` connections each busy with a request whose body is still on its way."""
    busy = []
    for _ in range(count):
        reader, writer = await connect(server)
        writer.write(b"POST /v1/embeddings HTTP/1.1\r\nHost: x\r\nContent-Length: 100\r\n\r\n{")
        busy.append((reader, writer))
    await wait_for_metric(server, contract.REQUESTS_IN_FLIGHT, {}, count)
    return busy


async def test_past_the_connection_limit_with_every_connection_busy_refuses_at_once(
    start_server: Callable[..., LiveServer], tiny_encoder: Encoder
) -> None:
    server = start_server(
        tiny_encoder, max_connections=3, header_timeout_seconds=600, body_timeout_seconds=600
    )
    busy = await busy_connections(server, 3)
    reader, writer = await connect(server)
    headers = assert_envelope(await until_closed(reader), 503, "too_many_connections")
    assert headers["retry-after"] == "1"
    writer.close()
    assert server.metric(REJECTIONS, {"reason": "connection_limit"}) == 1
    for _, busy_writer in busy:
        busy_writer.close()
    await wait_for_metric(server, contract.REQUESTS_IN_FLIGHT, {}, 0)
    assert (await request("GET", server.base_url + contract.HEALTH_PATH)).status_code == 200


async def test_the_probes_answer_on_the_metrics_port_while_every_api_connection_is_busy(
    start_server: Callable[..., LiveServer], tiny_encoder: Encoder
) -> None:
    """Slow bodies (or legitimate queued requests) on every API connection got the kubelet's
    probes 503 too_many_connections on the API port, and its liveness probe would restart a
    working pod. The metrics listener serves the probes (the Deployment's probes point there,
    tests/infra/test_inference.py) on connections of its own."""
    metrics_port = free_port()
    server = start_server(
        tiny_encoder,
        max_connections=2,
        header_timeout_seconds=600,
        body_timeout_seconds=600,
        metrics_port=metrics_port,
    )
    busy = await busy_connections(server, 2)
    refused = await request("GET", server.base_url + contract.HEALTH_PATH)
    assert refused.json()["error"]["code"] == "too_many_connections"
    side = f"http://127.0.0.1:{metrics_port}"
    health = await request("GET", side + contract.HEALTH_PATH)
    assert (health.status_code, health.json()) == (200, {"status": "ok"})
    ready = await request("GET", side + contract.READY_PATH)
    assert (ready.status_code, ready.json()) == (200, {"status": "ready"})
    scrape = await request("GET", side + contract.METRICS_PATH)
    assert f"{contract.MAX_CONNECTIONS} 2.0" in scrape.text
    assert (await request("GET", side + contract.EMBEDDINGS_PATH)).status_code == 404
    info = (await request("GET", side + contract.INFO_PATH)).status_code
    assert info == 404  # only the probes and /metrics there
    server.app.state.runtime.start_draining()  # SIGTERM: readiness fails there too
    assert (await request("GET", side + contract.READY_PATH)).status_code == 503
    for _, writer in busy:
        writer.close()


# --- file descriptors -------------------------------------------------------------------------
ROOT = Path(__file__).resolve().parents[2]


def test_the_connection_limit_fits_the_open_file_limit(tiny_model_dir: Path) -> None:
    """A process started with a soft limit of 256 files and a hard one of 1024 (a container's
    usual start is 1024 and far more) raises its soft limit to the hard one, and serves as many
    connections as that leaves, saying so (/info, the gauge, a warning)."""
    port = free_port()
    base_url = f"http://127.0.0.1:{port}"
    env = {
        **os.environ,
        "HF_HUB_OFFLINE": "1",
        contract.ENV_MODEL: str(tiny_model_dir),
        "EMBED_MAX_CONNECTIONS": "4096",
    }

    def low_file_limit() -> None:
        resource.setrlimit(resource.RLIMIT_NOFILE, (256, 1024))

    process = subprocess.Popen(
        [sys.executable, "-m", "service", "--host", "127.0.0.1", "--port", str(port)],
        cwd=ROOT,
        env=env,
        preexec_fn=low_file_limit,  # no threads in between: the child's own limit
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
    )
    try:
        wait_ready(base_url, 90)
        http = httpx.get(base_url + contract.INFO_PATH, timeout=30).json()["http"]
        scrape = httpx.get(base_url + contract.METRICS_PATH, timeout=30).text
        limits = Path(f"/proc/{process.pid}/limits").read_text()
    finally:
        process.terminate()
        output = process.communicate(timeout=60)[0].decode()
    soft = int(next(line for line in limits.splitlines() if "open files" in line).split()[3])
    assert soft == 1024
    assert http["max_connections"] == 1024 - RESERVED_FILES
    assert http["max_connections_configured"] == 4096
    assert f"{contract.MAX_CONNECTIONS} {1024 - RESERVED_FILES}.0" in scrape
    assert f"max_connections 4096 lowered to {1024 - RESERVED_FILES}" in output


def test_a_sufficient_open_file_limit_is_left_as_it_is() -> None:
    before = resource.getrlimit(resource.RLIMIT_NOFILE)
    wanted = max(1, before[0] - RESERVED_FILES)
    assert httpserver.usable_connections(wanted) == wanted
    assert resource.getrlimit(resource.RLIMIT_NOFILE) == before
