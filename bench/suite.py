"""The CPU benchmark run: the limit, our server and the naive server at each concurrency in paired
rounds, then the report.

All three systems stay up for the whole run (the limit's encoder in this process, the servers as
child processes; an idle one costs no CPU). Each concurrency runs `rounds` rounds, and each round
runs every system once, limit, server, naive, one right after the other: this VM's speed drifts by
+-30 % over tens of seconds, so only numbers measured seconds apart compare (bench/NOTES.md)."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import platform
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

from bench import coldstart, machine, scrape
from bench.corpus import CorpusKind, Item, make_corpus, tokenizer_counter
from bench.limit import BatchLimits, run_limit_round
from bench.loadgen import ClosedLoop, Payload, PhaseResult, make_payloads, run_on_uvloop
from bench.modelfiles import default_model_path, max_tokens
from bench.overhead import floor_variant, run_overhead, server_variant
from bench.procs import ServerProcess, free_port
from bench.report import Report
from bench.segment import SegmentPlan
from bench.stats import SYSTEMS, LevelStats, RoundResult, pool
from bench.tinymodel import build_tiny_model
from service import contract

if TYPE_CHECKING:
    from service.encoder import Encoder

HOST = "127.0.0.1"


@dataclass(frozen=True)
class SuiteOptions:
    model: str
    """Model folder: the same weights for all three systems."""
    model_name: str
    out_dir: Path
    log_dir: Path
    machine: str
    corpus: CorpusKind = "short"
    corpus_size: int = 4096
    seed: int = 0
    concurrency: Sequence[int] = (1, 4, 16, 64, 256)
    systems: Sequence[str] = SYSTEMS
    rounds: int = 5
    """Paired rounds per concurrency: every system runs once in each."""
    requests: int | None = None
    """Measured requests per round, before measured_for rounds them up; None: its default."""
    encoding_format: str = "float"
    timeout_s: float = 120.0
    level_budget_s: float = 60.0
    """Per system and concurrency, split evenly over the rounds: a round's warm-up, and then its
    measured requests, send nothing new after level_budget_s / rounds, so a starved machine cannot
    stall a run."""
    command: str = "python -m bench"
    extra_env: dict[str, str] = field(default_factory=dict)
    mixed_concurrency: int | None = 64
    """Also run the limit and our server at this concurrency on the mixed corpus (None: not)."""
    overhead_rounds: int = 5
    """Serving-overhead rounds (bench/overhead.py); 0: not run."""
    fairness_bulk: int = 384
    """Inputs of the fairness probe's bulk request (bench/fairness.py); 0: not run."""

    @staticmethod
    def warmup_for(concurrency: int) -> int:
        """Four requests per client, so the loop is in its steady rotation before anything is
        recorded (a round opens fresh connections, and its first burst often reaches our server as
        a batch of one and the rest), and enough forward passes for torch's steady state at low
        concurrency."""
        return max(32, 4 * concurrency)

    def measured_for(self, concurrency: int) -> int:
        """Eight requests per client at least, so the window spans several rotations of the clients,
        rounded up to whole rotations: then the window starts and ends at the same point of the
        rotation, and a system that answers all clients in one batch is read exactly
        (bench/segment.py)."""
        # At 64 clients, 4 rotations per round read our server at 0.76x the limit in two runs and
        # 16 rotations at 0.87x: short windows over-weight a round's first rotations.
        wanted = self.requests or max(100, 8 * concurrency)
        return -(-wanted // concurrency) * concurrency

    def plan_for(self, concurrency: int) -> SegmentPlan:
        return SegmentPlan(
            warmup=self.warmup_for(concurrency),
            measured=self.measured_for(concurrency),
            budget_s=self.level_budget_s / self.rounds,
        )


class _System(Protocol):
    name: str

    def run_round(
        self, concurrency: int, plan: SegmentPlan, start: int, label: str
    ) -> RoundResult: ...


@dataclass
class _Context:
    options: SuiteOptions
    corpus: list[Item]
    dimension: int
    limits: BatchLimits
    report: Report


def run_suite(options: SuiteOptions) -> Report:
    started = time.time()
    counter = tokenizer_counter(options.model, max_tokens(options.model))
    corpus = make_corpus(options.corpus, options.corpus_size, options.seed, counter)
    report = Report(machine=options.machine, meta=_meta(options, corpus, started))
    ctx = _Context(options, corpus, _dimension(options.model), _batch_limits(), report)
    report.meta["batch_limits"] = {
        "max_batch_size": ctx.limits.max_batch_size,
        "max_batch_tokens": ctx.limits.max_batch_tokens,
        "pass_cost_tokens": ctx.limits.pass_cost_tokens,
    }
    bare = coldstart.measure_bare_load(options.model)
    report.cold_start.update(
        bare_total_s=bare.total_s, bare_import_s=bare.import_s, bare_load_s=bare.load_s
    )
    starters: dict[str, Callable[[_Context, contextlib.ExitStack], _System]] = {
        "limit": _start_limit,
        "server": _start_server,
        "naive": _start_naive,
    }
    with contextlib.ExitStack() as stack:
        # One after another, each ready before the next starts: honest cold starts.
        systems = [starters[name](ctx, stack) for name in SYSTEMS if name in options.systems]
        for c in options.concurrency:
            report.levels += _run_level(ctx, systems, c)
        limit = next((system for system in systems if isinstance(system, _Limit)), None)
        if limit is not None:
            report.meta["limit_tokenize_share"] = limit.tokenize_shares()
        server = next(
            (s for s in systems if isinstance(s, _HttpSystem) and s.name == "server"), None
        )
        if options.mixed_concurrency and limit is not None and server is not None:
            report.mixed_levels += _run_mixed(ctx, limit, server, options.mixed_concurrency)
        if options.fairness_bulk and server is not None:
            report.fairness = _run_fairness(ctx, server)
    if options.overhead_rounds:
        report.overhead = _run_overhead(options)
    report.meta["load_average_end"] = list(os.getloadavg())
    report.meta["duration_s"] = time.time() - started
    return report


def _run_level(ctx: _Context, systems: Sequence[_System], concurrency: int) -> list[LevelStats]:
    """`rounds` rounds of every system in order, then one pooled LevelStats per system."""
    options = ctx.options
    plan = options.plan_for(concurrency)
    results: dict[str, list[RoundResult]] = {system.name: [] for system in systems}
    for r in range(options.rounds):
        start = r * (plan.warmup + plan.measured)  # the round's inputs, the same for every system
        for system in systems:
            label = f"{system.name:6} c={concurrency} round {r + 1}/{options.rounds}"
            results[system.name].append(system.run_round(concurrency, plan, start, label))
    return [pool(name, concurrency, rounds) for name, rounds in results.items()]


def _run_mixed(
    ctx: _Context, limit: _Limit, server: _HttpSystem, concurrency: int
) -> list[LevelStats]:
    """The limit and our server on the mixed corpus: one paragraph in five, so batches that mix
    lengths pay for padding unless they are cut by length."""
    options = ctx.options
    counter = tokenizer_counter(options.model, max_tokens(options.model))
    corpus = make_corpus("mixed", options.corpus_size, options.seed, counter)
    mixed_ctx = _Context(options, corpus, ctx.dimension, ctx.limits, ctx.report)
    systems: list[_System] = [
        _Limit(limit.encoder, corpus, ctx.limits, name="limit"),
        _HttpSystem(
            "server",
            server.server,
            _payloads(mixed_ctx, server.server.port),
            mixed_ctx,
            server.batch_totals,
        ),
    ]
    ctx.report.meta["mixed_corpus"] = _corpus_meta("mixed", corpus, options.seed)
    return _run_level(mixed_ctx, systems, concurrency)


def _run_fairness(ctx: _Context, server: _HttpSystem) -> dict[str, object]:
    from bench.fairness import probe

    result = asyncio.run(
        probe(server.server.base_url, ctx.options.model_name, ctx.options.fairness_bulk)
    )
    return result.to_json()


def _run_overhead(options: SuiteOptions) -> dict[str, object]:
    """Our server (default settings) on the tiny model against the framework floor."""
    with tempfile.TemporaryDirectory(prefix="bench-tiny-") as folder:
        model = build_tiny_model(default_model_path(), Path(folder) / "model")
        variants = [server_variant(model, **options.extra_env), floor_variant()]
        result = run_overhead(variants, rounds=options.overhead_rounds, log_dir=options.log_dir)
    return result.to_json()


@dataclass
class _Limit:
    encoder: Encoder
    corpus: Sequence[Item]
    limits: BatchLimits
    name: str = "limit"
    _shares: dict[int, list[float]] = field(default_factory=dict)

    def run_round(self, concurrency: int, plan: SegmentPlan, start: int, label: str) -> RoundResult:
        limit_round = run_limit_round(
            self.encoder,
            self.corpus,
            self.limits,
            concurrency=concurrency,
            plan=plan,
            start=start,
            label=label,
        )
        self._shares.setdefault(concurrency, []).append(limit_round.tokenize_share)
        return limit_round.result

    def tokenize_shares(self) -> dict[str, float]:
        """Per concurrency, the mean over its rounds of the time share spent tokenising."""
        return {str(c): sum(shares) / len(shares) for c, shares in self._shares.items()}


def _start_limit(ctx: _Context, stack: contextlib.ExitStack) -> _System:
    from service.encoder import Encoder, EncoderConfig

    encoder = Encoder.load(EncoderConfig(model=ctx.options.model))
    encoder.warm_up(ctx.limits.max_batch_size)
    return _Limit(encoder, ctx.corpus, ctx.limits)


@dataclass
class _HttpSystem:
    name: str
    server: ServerProcess
    payloads: Sequence[Payload]
    ctx: _Context
    batch_totals: Callable[[], tuple[float, float]] | None
    """The server's own (inputs, forward passes) counters; None: one pass per request (naive)."""

    def run_round(self, concurrency: int, plan: SegmentPlan, start: int, label: str) -> RoundResult:
        self.server.check_alive()
        batch_before = self.batch_totals() if self.batch_totals else (0.0, 0.0)
        cpu_before = self.server.cpu_seconds()
        result = run_on_uvloop(self._loop(concurrency, plan, start, label))
        cpu_after = self.server.cpu_seconds()
        batch_after = (
            self.batch_totals()
            if self.batch_totals
            else (float(result.segment_inputs), float(result.segment_requests))
        )
        _check(result, self.ctx, self.name)
        return result.to_round(
            cpu_s=None if cpu_before is None or cpu_after is None else cpu_after - cpu_before,
            batch_totals=(batch_after[0] - batch_before[0], batch_after[1] - batch_before[1]),
        )

    async def _loop(
        self, concurrency: int, plan: SegmentPlan, start: int, label: str
    ) -> PhaseResult:
        timeout_s = self.ctx.options.timeout_s
        async with ClosedLoop(HOST, self.server.port, concurrency, timeout_s) as loop:
            return await loop.run(self.payloads, plan, start=start, label=label)


def _start_server(ctx: _Context, stack: contextlib.ExitStack) -> _System:
    options = ctx.options
    port = free_port(HOST)
    env = _child_env(options) | server_settings(options)
    argv = [
        sys.executable,
        *contract.COMMAND[1:],
        "--host",
        HOST,
        "--port",
        str(port),
        "--model",
        options.model,
    ]
    server = ServerProcess(
        "our server",
        argv,
        host=HOST,
        port=port,
        ready_path=contract.READY_PATH,
        log_path=options.log_dir / "server.log",
        env=env,
    )
    stack.enter_context(server)
    ctx.report.cold_start["server_ready_s"] = server.cold_start_s
    metrics = scrape.fetch_metrics(server.base_url, contract.METRICS_PATH)
    ctx.report.cold_start["server_model_load_s"] = scrape.gauge_value(
        metrics, contract.MODEL_LOAD_SECONDS
    )
    return _HttpSystem("server", server, _payloads(ctx, port), ctx, lambda: _batch_totals(server))


def _start_naive(ctx: _Context, stack: contextlib.ExitStack) -> _System:
    options = ctx.options
    port = free_port(HOST)
    argv = [sys.executable, "-m", "bench.naive_server", "--host", HOST, "--port", str(port)]
    server = ServerProcess(
        "naive server",
        [*argv, "--model", options.model],
        host=HOST,
        port=port,
        ready_path="/ready",
        log_path=options.log_dir / "naive.log",
        env=_child_env(options),
    )
    stack.enter_context(server)
    ctx.report.cold_start["naive_ready_s"] = server.cold_start_s
    return _HttpSystem("naive", server, _payloads(ctx, port), ctx, None)


def _payloads(ctx: _Context, port: int) -> list[Payload]:
    """The corpus as one-input requests to a server: the same bytes for both servers."""
    options = ctx.options
    bodies = [
        (
            json.dumps(
                {
                    "input": item.text,
                    "model": options.model_name,
                    "encoding_format": options.encoding_format,
                }
            ).encode(),
            1,
            item.tokens,
        )
        for item in ctx.corpus
    ]
    return make_payloads(HOST, port, contract.EMBEDDINGS_PATH, bodies)


def _check(result: PhaseResult, ctx: _Context, system: str) -> None:
    """Fail loudly when 2xx responses are not embeddings, or when nothing succeeded."""
    if result.sample_body is None:
        raise RuntimeError(
            f"{system}: no request succeeded at concurrency {result.concurrency}: "
            f"statuses {dict(result.statuses)}; {result.error_samples}"
        )
    scrape.check_embedding_body(result.sample_body, ctx.dimension, ctx.options.encoding_format)
    for sample in result.error_samples:
        print(f"{system} c={result.concurrency}: {sample}", file=sys.stderr)


def _batch_totals(server: ServerProcess) -> tuple[float, float]:
    text = scrape.fetch_metrics(server.base_url, contract.METRICS_PATH)
    return scrape.histogram_totals(text, contract.BATCH_SIZE)


def _child_env(options: SuiteOptions) -> dict[str, str]:
    return {**os.environ, "HF_HUB_OFFLINE": "1", **options.extra_env}


def _batch_limits() -> BatchLimits:
    """The server's batch limits as it will read them (defaults + EMBED_* environment)."""
    from service.settings import Settings

    settings = Settings()
    return BatchLimits(
        settings.max_batch_size,
        settings.max_batch_tokens,
        settings.resolved_pass_cost_tokens("cpu"),
    )


def _dimension(model: str) -> int:
    config = json.loads((Path(model) / "config.json").read_text())
    return int(config["hidden_size"])


def server_settings(options: SuiteOptions) -> dict[str, str]:
    """The EMBED_* settings the benchmark gives our server (recorded in the report)."""
    return {
        contract.ENV_SERVED_MODEL_NAME: options.model_name,
        # The benchmark stops the server itself; no load balancer needs a grace period.
        contract.ENV_DRAIN_DELAY_SECONDS: "0",
        # Everything else as shipped, access log included: what operators run is what is measured.
    }


def _meta(options: SuiteOptions, corpus: Sequence[Item], started: float) -> dict[str, Any]:
    import torch
    import transformers

    return {
        "command": options.command,
        "started_at": datetime.fromtimestamp(started, UTC).strftime("%Y-%m-%d %H:%M UTC"),
        "model": options.model,
        "model_name": options.model_name,
        "cpu": machine.cpu_model(),
        "cores": machine.cpu_count(),
        "python": platform.python_version(),
        "torch": torch.__version__,
        "torch_threads": torch.get_num_threads(),
        "transformers": transformers.__version__,
        "load_average_start": list(os.getloadavg()),
        "encoding_format": options.encoding_format,
        "concurrency": list(options.concurrency),
        "rounds": options.rounds,
        "round_budget_s": options.level_budget_s / options.rounds,
        "warmup": {str(c): options.warmup_for(c) for c in options.concurrency},
        "measured": {str(c): options.measured_for(c) for c in options.concurrency},
        "embed_env": {k: v for k, v in os.environ.items() if k.startswith(contract.ENV_PREFIX)},
        "server_settings": server_settings(options),
        "corpus": _corpus_meta(options.corpus, corpus, options.seed),
    }


def _corpus_meta(kind: str, corpus: Sequence[Item], seed: int) -> dict[str, Any]:
    tokens = sorted(item.tokens for item in corpus)
    mean = sum(tokens) / len(tokens)
    return {
        "kind": kind,
        "size": len(corpus),
        "seed": seed,
        "mean_tokens": mean,
        "max_tokens": tokens[-1],
        "description": f"{kind} ({len(corpus)} seeded inputs, seed {seed}, "
        f"{mean:.1f} tokens on average, {tokens[-1]} at most)",
    }
