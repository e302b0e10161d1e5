"""The overload scenario: goodput at 32x overload, against the capacity measured in the same run.

An embedding service is overloaded exactly while its autoscaler is still adding capacity; what
matters then is how much work it still answers in time. One run, on loopback only:

1. **Capacity**: `capacity_clients` closed-loop clients (each request `inputs` short sentences)
   for `capacity_s` seconds after a short warm-up, then twice as many: the better of the two is
   the capacity, in inputs answered per second (with 16 clients of 8 inputs the server's batches
   are not always full; with 32 they are).
2. **Overload**: `overload_factor` x as many clients for `overload_s` seconds. Each sends its
   request, waits as told on a 429 (`retry-after-ms`, else `Retry-After`: what the openai SDK
   reads) and sends it again, and sends
   the next request once answered; a request unanswered after `client_timeout_s` is a client
   timeout. A probe reads `/ready` every 100 ms meanwhile.

Goodput is the inputs answered 200 within `deadline_s` of the attempt that was admitted, per
second of the overload window; the figure is goodput / capacity (the target: >= 0.8, and no
client timeout). It measures what load shedding promises: the work the server accepts is answered
in time. Only answers received inside a window count, in both phases (an answer after it is
listed apart): work done after the window, divided by the window's length, read as more than
capacity. Requests sent in the window may finish after it, within their timeout; nothing is sent
after it. What a user sees is reported beside it: the latency from a request's first send
(Retry-After waits included) and how many requests were answered within `deadline_s` of it; at
32x overload most requests must wait out a refusal, so that figure is far lower by design.

    python -m bench.overload                      # starts `python -m service` (bundled MiniLM)
    python -m bench.overload --source-dir DIR     # the server of another checkout (the "before")
    python -m bench.overload --url http://127.0.0.1:8000

In code: `run(url=None, *, scenario=Scenario(...), source_dir=None, model=None, server_env=None)`
returns an OverloadResult (`lines()`: the report; `to_json()`: the figures; `goodput_ratio`).
Bounded: about `warmup_s + capacity_s + overload_s` seconds plus the server's start, and at most
`client_timeout_s` more for requests still open.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from statistics import quantiles

from bench.corpus import make_texts
from bench.hostile.common import HostileOptions, ScenarioResult
from bench.httpclient import Connection, HttpError, build_request
from bench.procs import ServerProcess, free_port, install_signal_handlers
from bench.scrape import gauge_value, histogram_totals, mean_between
from service import contract

HOST = "127.0.0.1"
READY_EVERY_S = 0.1
LOG_DIR = Path("build") / "bench" / "overload"


@dataclass
class _Tally:
    """What the clients saw during one phase."""

    answered: int = 0
    answered_inputs: int = 0
    in_time_inputs: int = 0
    late: int = 0
    rejected: int = 0
    shed: int = 0
    """Of the rejected, those shed after admission (code queue_timeout)."""
    timeouts: int = 0
    errors: int = 0
    latencies_s: list[float] = field(default_factory=list)
    """Send (of the admitted attempt) to answer of each 200 inside the window."""
    first_send_s: list[float] = field(default_factory=list)
    """First send (before any Retry-After wait) to answer of each 200 inside the window."""
    after_window: int = 0
    """200s received after the window ended: not counted."""
    retry_after_s: list[float] = field(default_factory=list)
    error_samples: list[str] = field(default_factory=list)


@dataclass(frozen=True)
class OverloadResult:
    server: str
    inputs_per_request: int
    deadline_s: float
    capacity_clients: int
    capacity_inputs_per_s: float
    overload_clients: int
    overload_s: float
    goodput_inputs_per_s: float
    answered: int
    answered_late: int
    rejected: int
    shed: int
    client_timeouts: int
    errors: int
    latency_p50_s: float | None
    latency_p99_s: float | None
    first_send_p50_s: float | None
    first_send_p99_s: float | None
    answered_in_time_from_first_send: int
    answered_after_window: int
    retry_after_p50_s: float | None
    ready_idle_p50_ms: float | None
    ready_p50_ms: float | None
    ready_p99_ms: float | None
    ready_max_ms: float | None
    capacity_rejected: int
    capacity_batch_mean: float | None
    overload_batch_mean: float | None
    """Inputs per forward pass in each phase (the server's histogram)."""
    queue_seconds_p50: float | None
    queue_seconds_max: float | None
    """The server's own estimate of its queued work during the overload (None before it had one)."""
    error_samples: tuple[str, ...] = ()

    @property
    def goodput_ratio(self) -> float:
        return (
            self.goodput_inputs_per_s / self.capacity_inputs_per_s
            if self.capacity_inputs_per_s
            else 0.0
        )

    def lines(self) -> list[str]:
        def ms(value: float | None) -> str:
            return "n/a" if value is None else f"{value:.0f} ms"

        def s(value: float | None) -> str:
            return "n/a" if value is None else f"{value:.2f} s"

        def num(value: float | None) -> str:
            return "n/a" if value is None else f"{value:.0f}"

        capacity = f"{self.capacity_inputs_per_s:.0f} inputs/s"
        if self.capacity_rejected:
            capacity += f" ({self.capacity_rejected} rejected)"
        lines = [
            f"overload scenario: {self.server}, {self.inputs_per_request} inputs a request",
            f"  capacity ({self.capacity_clients} clients): {capacity}",
            f"  overload ({self.overload_clients} clients honouring Retry-After, "
            f"{self.overload_s:.0f} s): {self.goodput_inputs_per_s:.0f} inputs/s answered within "
            f"{self.deadline_s:g} s = {self.goodput_ratio:.2f}x capacity",
            f"  requests: {self.answered} answered in the window ({self.answered_late} after "
            f"{self.deadline_s:g} s; {self.answered_after_window} more after the window, not "
            f"counted), {self.rejected} rejected 429 ({self.shed} of them shed after "
            f"admission), {self.client_timeouts} client "
            f"timeouts, {self.errors} other errors",
            f"  answered requests: latency of the admitted attempt p50 {s(self.latency_p50_s)}, "
            f"p99 {s(self.latency_p99_s)}; Retry-After p50 {s(self.retry_after_p50_s)}",
            f"  as users see it: from the first send p50 {s(self.first_send_p50_s)}, p99 "
            f"{s(self.first_send_p99_s)}; {self.answered_in_time_from_first_send} requests "
            f"answered within {self.deadline_s:g} s of their first send",
            f"  /ready while shedding: p50 {ms(self.ready_p50_ms)}, p99 {ms(self.ready_p99_ms)}, "
            f"max {ms(self.ready_max_ms)} (idle p50 {ms(self.ready_idle_p50_ms)})",
            f"  server: inputs per pass {num(self.capacity_batch_mean)} at capacity, "
            f"{num(self.overload_batch_mean)} overloaded; queued work it estimated: p50 "
            f"{s(self.queue_seconds_p50)}, max {s(self.queue_seconds_max)}",
        ]
        lines += [f"  error: {sample}" for sample in self.error_samples]
        return lines

    def to_json(self) -> dict[str, object]:
        return asdict(self) | {"goodput_ratio": self.goodput_ratio}


@dataclass(frozen=True)
class Scenario:
    """The scenario's shape (the module doc says what each does)."""

    capacity_clients: int = 16
    overload_factor: int = 32
    inputs: int = 8
    capacity_s: float = 15.0
    overload_s: float = 40.0
    warmup_s: float = 3.0
    deadline_s: float = 5.0
    client_timeout_s: float = 30.0


def run(
    url: str | None = None,
    *,
    scenario: Scenario = Scenario(),
    source_dir: Path | None = None,
    model: str | None = None,
    server_env: dict[str, str] | None = None,
) -> OverloadResult:
    """The scenario against `url`, or against `python -m service` started here (from
    `source_dir`, default this checkout; `model`: a model folder, default the bundled MiniLM;
    `server_env`: extra environment, e.g. EMBED_* settings)."""
    if url is not None:
        return asyncio.run(_scenario(url, url, scenario))
    source = (source_dir or Path(__file__).resolve().parent.parent).resolve()
    port = free_port(HOST)
    argv = [sys.executable, "-m", "service", "--host", HOST, "--port", str(port)]
    if model is not None:
        argv += ["--model", model]
    # PYTHONPATH first: `service` is imported from `source`, not from this checkout's install.
    env = {
        **os.environ,
        "HF_HUB_OFFLINE": "1",
        "PYTHONPATH": str(source),
        # Stopped at the end: nothing routes to it, so no drain delay.
        contract.ENV_DRAIN_DELAY_SECONDS: "0",
        **(server_env or {}),
    }
    server = ServerProcess(
        "server under overload",
        argv,
        host=HOST,
        port=port,
        ready_path=contract.READY_PATH,
        log_path=LOG_DIR / f"server-{port}.log",
        env=env,
        cwd=source,
    )
    with server:
        return asyncio.run(_scenario(server.base_url, f"python -m service in {source}", scenario))


def hostile(options: HostileOptions) -> ScenarioResult:
    """The scenario as part of the hostile level (bench/hostile/level.py): the level's model,
    source tree and server settings; the goodput ratio and client timeouts as its figures."""
    found = run(
        model=options.model,
        source_dir=options.server_src,
        server_env=dict(options.server_env),
    )
    result = ScenarioResult("overload")
    result.add(
        f"inputs answered within {found.deadline_s:g} s at {found.overload_clients} clients "
        "/ capacity",
        f"{found.goodput_ratio:.2f}x (target >= 0.8)",
    )
    result.add("client timeouts", f"{found.client_timeouts} (target none)")
    result.notes += [line.strip() for line in found.lines()[1:]]
    return result


async def _scenario(base_url: str, name: str, scenario: Scenario) -> OverloadResult:
    host, port_text = base_url.removeprefix("http://").rsplit(":", 1)
    port = int(port_text)
    inputs = scenario.inputs
    texts = make_texts("short", 4096, seed=11)
    bodies = [
        build_request(
            "POST",
            host,
            port,
            contract.EMBEDDINGS_PATH,
            json.dumps({"input": texts[i : i + inputs]}).encode(),
        )
        for i in range(0, len(texts) - inputs, inputs)
    ]
    phase = _Phase(host, port, bodies, scenario)
    clients = scenario.capacity_clients
    await phase.clients(clients, scenario.warmup_s, _Tally())  # warm-up: not recorded
    capacities = []
    for count in (clients, 2 * clients):
        tally = _Tally()
        totals = [await _batch_totals(host, port)]
        await phase.clients(count, scenario.capacity_s, tally)
        totals.append(await _batch_totals(host, port))
        capacities.append((tally.answered_inputs, count, tally, totals))
    _, best_clients, capacity, batches = max(capacities, key=lambda c: c[0])
    idle = await _probe(host, port, until=time.perf_counter() + 1.0)
    overload = _Tally()
    many = clients * scenario.overload_factor
    probing = asyncio.create_task(_probe(host, port, time.perf_counter() + scenario.overload_s))
    batches.append(await _batch_totals(host, port))
    await phase.clients(many, scenario.overload_s, overload)
    batches.append(await _batch_totals(host, port))
    probe = await probing
    ready = probe.ready_s
    return OverloadResult(
        server=name,
        inputs_per_request=inputs,
        deadline_s=scenario.deadline_s,
        capacity_clients=best_clients,
        capacity_inputs_per_s=capacity.answered_inputs / scenario.capacity_s,
        overload_clients=many,
        overload_s=scenario.overload_s,
        goodput_inputs_per_s=overload.in_time_inputs / scenario.overload_s,
        answered=overload.answered,
        answered_late=overload.late,
        rejected=overload.rejected,
        shed=overload.shed,
        client_timeouts=overload.timeouts,
        errors=overload.errors,
        latency_p50_s=_quantile(overload.latencies_s, 50),
        latency_p99_s=_quantile(overload.latencies_s, 99),
        first_send_p50_s=_quantile(overload.first_send_s, 50),
        first_send_p99_s=_quantile(overload.first_send_s, 99),
        answered_in_time_from_first_send=sum(
            latency <= scenario.deadline_s for latency in overload.first_send_s
        ),
        answered_after_window=overload.after_window,
        retry_after_p50_s=_quantile(overload.retry_after_s, 50),
        ready_idle_p50_ms=_ms(_quantile(idle.ready_s, 50)),
        ready_p50_ms=_ms(_quantile(ready, 50)),
        ready_p99_ms=_ms(_quantile(ready, 99)),
        ready_max_ms=_ms(max(ready) if ready else None),
        capacity_rejected=capacity.rejected,
        capacity_batch_mean=mean_between(batches[0], batches[1]),
        overload_batch_mean=mean_between(batches[2], batches[3]),
        queue_seconds_p50=_quantile(probe.queue_s, 50),
        queue_seconds_max=max(probe.queue_s) if probe.queue_s else None,
        error_samples=tuple(overload.error_samples + capacity.error_samples)[:5],
    )


class _Phase:
    """Closed-loop clients over persistent connections, each honouring Retry-After."""

    def __init__(self, host: str, port: int, bodies: list[bytes], scenario: Scenario) -> None:
        self.host, self.port = host, port
        self.bodies = bodies
        self.inputs = scenario.inputs
        self.deadline_s = scenario.deadline_s
        self.client_timeout_s = scenario.client_timeout_s
        self.sent = 0

    async def clients(self, count: int, seconds: float, tally: _Tally) -> None:
        end = time.perf_counter() + seconds
        await asyncio.gather(*(self._client(end, tally) for _ in range(count)))

    async def _client(self, end: float, tally: _Tally) -> None:
        connection = Connection(self.host, self.port)
        try:
            body, first = self._next(), time.perf_counter()
            while time.perf_counter() < end:
                pause = await self._send(connection, body, tally, first, end)
                if pause is None:
                    body, first = self._next(), time.perf_counter()
                else:  # honour Retry-After, but send nothing after the window
                    await asyncio.sleep(min(pause, max(0.0, end - time.perf_counter())))
        finally:
            connection.close()

    def _next(self) -> bytes:
        self.sent += 1
        return self.bodies[self.sent % len(self.bodies)]

    async def _send(
        self, connection: Connection, body: bytes, tally: _Tally, first: float, end: float
    ) -> float | None:
        """Send once (the request first sent at `first`, in a window ending at `end`); the
        seconds to wait before sending it again, or None when it is done."""
        sent = time.perf_counter()
        try:
            async with asyncio.timeout(self.client_timeout_s):
                try:
                    response = await connection.send(body)
                except HttpError:
                    # The server closed the connection while the client waited out Retry-After
                    # (uvicorn's keep-alive timeout is 5 s): like any HTTP client's pool, open a
                    # new one and send again.
                    sent = time.perf_counter()
                    response = await connection.send(body)
        except TimeoutError:
            tally.timeouts += 1
            return None
        except (OSError, HttpError) as exc:
            tally.errors += 1
            _sample(tally, f"{type(exc).__name__}: {exc}")
            return 1.0
        answered_at = time.perf_counter()
        latency = answered_at - sent
        if response.status == 200 and answered_at > end:
            tally.after_window += 1
            return None
        if response.status == 200:
            tally.first_send_s.append(answered_at - first)
            tally.answered += 1
            tally.answered_inputs += self.inputs
            tally.latencies_s.append(latency)
            if latency <= self.deadline_s:
                tally.in_time_inputs += self.inputs
            else:
                tally.late += 1
            return None
        if response.status == 429:
            tally.rejected += 1
            tally.shed += b"queue_timeout" in response.body
            retry = _retry_after(response.headers)
            tally.retry_after_s.append(retry)
            return retry
        tally.errors += 1
        _sample(tally, f"HTTP {response.status}: {response.body[:200]!r}")
        return 1.0


def _retry_after(headers: dict[str, str]) -> float:
    """As the openai SDK reads it: retry-after-ms first, then Retry-After seconds; 1 s without."""
    if "retry-after-ms" in headers:
        return float(headers["retry-after-ms"]) / 1000
    return float(headers.get("retry-after") or 1)


@dataclass
class _Probe:
    """/ready latencies every READY_EVERY_S and, every second, the server's queued-work gauge."""

    ready_s: list[float] = field(default_factory=list)
    queue_s: list[float] = field(default_factory=list)


async def _probe(host: str, port: int, until: float) -> _Probe:
    ready = build_request("GET", host, port, contract.READY_PATH)
    metrics = build_request("GET", host, port, contract.METRICS_PATH)
    connection = Connection(host, port)
    probe = _Probe()
    next_scrape = time.perf_counter()
    try:
        while time.perf_counter() < until:
            start = time.perf_counter()
            try:
                await connection.send(ready)
                probe.ready_s.append(time.perf_counter() - start)
                if start >= next_scrape:
                    next_scrape = start + 1.0
                    text = (await connection.send(metrics)).body.decode()
                    queued = gauge_value(text, contract.QUEUE_SECONDS)
                    if queued is not None:  # servers before it had no such gauge
                        probe.queue_s.append(queued)
            except (OSError, HttpError):
                pass
            await asyncio.sleep(READY_EVERY_S)
    finally:
        connection.close()
    return probe


async def _batch_totals(host: str, port: int) -> tuple[float, float]:
    connection = Connection(host, port)
    try:
        response = await connection.send(build_request("GET", host, port, contract.METRICS_PATH))
    finally:
        connection.close()
    return histogram_totals(response.body.decode(), contract.BATCH_SIZE)


def _sample(tally: _Tally, message: str) -> None:
    if len(tally.error_samples) < 5:
        tally.error_samples.append(message)


def _quantile(values: Sequence[float], percent: int) -> float | None:
    if not values:
        return None
    if len(values) == 1:
        return values[0]
    return quantiles(values, n=100, method="inclusive")[percent - 1]


def _ms(seconds: float | None) -> float | None:
    return None if seconds is None else seconds * 1000


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.overload", description=__doc__)
    where = parser.add_mutually_exclusive_group()
    where.add_argument("--url", help="a running server (default: start one)")
    where.add_argument("--source-dir", type=Path, help="start `python -m service` from this tree")
    parser.add_argument("--model", help="model folder for the started server (default: MiniLM)")
    parser.add_argument("--capacity-clients", type=int, default=16)
    parser.add_argument("--overload-factor", type=int, default=32)
    parser.add_argument("--inputs", type=int, default=8, help="inputs per request")
    parser.add_argument("--capacity-s", type=float, default=15.0)
    parser.add_argument("--overload-s", type=float, default=40.0)
    parser.add_argument("--deadline-s", type=float, default=5.0)
    parser.add_argument("--client-timeout-s", type=float, default=30.0)
    parser.add_argument(
        "--env",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="a setting for the started server, e.g. EMBED_MAX_QUEUE_SECONDS=1 (repeatable)",
    )
    parser.add_argument("--json", type=Path, help="also write the figures here")
    args = parser.parse_args(argv)
    install_signal_handlers()
    scenario = Scenario(
        capacity_clients=args.capacity_clients,
        overload_factor=args.overload_factor,
        inputs=args.inputs,
        capacity_s=args.capacity_s,
        overload_s=args.overload_s,
        deadline_s=args.deadline_s,
        client_timeout_s=args.client_timeout_s,
    )
    env = dict(item.split("=", 1) for item in args.env)
    result = run(
        args.url, scenario=scenario, source_dir=args.source_dir, model=args.model, server_env=env
    )
    print("\n".join(result.lines()))
    if args.json is not None:
        args.json.write_text(json.dumps(result.to_json(), indent=2) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
