"""What the hostile scenarios share: options, a server per scenario, the server's memory from
/proc, raw connections, a small probe request, and the result every scenario returns."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import select
import socket
import statistics
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

from bench.httpclient import Connection, HttpError, build_request
from bench.procs import ServerProcess, free_port
from service import contract

HOST = "127.0.0.1"
GIVE_UP_S = 60.0
"""How long a raw client waits on a silent server before it gives up."""
ALLOCATORS = ("glibc", "jemalloc")
JEMALLOC_PATHS = (
    "/usr/local/lib/libjemalloc.so",  # the image's link (Dockerfile)
    f"/usr/lib/{os.uname().machine}-linux-gnu/libjemalloc.so.2",  # Debian's libjemalloc2
    "/usr/lib64/libjemalloc.so.2",
)


@dataclass(frozen=True)
class HostileOptions:
    model: str
    log_dir: Path
    soak_s: float = 600.0
    allocators: tuple[str, ...] = ("glibc",)
    soak_clients: int = 8
    abuse_s: float = 30.0
    """How long the slow connections are kept going before they are counted."""
    slow_connections: int = 200
    server_src: Path | None = None
    """Run `python -m service` from this source tree (an older commit's export: the "before")."""
    server_env: tuple[tuple[str, str], ...] = ()
    """EMBED_* settings for every server of the level."""


@dataclass(frozen=True)
class Figure:
    label: str
    value: str


@dataclass
class ScenarioResult:
    """One scenario's figures, rendered as a table in the report."""

    name: str
    figures: list[Figure] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    def add(self, label: str, value: object) -> None:
        self.figures.append(Figure(label, str(value)))


def jemalloc_path() -> str | None:
    return next((path for path in JEMALLOC_PATHS if Path(path).is_file()), None)


def server_env(options: HostileOptions, allocator: str = "glibc") -> dict[str, str]:
    """The environment of a scenario's server: the caller's, offline, with the level's settings
    and the allocator asked for (LD_PRELOAD of jemalloc or none)."""
    env = {k: v for k, v in os.environ.items() if k != "LD_PRELOAD"}
    env |= {"HF_HUB_OFFLINE": "1", "EMBED_LOG_LEVEL": "warning", **dict(options.server_env)}
    if allocator == "jemalloc":
        path = jemalloc_path()
        if path is None:
            raise SystemExit(f"jemalloc asked for but not found in {', '.join(JEMALLOC_PATHS)}")
        env["LD_PRELOAD"] = path
    elif allocator != "glibc":
        raise ValueError(f"unknown allocator {allocator!r}; choose from {', '.join(ALLOCATORS)}")
    return env


@contextlib.contextmanager
def running_server(
    options: HostileOptions, name: str, allocator: str = "glibc", **settings: str
) -> Iterator[ServerProcess]:
    """`python -m service` (bundled MiniLM unless --model) on a free loopback port."""
    port = free_port(HOST)
    env = server_env(options, allocator) | {f"EMBED_{k.upper()}": v for k, v in settings.items()}
    argv = [sys.executable, *contract.COMMAND[1:], "--host", HOST, "--port", str(port)]
    server = ServerProcess(
        name,
        [*argv, "--model", options.model],
        host=HOST,
        port=port,
        ready_path=contract.READY_PATH,
        log_path=options.log_dir / f"hostile-{name}.log",
        env=env,
        cwd=options.server_src,
    )
    with server:
        yield server


# --- memory -------------------------------------------------------------------------------------
def _status_kb(pid: int, field_name: str) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(field_name + ":"):
            return int(line.split()[1])
    raise KeyError(f"{field_name} not in /proc/{pid}/status")


def rss_mb(pid: int) -> float:
    return _status_kb(pid, "VmRSS") / 1024


def peak_rss_mb(pid: int) -> float:
    """The resident peak since the last reset_peak (VmHWM)."""
    return _status_kb(pid, "VmHWM") / 1024


def reset_peak(pid: int) -> None:
    """Start VmHWM over from the current RSS (proc(5), /proc/pid/clear_refs: 5)."""
    Path(f"/proc/{pid}/clear_refs").write_text("5")


# --- connections and probes --------------------------------------------------------------------
async def open_raw(port: int) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    return await asyncio.open_connection(HOST, port)


@dataclass(frozen=True)
class Exchange:
    answer: bytes
    """What the server sent, read until it closed (or the client gave up)."""
    sent: int
    """Bytes the client had written after the head when it saw the answer (or stopped)."""
    seconds: float
    closed: bool
    """Whether the server closed the connection (else the client gave up waiting)."""

    def ending(self) -> str:
        if self.closed:
            return f"closed after {self.seconds:.2f} s"
        return f"still open when the client gave up after {self.seconds:.0f} s"


def stream_until_answered(
    port: int, head: bytes, piece: bytes, limit_bytes: int, tail: bytes = b""
) -> Exchange:
    """Send `head`, then `piece` after `piece` until the server answers or closes, or else
    `limit_bytes` of them and `tail`, then read until the server closes. Blocking sockets, run in
    a thread: Linux keeps what arrived before a reset readable, where asyncio's streams drop it."""
    with socket.create_connection((HOST, port), timeout=GIVE_UP_S) as sock:
        start = time.perf_counter()
        sock.sendall(head)
        sent = 0
        while sent < limit_bytes and not select.select([sock], [], [], 0)[0]:
            try:
                sock.sendall(piece)
            except OSError:  # the server closed (or stopped reading for GIVE_UP_S)
                break
            sent += len(piece)
        else:
            if sent >= limit_bytes:
                with contextlib.suppress(OSError):
                    sock.sendall(tail)
        answer = b""
        closed = True
        try:
            while data := sock.recv(65536):
                answer += data
        except TimeoutError:
            closed = False
        except OSError:  # reset: closed
            pass
        return Exchange(answer, sent, time.perf_counter() - start, closed)


def status_of(answer: bytes) -> str:
    """The status code and error code of a raw answer ("431 headers_too_large"), or "closed"."""
    if not answer:
        return "closed, no answer"
    head, _, body = answer.partition(b"\r\n\r\n")
    status = head.split(b" ", 2)[1].decode() if b" " in head else "?"
    with contextlib.suppress(ValueError, KeyError, TypeError):
        return f"{status} {json.loads(body)['error']['code']}"
    return status


SMALL_BODY = json.dumps({"input": "a short query about the weather"}).encode()


class Probe:
    """One small embedding request at a time, from `start()` to `stop()`, each on a kept
    connection (`fresh=False`) or a new one (as the kubelet's probes come); latencies in ms."""

    def __init__(self, port: int, path: str = contract.EMBEDDINGS_PATH, fresh: bool = False):
        body = SMALL_BODY if path == contract.EMBEDDINGS_PATH else None
        self._request = build_request("POST" if body else "GET", HOST, port, path, body)
        self._port = port
        self._fresh = fresh
        self.latencies_ms: list[float] = []
        self.failures: list[str] = []
        self._answered = asyncio.Event()
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        self._task = asyncio.create_task(self._loop())

    async def stop(self) -> None:
        """Stop once at least one request has been answered (or has failed)."""
        if self._task is not None:
            await self._answered.wait()
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task

    async def _loop(self) -> None:
        connection = Connection(HOST, self._port)
        try:
            while True:
                start = time.perf_counter()
                try:
                    async with asyncio.timeout(120):
                        response = await connection.send(self._request)
                except (TimeoutError, OSError, HttpError) as exc:
                    self.failures.append(type(exc).__name__)
                    self._answered.set()
                    await asyncio.sleep(0.05)
                    continue
                finally:
                    if self._fresh:
                        connection.close()
                self._answered.set()
                if response.status == 200:
                    self.latencies_ms.append((time.perf_counter() - start) * 1000)
                else:
                    self.failures.append(str(response.status))
                await asyncio.sleep(0.05)
        finally:
            connection.close()

    def summary(self) -> str:
        if not self.latencies_ms:
            return f"no answer ({len(self.failures)} failures)"
        p50 = statistics.median(self.latencies_ms)
        worst = max(self.latencies_ms)
        failed = f", {len(self.failures)} failed" if self.failures else ""
        return f"p50 {p50:.0f} ms, max {worst:.0f} ms over {len(self.latencies_ms)}{failed}"
