"""The report of one run: JSON (everything), a markdown table, a PNG plot, and the key ratios vs
targets."""

from __future__ import annotations

import json
import math
import operator
import statistics
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bench.stats import SYSTEM_LABELS, SYSTEMS, LevelStats

REFERENCE_CONCURRENCY = 64
"""Where the throughput targets are read (issue #6): many clients, the batcher's home ground."""
SERVER_VS_LIMIT_TARGET = 0.90
SERVER_VS_NAIVE_TARGET = 4.0
SINGLE_LATENCY_GAP_TARGET_MS = 5.0
SERVER_VS_FLOOR_TARGET = 0.5
"""Issue #12: the tiny-model server at >= 0.5x the framework floor's requests/s (64 clients)."""


@dataclass(frozen=True)
class Ratio:
    """A target read as paired rounds: each round compares numbers measured seconds apart, and the
    value is the median of the rounds (this VM's speed drifts by +-30 % over tens of seconds)."""

    name: str
    rounds: tuple[float, ...]
    """The value in each round (NaN where a round has nothing to compare)."""
    target: float
    higher_is_better: bool
    unit: str = "x"

    @property
    def measured(self) -> bool:
        return bool(self.rounds) and not any(math.isnan(v) for v in self.rounds)

    @property
    def value(self) -> float:
        return statistics.median(self.rounds) if self.measured else math.nan

    @property
    def low(self) -> float:
        return min(self.rounds) if self.measured else math.nan

    @property
    def high(self) -> float:
        return max(self.rounds) if self.measured else math.nan

    @property
    def met(self) -> bool:
        if not self.measured:
            return False
        return self.value >= self.target if self.higher_is_better else self.value <= self.target

    def spread(self) -> str:
        """The rounds in words: 'median of R paired rounds (range a to b)'."""
        low, high = f"{self.low:.2f}", f"{self.high:.2f}{self.unit}"
        return f"median of {len(self.rounds)} paired rounds (range {low} to {high})"

    def line(self) -> str:
        sign = ">=" if self.higher_is_better else "<="
        verdict = "met" if self.met else "MISSED"
        value, target = f"{self.value:.2f}{self.unit}", f"{self.target:g}{self.unit}"
        return f"{self.name}: {value} (target {sign} {target}: {verdict}); {self.spread()}"


