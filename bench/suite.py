"""The CPU benchmark run: the limit, our server and the naive server at each concurrency, then the
report."""

from __future__ import annotations

import asyncio
import gc
import json
import os
import platform
import sys
import time
from collections.abc import Callable, Coroutine, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from bench import coldstart, machine, scrape
from bench.corpus import CorpusKind, Item, make_corpus, tokenizer_counter
from bench.limit import BatchLimits, run_limit_level
from bench.loadgen import ClosedLoop, Payload, PhaseResult, make_payloads
from bench.procs import ServerProcess, free_port
from bench.report import Report
from bench.stats import LevelStats, percentiles_ms
from service import contract

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
    systems: Sequence[str] = ("limit", "server", "naive")
    requests: int | None = None
    """Measured requests per level; None: max(min_requests, rounds * concurrency)."""
    min_requests: int = 500
    rounds: int = 8
    """Requests per client at least, so that the high-concurrency levels reach a steady state."""
    encoding_format: str = "float"
    timeout_s: float = 120.0
    level_budget_s: float = 60.0
    """Per level: no new requests after this long, so a starved machine cannot stall a run."""
    command: str = "python -m bench"
    extra_env: dict[str, str] = field(default_factory=dict)

    def requests_for(self, concurrency: int) -> int:
        return self.requests or max(self.min_requests, self.rounds * concurrency)

    @staticmethod
    def warmup_for(concurrency: int) -> int:
        """Every client once, and enough passes to reach torch's steady state at low concurrency."""
        return max(concurrency, 32)


@dataclass
class _Context:
    options: SuiteOptions
    corpus: list[Item]
    dimension: int
    limits: BatchLimits
    report: Report


def run_suite(options: SuiteOptions) -> Report:
    started = time.time()
    counter = tokenizer_counter(options.model, _max_tokens(options.model))
    corpus = make_corpus(options.corpus, options.corpus_size, options.seed, counter)
    report = Report(machine=options.machine, meta=_meta(options, corpus, started))
    ctx = _Context(options, corpus, _dimension(options.model), _batch_limits(), report)
    report.meta["batch_limits"] = {
        "max_batch_size": ctx.limits.max_batch_size,
        "max_batch_tokens": ctx.limits.max_batch_tokens,
    }
    bare = coldstart.measure_bare_load(options.model)
    report.cold_start.update(
        bare_total_s=bare.total_s, bare_import_s=bare.import_s, bare_load_s=bare.load_s
    )
    runners: dict[str, Callable[[_Context], None]] = {
        "limit": _run_limit,
        "server": _run_server,
        "naive": _run_naive,
    }
    for system in options.systems:
        runners[system](ctx)
    report.meta["load_average_end"] = list(os.getloadavg())
    report.meta["duration_s"] = time.time() - started
    return report


def _run_limit(ctx: _Context) -> None:
    from service.encoder import Encoder, EncoderConfig

    encoder = Encoder.load(EncoderConfig(model=ctx.options.model))
    encoder.warm_up(ctx.limits.max_batch_size)
    tokenize_shares = {}
    for c in ctx.options.concurrency:
        level = run_limit_level(
            encoder,
            ctx.corpus,
            ctx.limits,
            concurrency=c,
            requests=ctx.options.requests_for(c),
            warmup=ctx.options.warmup_for(c),
            label=f"limit  c={c}",
            budget_s=ctx.options.level_budget_s,
        )
        ctx.report.levels.append(level.stats)
        tokenize_shares[str(c)] = level.tokenize_share
    ctx.report.meta["limit_tokenize_share"] = tokenize_shares
    del encoder
    gc.collect()  # the servers come next: give the memory back


def _run_server(ctx: _Context) -> None:
    options = ctx.options
    port = free_port(HOST)
    env = _child_env(options) | {
        contract.ENV_SERVED_MODEL_NAME: options.model_name,
        # The benchmark stops the server itself; no load balancer needs a grace period.
        contract.ENV_DRAIN_DELAY_SECONDS: "0",
    }
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
    with server:
        ctx.report.cold_start["server_ready_s"] = server.cold_start_s
        metrics = scrape.fetch_metrics(server.base_url, contract.METRICS_PATH)
        ctx.report.cold_start["server_model_load_s"] = scrape.gauge_value(
            metrics, contract.MODEL_LOAD_SECONDS
        )
        _run_http_levels(ctx, "server", server, with_metrics=True)


