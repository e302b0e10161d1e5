"""Closed-loop async HTTP load: `concurrency` clients, each sending its next request when the last
is answered.

A closed loop is what many concurrent clients of an embedding API look like (each waits for its
vectors before sending more), and it cannot overrun the server the way an open-loop generator can,
so throughput and latency at a given concurrency are both well defined. Request bytes are built
before the clock starts."""

from __future__ import annotations

import asyncio
import math
import time
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from types import TracebackType

from tqdm import tqdm

from bench.httpclient import Connection, HttpError, build_request

TRANSPORT_ERROR = 0
"""Status recorded for a timeout or a broken connection."""


@dataclass(frozen=True)
class Payload:
    request: bytes
    """The full HTTP request, pre-encoded."""
    inputs: int
    tokens: int


def make_payloads(
    host: str, port: int, path: str, bodies: Sequence[tuple[bytes, int, int]]
) -> list[Payload]:
    """Payloads from (JSON body, inputs, tokens) triples."""
    return [
        Payload(build_request("POST", host, port, path, body), inputs, tokens)
        for body, inputs, tokens in bodies
    ]


@dataclass
class PhaseResult:
    concurrency: int
    requests: int
    """Requests sent: the number asked, or fewer when the phase ran out of time."""
    elapsed_s: float = 0.0
    latencies_s: list[float] = field(default_factory=list)
    """Latencies of successful (2xx) requests only."""
    statuses: Counter[int] = field(default_factory=Counter)
    inputs: int = 0
    tokens: int = 0
    sample_body: bytes | None = None
    """The first successful response body, kept for a correctness check."""
    error_samples: list[str] = field(default_factory=list)


class ClosedLoop:
    """`concurrency` persistent connections to one server, reused by each phase."""

    def __init__(self, host: str, port: int, concurrency: int, timeout_s: float) -> None:
        if concurrency < 1:
            raise ValueError(f"concurrency must be >= 1, got {concurrency}")
        self.concurrency = concurrency
        self.timeout_s = timeout_s
        self._connections = [Connection(host, port) for _ in range(concurrency)]

    async def __aenter__(self) -> ClosedLoop:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def close(self) -> None:
        for connection in self._connections:
            connection.close()

    async def run(
        self,
        payloads: Sequence[Payload],
        requests: int,
        start: int = 0,
        label: str | None = None,
        budget_s: float | None = None,
    ) -> PhaseResult:
        """Send `requests` requests, cycling through `payloads` from index `start`; after `budget_s`
        seconds send no more (what was sent still completes), so a starved run stays bounded."""
        if not payloads:
            raise ValueError("no payloads to send")
        result = PhaseResult(concurrency=self.concurrency, requests=requests)
        progress = tqdm(
            total=requests, desc=label, unit="req", mininterval=0.5, disable=label is None
        )
        issued = 0
        deadline = math.inf if budget_s is None else time.perf_counter() + budget_s

        async def client(connection: Connection) -> None:
            nonlocal issued
            while issued < requests and time.perf_counter() < deadline:
                payload = payloads[(start + issued) % len(payloads)]
                issued += 1
                await self._one(connection, payload, result)
                progress.update()

        began = time.perf_counter()
        try:
            workers = min(self.concurrency, requests)
            await asyncio.gather(*(client(c) for c in self._connections[:workers]))
        finally:
            result.elapsed_s = time.perf_counter() - began
            result.requests = issued
            progress.close()
        return result

    async def _one(self, connection: Connection, payload: Payload, result: PhaseResult) -> None:
        sent = time.perf_counter()
        try:
            async with asyncio.timeout(self.timeout_s):
                response = await connection.send(payload.request)
        except (TimeoutError, OSError, HttpError) as exc:
            result.statuses[TRANSPORT_ERROR] += 1
            _keep_sample(result, f"{type(exc).__name__}: {exc}")
            return
        latency = time.perf_counter() - sent
        result.statuses[response.status] += 1
        if 200 <= response.status < 300:
            result.latencies_s.append(latency)
            result.inputs += payload.inputs
            result.tokens += payload.tokens
            if result.sample_body is None:
                result.sample_body = response.body
        elif response.status != 429:
            _keep_sample(result, f"HTTP {response.status}: {response.body[:300]!r}")


def _keep_sample(result: PhaseResult, message: str, limit: int = 5) -> None:
    if len(result.error_samples) < limit:
        result.error_samples.append(message)