@dataclass
class Report:
    machine: str
    meta: dict[str, Any]
    """Machine, versions, configuration, corpus, timings, load: what reproduces it."""
    levels: list[LevelStats] = field(default_factory=list)
    cold_start: dict[str, float | None] = field(default_factory=dict)
    mixed_levels: list[LevelStats] = field(default_factory=list)
    """The limit and our server on the mixed corpus (one concurrency)."""
    overhead: dict[str, Any] | None = None
    """bench/overhead.py's result: the tiny-model server against the framework floor."""
    fairness: dict[str, Any] | None = None
    """bench/fairness.py's result: a small request behind a bulk one."""

    def level(self, system: str, concurrency: int) -> LevelStats | None:
        for stats in self.levels:
            if stats.system == system and stats.concurrency == concurrency:
                return stats
        return None

    def ratios(self) -> list[Ratio]:
        """The issue's targets, paired round by round (no rounds where a level is missing)."""
        c = REFERENCE_CONCURRENCY
        return [
            Ratio(
                f"server / limit throughput at concurrency {c}",
                self._paired("server", "limit", c, "rounds_inputs_per_s", _ratio),
                SERVER_VS_LIMIT_TARGET,
                higher_is_better=True,
            ),
            Ratio(
                f"server / naive throughput at concurrency {c}",
                self._paired("server", "naive", c, "rounds_inputs_per_s", _ratio),
                SERVER_VS_NAIVE_TARGET,
                higher_is_better=True,
            ),
            Ratio(
                "server p50 - limit p50 latency at concurrency 1",
                self._paired("server", "limit", 1, "rounds_p50_ms", operator.sub),
                SINGLE_LATENCY_GAP_TARGET_MS,
                higher_is_better=False,
                unit=" ms",
            ),
            Ratio(
                f"mixed corpus: server / limit throughput at concurrency {c}",
                self._paired_in(self.mixed_levels, "server", "limit", c),
                SERVER_VS_LIMIT_TARGET,
                higher_is_better=True,
            ),
            Ratio(
                f"serving overhead: tiny-model server / framework floor requests/s at {c} clients",
                self._overhead_rounds(),
                SERVER_VS_FLOOR_TARGET,
                higher_is_better=True,
            ),
        ]

    def _paired_in(
        self, levels: Sequence[LevelStats], system: str, baseline: str, concurrency: int
    ) -> tuple[float, ...]:
        found = {(s.system, s.concurrency): s for s in levels}
        ours, theirs = found.get((system, concurrency)), found.get((baseline, concurrency))
        if ours is None or theirs is None:
            return ()
        pairs = zip(ours.rounds_inputs_per_s, theirs.rounds_inputs_per_s, strict=True)
        return tuple(_ratio(a, b) for a, b in pairs)

    def _overhead_rounds(self) -> tuple[float, ...]:
        if not self.overhead:
            return ()
        rounds = self.overhead["rounds"]
        pairs = zip(rounds["server"], rounds["floor"], strict=True)
        return tuple(_ratio(a["requests_per_s"], b["requests_per_s"]) for a, b in pairs)

    def _paired(
        self,
        system: str,
        baseline: str,
        concurrency: int,
        field_name: str,
        compare: Callable[[float, float], float],
    ) -> tuple[float, ...]:
        """`compare(system's round r, baseline's round r)` for every round."""
        ours, theirs = self.level(system, concurrency), self.level(baseline, concurrency)
        if ours is None or theirs is None:
            return ()
        pairs = zip(getattr(ours, field_name), getattr(theirs, field_name), strict=True)
        return tuple(compare(a, b) for a, b in pairs)

    def to_dict(self) -> dict[str, Any]:
        return {
            "machine": self.machine,
            "meta": self.meta,
            "levels": [stats.to_dict() for stats in self.levels],
            "mixed_levels": [stats.to_dict() for stats in self.mixed_levels],
            "overhead": self.overhead,
            "fairness": self.fairness,
            "cold_start": self.cold_start,
            "ratios": [
                {
                    "name": r.name,
                    "value": r.value,
                    "rounds": list(r.rounds),
                    "low": r.low,
                    "high": r.high,
                    "target": r.target,
                    "higher_is_better": r.higher_is_better,
                    "unit": r.unit.strip(),
                    "met": r.met,
                }
                for r in self.ratios()
            ],
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Report:
        return cls(
            machine=data["machine"],
            meta=data["meta"],
            levels=[LevelStats.from_dict(level) for level in data["levels"]],
            cold_start=data["cold_start"],
            mixed_levels=[LevelStats.from_dict(level) for level in data.get("mixed_levels", [])],
            overhead=data.get("overhead"),
            fairness=data.get("fairness"),
        )


def _ratio(numerator: float, denominator: float) -> float:
    return numerator / denominator if denominator > 0 else float("nan")


def write_report(report: Report, out_dir: Path) -> dict[str, Path]:
    """Write report.json, report.md and plot.png into out_dir; return their paths."""
    out_dir.mkdir(parents=True, exist_ok=True)
    paths = {
        "json": out_dir / "report.json",
        "markdown": out_dir / "report.md",
        "plot": out_dir / "plot.png",
    }
    # allow_nan: a level where nothing succeeded has NaN latencies (Python's json reads them).
    paths["json"].write_text(json.dumps(report.to_dict(), indent=2, allow_nan=True) + "\n")
    write_plot(report, paths["plot"])
    paths["markdown"].write_text(render_markdown(report, plot_name=paths["plot"].name))
    return paths


def write_plot(report: Report, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")  # files only: no display on servers and CI
    import matplotlib.pyplot as plt
    from matplotlib import ticker

    fig, (throughput_ax, latency_ax) = plt.subplots(1, 2, figsize=(12, 4.8))
    for system in SYSTEMS:
        points = sorted(
            (s for s in report.levels if s.system == system), key=lambda s: s.concurrency
        )
        if not points:
            continue
        xs = [s.concurrency for s in points]
        label = SYSTEM_LABELS[system]
        (line,) = throughput_ax.plot(xs, [s.inputs_per_s for s in points], marker="o", label=label)
        if all(s.rounds_inputs_per_s for s in points):  # the spread over rounds, as a band
            lows = [min(s.rounds_inputs_per_s) for s in points]
            highs = [max(s.rounds_inputs_per_s) for s in points]
            throughput_ax.fill_between(xs, lows, highs, color=line.get_color(), alpha=0.15)
        latency_ax.plot(xs, [s.p95_ms for s in points], marker="o", label=label)
    concurrencies = sorted({s.concurrency for s in report.levels})
    for ax in (throughput_ax, latency_ax):
        ax.set_xscale("log", base=2)
        ax.set_xticks(concurrencies, [str(c) for c in concurrencies])
        ax.xaxis.set_minor_locator(ticker.NullLocator())
        ax.set_xlabel("concurrent clients")
        ax.grid(True, which="both", alpha=0.3)
    throughput_ax.set_ylabel("inputs / s")
    throughput_ax.set_ylim(bottom=0)
    throughput_ax.set_title("Throughput")
    latency_ax.set_yscale("log")
    latency_ax.yaxis.set_major_locator(ticker.LogLocator(base=10, subs=(1.0, 2.0, 5.0)))
    latency_ax.yaxis.set_major_formatter(ticker.FuncFormatter(lambda y, _: f"{y:g}"))
    latency_ax.yaxis.set_minor_formatter(ticker.NullFormatter())
    latency_ax.set_ylabel("p95 latency (ms)")
    latency_ax.set_title("p95 latency")
    throughput_ax.legend(loc="best", fontsize="small")
    fig.suptitle(f"{report.meta.get('model_name', 'model')} on {report.machine}")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def render_markdown(report: Report, plot_name: str = "plot.png") -> str:
    meta = report.meta
    lines = [
        f"# Benchmark: {meta.get('model_name', 'model')} on `{report.machine}`",
        "",
        f"Measured {meta.get('started_at', '?')} by `{meta.get('command', 'python -m bench')}`. "
        f"{meta.get('cpu', '')}, {meta.get('cores', '?')} cores; torch {meta.get('torch', '?')}, "
        f"transformers {meta.get('transformers', '?')}.",
        "",
        _noise_note(meta),
        "",
        f"Corpus: {meta.get('corpus', {}).get('description', '?')}. Closed loop: each client "
        "sends its next request when the last is answered, one input per request, "
        f"`encoding_format={meta.get('encoding_format', 'float')}`. {_rounds_note(meta)}",
        "",
        _settings_note(meta),
        "",
        f"![throughput and p95 latency vs concurrency]({plot_name})",
        "",
        "## Targets",
        "",
        *_targets_table(report.ratios()),
        "",
        "## Results",
        "",
        *_results_table(report.levels),
        "",
    ]
    if report.mixed_levels:
        lines += [
            "## Mixed corpus",
            "",
            f"Corpus: {meta.get('mixed_corpus', {}).get('description', '?')}: one input in five "
            "is a paragraph, so a batch that mixes lengths pays for padding unless it is cut by "
            "length (the limit cuts with the server's own rule). Same settings and rounds.",
            "",
            *_results_table(report.mixed_levels),
            "",
        ]
    if report.overhead:
        lines += ["## Serving overhead", "", *_overhead_lines(report.overhead), ""]
    if report.fairness:
        lines += ["## A small request behind a bulk one", "", *_fairness_lines(report.fairness), ""]
    lines += ["## Cold start", "", *_cold_start_table(report.cold_start), ""]
    return "\n".join(lines)


def _overhead_lines(overhead: dict[str, Any]) -> list[str]:
    rounds = overhead["rounds"]
    rows = [
        f"Our server (default settings: {_settings_list(overhead['settings'].get('server', {}))}) "
        "on a 1-layer, 32-wide BERT with MiniLM's tokenizer (bench/tinymodel.py), so the forward "
        "pass is nearly free, against the framework floor (bench/floor_server.py: the same "
        "uvicorn/httptools/uvloop stack, Starlette, parses the same JSON, answers a fixed base64 "
        f"vector). {overhead['clients']} keep-alive clients, one short input per request, base64, "
        f"{overhead['requests']} measured requests per round, the two taking turns round by round. "
        "CPU per request: the process's own CPU time (every thread) over the round.",
        "",
        "| system | requests/s by round | median | CPU us/request (median) | load average |",
        "|---|---|---:|---:|---|",
    ]
    for name, values in rounds.items():
        rates = [r["requests_per_s"] for r in values]
        cpu = [r["cpu_us_per_request"] for r in values if r["cpu_us_per_request"]]
        loads = ", ".join(f"{r['load_average']:.1f}" for r in values)
        rows.append(
            f"| {name} | {', '.join(f'{x:.0f}' for x in rates)} | {statistics.median(rates):.0f} "
            f"| {statistics.median(cpu):.0f} | {loads} |"
            if cpu
            else f"| {name} | {', '.join(f'{x:.0f}' for x in rates)} | - | - | {loads} |"
        )
    return rows


def _fairness_lines(fairness: dict[str, Any]) -> list[str]:
    runs = fairness["runs"]
    rows = [
        f"A request of {fairness['bulk_inputs']} paragraphs (several batches of work), then "
        f"{fairness['head_start_s']} s later a one-sentence request (bench/fairness.py). Round-"
        "robin windows of one batch: the small request should wait for about the window that "
        "is running, not for the whole bulk request (share 1.0: first come, first served).",
        "",
        "| run | small alone ms | small behind bulk ms | bulk ms | small / bulk |",
        "|---:|---:|---:|---:|---:|",
    ]
    for i, run in enumerate(runs, start=1):
        rows.append(
            f"| {i} | {run['small_alone_ms']:.0f} | {run['small_behind_bulk_ms']:.0f} | "
            f"{run['bulk_ms']:.0f} | {run['share_of_bulk']:.2f} |"
        )
    return rows


def _settings_list(settings: dict[str, str]) -> str:
    return ", ".join(f"`{k}={v}`" for k, v in sorted(settings.items())) or "defaults"


def _settings_note(meta: dict[str, Any]) -> str:
    # As _start_server merges them: the benchmark's own settings win over the environment.
    settings = {**meta.get("embed_env", {}), **meta.get("server_settings", {})}
    listed = ", ".join(f"`{name}={value}`" for name, value in sorted(settings.items()))
    return f"Our server's settings from the benchmark and the environment: {listed or 'defaults'}."


def _rounds_note(meta: dict[str, Any]) -> str:
    rounds = meta.get("rounds", "?")
    return (
        f"Each concurrency runs {rounds} rounds; in each round the limit, our server and the naive "
        "server run one after another, each one continuous loop of warm-up requests (not counted) "
        "and then measured ones, so that a round's systems see the same machine speed. Throughput "
        "is read over the steady-state window from the first measured request sent to the one "
        "after the last measured request sent (bench/segment.py); the table pools the rounds."
    )


def _targets_table(ratios: Sequence[Ratio]) -> list[str]:
    rows = ["| ratio | value | range over rounds | target | |", "|---|---:|---:|---:|---|"]
    for r in ratios:
        sign = ">=" if r.higher_is_better else "<="
        value = f"{r.value:.2f}{r.unit}" if r.measured else "not measured"
        spread = f"{r.low:.2f} to {r.high:.2f}{r.unit}" if r.measured else ""
        verdict = ("met" if r.met else "**missed**") if r.measured else ""
        rows.append(f"| {r.name} | {value} | {spread} | {sign} {r.target:g}{r.unit} | {verdict} |")
    measured = [r for r in ratios if r.measured]
    if measured:
        rows += [
            "",
            f"Each value is the median of {len(measured[0].rounds)} paired rounds (range: the "
            "lowest and highest round): a round's ratio compares systems measured seconds apart.",
        ]
    return rows


def _noise_note(meta: dict[str, Any]) -> str:
    start, end = meta.get("load_average_start"), meta.get("load_average_end")
    if not start or not end:
        return ""
    return (
        f"1-minute load average {start[0]:.2f} at the start and {end[0]:.2f} at the end (the "
        "benchmark itself accounts for up to the core count; more means other work shared the CPU "
        "and the numbers are noisy)."
    )


def _results_table(levels: Sequence[LevelStats]) -> list[str]:
    rows = [
        "| system | clients | requests | inputs/s | inputs/s by round | tokens/s | p50 ms | "
        "p95 ms | p99 ms | 429 share | errors | mean batch | CPU ms/input |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    order = {system: i for i, system in enumerate(SYSTEMS)}
    for s in sorted(levels, key=lambda s: (order.get(s.system, 99), s.concurrency)):
        batch = _optional(s.mean_batch_size, ".1f")
        cpu = _optional(s.cpu_ms_per_input, ".2f")
        requests = f"{s.requests}{' (cut short)' if s.cut_short else ''}"
        rows.append(
            f"| {s.system} | {s.concurrency} | {requests} | {s.inputs_per_s:.1f} | "
            f"{_round_range(s.rounds_inputs_per_s)} | {s.tokens_per_s:.0f} | {s.p50_ms:.1f} | "
            f"{s.p95_ms:.1f} | {s.p99_ms:.1f} | {s.share_429:.1%} | {s.errors} | {batch} | {cpu} |"
        )
    rows += [
        "",
        "requests, inputs/s, tokens/s and the percentiles pool all rounds; inputs/s by round is "
        "the lowest and highest round.",
        "",
        "CPU ms/input: CPU time of the system under test (every thread of the server process; "
        "the benchmark process for the limit) per embedded input. It includes torch's threads "
        "waiting for each other, so it is less, not entirely, immune to other load on the machine.",
    ]
    return rows


def _round_range(values: Sequence[float]) -> str:
    return f"{min(values):.0f}-{max(values):.0f}" if values else ""


def _optional(value: float | None, spec: str) -> str:
    return "" if value is None else format(value, spec)


_COLD_START_LABELS = {
    "server_ready_s": "our server: process start to /ready 200",
    "server_model_load_s": "our server: model load + warm-up (its own gauge)",
    "naive_ready_s": "naive server: process start to /ready 200",
    "bare_total_s": "bare model load: process start to model loaded (imports + weights)",
    "bare_import_s": "of which importing torch + transformers",
    "bare_load_s": "of which tokenizer + weights from disk",
}


def _cold_start_table(cold_start: dict[str, float | None]) -> list[str]:
    rows = ["| what | seconds |", "|---|---:|"]
    for key, label in _COLD_START_LABELS.items():
        value = cold_start.get(key)
        if value is not None:
            rows.append(f"| {label} | {value:.2f} |")
    return rows
