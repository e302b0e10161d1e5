"""Serving overhead: our server on a tiny model against the framework floor, in paired rounds.

With a 1-layer, 32-wide BERT (bench/tinymodel.py: MiniLM's tokenizer, a nearly free forward pass)
what bounds the server is the CPU it spends per request outside the model: HTTP, validation,
tokenisation, queueing, metrics, logging, serialisation. The floor (bench/floor_server.py) is the
same HTTP stack doing the least an embeddings endpoint can: parse the same JSON, answer a fixed
base64 vector. Both get the same requests (one short input, base64, 64 keep-alive clients), taking
turns round by round like the main levels, and each round reads requests/s over the steady-state
window and the server's CPU per request from its own CPU time (every thread, /proc).

`make bench` runs it with the server's default settings (access log on). As a tool for A/B tests
of server changes or settings, each variant a server started with its own environment:

    python -m bench.overhead --variant base: --variant nolog:EMBED_ACCESS_LOG=false --rounds 9
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

from bench.corpus import make_texts
from bench.loadgen import ClosedLoop, Payload, PhaseResult, make_payloads, run_on_uvloop
from bench.modelfiles import default_model_path
from bench.procs import ServerProcess, free_port
from bench.segment import SegmentPlan
from bench.tinymodel import TINY_HIDDEN, build_tiny_model
from service import contract

HOST = "127.0.0.1"
FLOOR = "floor"
MODEL_NAME = "tiny"
CLIENTS = 64


@dataclass(frozen=True)
class Variant:
    name: str
    argv: tuple[str, ...]
    env: dict[str, str] = field(default_factory=dict)
    ready_path: str = contract.READY_PATH


@dataclass(frozen=True)
class OverheadRound:
    requests_per_s: float
    cpu_us_per_request: float | None
    ok: int
    errors: int
    load_average: float


@dataclass
class OverheadResult:
    clients: int
    requests: int
    rounds: dict[str, list[OverheadRound]]
    settings: dict[str, dict[str, str]]

    def median_rate(self, name: str) -> float:
        return statistics.median(r.requests_per_s for r in self.rounds[name])

    def median_cpu_us(self, name: str) -> float | None:
        values = [r.cpu_us_per_request for r in self.rounds[name] if r.cpu_us_per_request]
        return statistics.median(values) if values else None

    def ratios(self, name: str, baseline: str) -> list[float]:
        """Per round: name's requests/s over baseline's, measured seconds apart."""
        pairs = zip(self.rounds[name], self.rounds[baseline], strict=True)
        return [a.requests_per_s / b.requests_per_s for a, b in pairs if b.requests_per_s]

    def to_json(self) -> dict[str, object]:
        return {
            "clients": self.clients,
            "requests": self.requests,
            "settings": self.settings,
            "rounds": {name: [asdict(r) for r in rounds] for name, rounds in self.rounds.items()},
        }


def server_variant(model_dir: Path, name: str = "server", **env: str) -> Variant:
    """Our server on the tiny model, as `python -m service` starts it, plus `env`."""
    argv = (sys.executable, *contract.COMMAND[1:], "--host", HOST, "--model", str(model_dir))
    base = {
        contract.ENV_SERVED_MODEL_NAME: MODEL_NAME,
        contract.ENV_DRAIN_DELAY_SECONDS: "0",
    }
    return Variant(name, argv, {**base, **env})


def floor_variant() -> Variant:
    argv = (sys.executable, "-m", "bench.floor_server", "--dimension", str(TINY_HIDDEN))
    return Variant(FLOOR, argv, ready_path="/ready")


def run_overhead(
    variants: Sequence[Variant],
    *,
    rounds: int,
    requests: int = 2048,
    clients: int = CLIENTS,
    log_dir: Path,
    budget_s: float = 20.0,
) -> OverheadResult:
    """Every variant once per round, in order, on the same requests."""
    texts = make_texts("short", 4096, 0)
    plan = SegmentPlan(warmup=4 * clients, measured=requests, budget_s=budget_s)
    result = OverheadResult(clients, requests, {v.name: [] for v in variants}, {})
    servers: list[tuple[Variant, ServerProcess, list[Payload]]] = []
    try:
        for variant in variants:
            port = free_port(HOST)
            process = ServerProcess(
                variant.name,
                [*variant.argv, "--port", str(port)],
                host=HOST,
                port=port,
                ready_path=variant.ready_path,
                log_path=log_dir / f"overhead-{variant.name}.log",
                env={**os.environ, "HF_HUB_OFFLINE": "1", **variant.env},
            )
            servers.append((variant, process, _payloads(port, texts)))
            process.start()
            process.wait_ready()
            result.settings[variant.name] = variant.env
        for r in range(rounds):
            start = r * (plan.warmup + plan.measured)
            for variant, process, payloads in servers:
                label = f"overhead {variant.name:8} c={clients} round {r + 1}/{rounds}"
                result.rounds[variant.name].append(
                    _round(process, payloads, plan, clients, start, label)
                )
    finally:
        for _, process, _ in servers:
            process.stop()
    return result


def _payloads(port: int, texts: Sequence[str]) -> list[Payload]:
    bodies = [
        (
            json.dumps({"input": t, "model": MODEL_NAME, "encoding_format": "base64"}).encode(),
            1,
            1,
        )
        for t in texts
    ]
    return make_payloads(HOST, port, contract.EMBEDDINGS_PATH, bodies)


def _round(
    process: ServerProcess,
    payloads: Sequence[Payload],
    plan: SegmentPlan,
    clients: int,
    start: int,
    label: str,
) -> OverheadRound:
    process.check_alive()

    async def loop() -> PhaseResult:
        async with ClosedLoop(HOST, process.port, clients, 30.0) as closed:
            return await closed.run(payloads, plan, start=start, label=label)

    cpu_before = process.cpu_seconds()
    phase = run_on_uvloop(loop())
    cpu_after = process.cpu_seconds()
    served = phase.segment_requests
    cpu_us = None
    if cpu_before is not None and cpu_after is not None and served:
        cpu_us = (cpu_after - cpu_before) / served * 1e6
    ok = len(phase.latencies_s)
    return OverheadRound(
        requests_per_s=phase.window.inputs_per_s,
        cpu_us_per_request=cpu_us,
        ok=ok,
        errors=phase.requests - ok,
        load_average=os.getloadavg()[0],
    )


def format_table(result: OverheadResult, baseline: str) -> str:
    lines = [
        f"| variant | requests/s (median) | CPU us/request | / {baseline} (median, range) |",
        "|---|---:|---:|---:|",
    ]
    for name in result.rounds:
        cpu = result.median_cpu_us(name)
        ratios = result.ratios(name, baseline)
        spread = f"{statistics.median(ratios):.2f}x ({min(ratios):.2f} to {max(ratios):.2f})"
        cpu_text = f"{cpu:.0f}" if cpu is not None else "-"
        lines.append(f"| {name} | {result.median_rate(name):.0f} | {cpu_text} | {spread} |")
    return "\n".join(lines)


def _variant(text: str) -> tuple[str, dict[str, str]]:
    name, _, assignments = text.partition(":")
    env = dict(part.split("=", 1) for part in assignments.split(",") if "=" in part)
    if not name:
        raise argparse.ArgumentTypeError(f"expected NAME:[ENV=VALUE,...], got {text!r}")
    return name, env


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.overhead", description=__doc__)
    parser.add_argument(
        "--variant",
        type=_variant,
        action="append",
        help="NAME:ENV=VALUE,... a server variant (default: the server with default settings)",
    )
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--requests", type=int, default=2048, help="measured per round")
    parser.add_argument("--clients", type=int, default=CLIENTS)
    parser.add_argument("--no-floor", action="store_true", help="compare variants only")
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="bench-tiny-") as folder:
        model = build_tiny_model(default_model_path(), Path(folder) / "model")
        named = args.variant or [("server", {})]
        variants = [server_variant(model, name, **env) for name, env in named]
        if not args.no_floor:
            variants.append(floor_variant())
        load = os.getloadavg()
        result = run_overhead(
            variants,
            rounds=args.rounds,
            requests=args.requests,
            clients=args.clients,
            log_dir=Path("build") / "bench",
        )
    baseline = variants[0].name if args.no_floor else FLOOR
    print(f"load average at start {load[0]:.2f}, at end {os.getloadavg()[0]:.2f}")
    print(format_table(result, baseline))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