def _run_naive(ctx: _Context) -> None:
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
    with server:
        ctx.report.cold_start["naive_ready_s"] = server.cold_start_s
        _run_http_levels(ctx, "naive", server, with_metrics=False)


def _run_http_levels(
    ctx: _Context, system: str, server: ServerProcess, *, with_metrics: bool
) -> None:
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
    payloads = make_payloads(HOST, server.port, contract.EMBEDDINGS_PATH, bodies)
    for c in options.concurrency:
        server.check_alive()
        stats = _run(
            _http_level(ctx, system, server, payloads, c, with_metrics),
        )
        ctx.report.levels.append(stats)


async def _http_level(
    ctx: _Context,
    system: str,
    server: ServerProcess,
    payloads: Sequence[Payload],
    concurrency: int,
    with_metrics: bool,
) -> LevelStats:
    options = ctx.options
    warmup, requests = options.warmup_for(concurrency), options.requests_for(concurrency)
    budget = options.level_budget_s
    batch_before = batch_after = (0.0, 0.0)
    async with ClosedLoop(HOST, server.port, concurrency, options.timeout_s) as loop:
        warm = await loop.run(payloads, warmup, budget_s=budget)
        _check(warm, ctx, system)
        if with_metrics:
            batch_before = _batch_totals(server)
        cpu_before = server.cpu_seconds()
        label = f"{system:6} c={concurrency}"
        result = await loop.run(payloads, requests, start=warmup, label=label, budget_s=budget)
        cpu_after = server.cpu_seconds()
        if with_metrics:
            batch_after = _batch_totals(server)
    _check(result, ctx, system)
    p50, p95, p99 = percentiles_ms(result.latencies_s)
    ok = len(result.latencies_s)
    rejected = result.statuses.get(429, 0)
    cpu_ms = None
    if cpu_before is not None and cpu_after is not None and result.inputs:
        cpu_ms = 1000 * (cpu_after - cpu_before) / result.inputs
    return LevelStats(
        system=system,
        concurrency=concurrency,
        requests=result.requests,
        ok=ok,
        rejected=rejected,
        errors=result.requests - ok - rejected,
        elapsed_s=result.elapsed_s,
        inputs=result.inputs,
        tokens=result.tokens,
        p50_ms=p50,
        p95_ms=p95,
        p99_ms=p99,
        mean_batch_size=scrape.mean_between(batch_before, batch_after) if with_metrics else 1.0,
        cpu_ms_per_input=cpu_ms,
        cut_short=result.requests < requests,
    )


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


def _run(coroutine: Coroutine[Any, Any, LevelStats]) -> LevelStats:
    """asyncio.run on uvloop when installed: a cheaper client leaves more CPU to the server."""
    try:
        import uvloop
    except ImportError:
        return asyncio.run(coroutine)
    with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
        return runner.run(coroutine)


def _child_env(options: SuiteOptions) -> dict[str, str]:
    return {**os.environ, "HF_HUB_OFFLINE": "1", **options.extra_env}


def _batch_limits() -> BatchLimits:
    """The server's batch limits as it will read them (defaults + EMBED_* environment)."""
    from service.settings import Settings

    settings = Settings()
    return BatchLimits(settings.max_batch_size, settings.max_batch_tokens)


def _max_tokens(model: str) -> int:
    from bench.modelfiles import max_tokens

    return max_tokens(model)


def _dimension(model: str) -> int:
    config = json.loads((Path(model) / "config.json").read_text())
    return int(config["hidden_size"])


def _meta(options: SuiteOptions, corpus: Sequence[Item], started: float) -> dict[str, Any]:
    import torch
    import transformers

    tokens = sorted(item.tokens for item in corpus)
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
        "requests": {str(c): options.requests_for(c) for c in options.concurrency},
        "warmup": {str(c): options.warmup_for(c) for c in options.concurrency},
        "embed_env": {k: v for k, v in os.environ.items() if k.startswith(contract.ENV_PREFIX)},
        "corpus": {
            "kind": options.corpus,
            "size": len(corpus),
            "seed": options.seed,
            "mean_tokens": sum(tokens) / len(tokens),
            "max_tokens": tokens[-1],
            "description": f"{options.corpus} ({len(corpus)} seeded inputs, seed {options.seed}, "
            f"{sum(tokens) / len(tokens):.1f} tokens on average, {tokens[-1]} at most)",
        },
    }
