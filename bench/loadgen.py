"""Closed-loop async HTTP load: `concurrency` clients, each sending its next request when the last
is answered.

A closed loop is what many concurrent clients of an embedding API look like (each waits for its
vectors before sending more), and it cannot overrun the server the way an open-loop generator can,
so throughput and latency at a given concurrency are both well defined. Request bytes are built
before the clock starts."""

from __future__ import annotations

import asyncio
import time
from collections import Counter
from collections.abc import Callable, Coroutine, Sequence
from dataclasses import dataclass, field
from types import TracebackType
from typing import Any

from bench.httpclient import Connection, HttpError, Response, build_request
from bench.segment import NO_WINDOW, Segment, SegmentPlan, Window, progress_bar
from bench.stats import RoundResult

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
    """One steady-state segment (bench/segment.py): only its measured requests are recorded."""

    concurrency: int
    requests: int
    """Measured requests sent: the number asked, or fewer when the segment ran out of time."""
    window: Window = NO_WINDOW
    latencies_s: list[float] = field(default_factory=list)
    """Latencies of successful (2xx) requests only."""
    statuses: Counter[int] = field(default_factory=Counter)
    inputs: int = 0
    tokens: int = 0
    """Inputs and tokens of the measured requests that succeeded."""
    segment_inputs: int = 0
    segment_requests: int = 0
    """Inputs and requests that succeeded over the whole segment, warm-up and closing request
    included."""
    cut_short: bool = False
    """The segment ran out of time before it sent every measured request."""
    sample_body: bytes | None = None
    """The first successful response body, kept for a correctness check."""
    error_samples: list[str] = field(default_factory=list)

    def to_round(self, cpu_s: float | None, batch_totals: tuple[float, float]) -> RoundResult:
        """The round's numbers, with the server's CPU time and batch counters over the segment."""
        ok = len(self.latencies_s)
        rejected = self.statuses.get(429, 0)
        return RoundResult(
            requests=self.requests,
            ok=ok,
            rejected=rejected,
            errors=self.requests - ok - rejected,
            window=self.window,
            latencies_s=tuple(self.latencies_s),
            cpu_s=cpu_s,
            segment_inputs=self.segment_inputs,
            batch_totals=batch_totals,
            cut_short=self.cut_short,
        )


class ClosedLoop:
    """`concurrency` persistent connections to one server, reused by each run."""

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
        plan: SegmentPlan,
        start: int = 0,
        label: str | None = None,
        clock: Callable[[], float] = time.perf_counter,
    ) -> PhaseResult:
        """One continuous loop: `plan.warmup` requests, `plan.measured` recorded ones and the
        closing request (bench/segment.py), cycling through `payloads` from index `start`.
        `clock` times everything (the segment's budgets too): tests pass one they control."""
        if not payloads:
            raise ValueError("no payloads to send")
        result = PhaseResult(concurrency=self.concurrency, requests=plan.measured)
        progress = progress_bar(plan, label)
        segment = Segment(plan, clock())

        async def client(connection: Connection) -> None:
            while (number := segment.next(clock())) is not None:
                payload = payloads[(start + number) % len(payloads)]
                await self._one(connection, payload, number, segment, result, clock)
                progress.update()

        try:
            await asyncio.gather(*(client(c) for c in self._connections))
        finally:
            result.requests = segment.measured_sent
            result.cut_short = segment.cut_short
            result.window = segment.window()
            result.segment_inputs = segment.completed_inputs
            result.segment_requests = segment.completed_requests
            progress.close()
        return result

    async def _one(
        self,
        connection: Connection,
        payload: Payload,
        number: int,
        segment: Segment,
        result: PhaseResult,
        clock: Callable[[], float],
    ) -> None:
        sent = clock()
        try:
            async with asyncio.timeout(self.timeout_s):
                response = await connection.send(payload.request)
        except (TimeoutError, OSError, HttpError) as exc:
            if segment.is_measured(number):
                result.statuses[TRANSPORT_ERROR] += 1
                _keep_sample(result, f"{type(exc).__name__}: {exc}")
            return
        done = clock()
        if 200 <= response.status < 300:
            segment.succeeded(done, inputs=payload.inputs, tokens=payload.tokens)
        if segment.is_measured(number):
            _record(result, payload, response, done - sent)


def _record(result: PhaseResult, payload: Payload, response: Response, latency_s: float) -> None:
    """A measured request's answer."""
    result.statuses[response.status] += 1
    if 200 <= response.status < 300:
        result.latencies_s.append(latency_s)
        result.inputs += payload.inputs
        result.tokens += payload.tokens
        if result.sample_body is None:
            result.sample_body = response.body
    elif response.status != 429:
        _keep_sample(result, f"HTTP {response.status}: {response.body[:300]!r}")


def _keep_sample(result: PhaseResult, message: str, limit: int = 5) -> None:
    if len(result.error_samples) < limit:
        result.error_samples.append(message)


def run_on_uvloop(coroutine: Coroutine[Any, Any, PhaseResult]) -> PhaseResult:
    """asyncio.run on uvloop when installed: a cheaper client leaves more CPU to the server."""
    try:
        import uvloop
    except ImportError:
        return asyncio.run(coroutine)
    with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
        return runner.run(coroutine)
