"""The report of one run: JSON (everything), a markdown table, a PNG plot, and the key ratios vs
targets."""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bench.stats import SYSTEM_LABELS, SYSTEMS, LevelStats

REFERENCE_CONCURRENCY = 64
"""Where the throughput targets are read (issue #6): many clients, the batcher's home ground."""
SERVER_VS_LIMIT_TARGET = 0.90
SERVER_VS_NAIVE_TARGET = 4.0
SINGLE_LATENCY_GAP_TARGET_MS = 5.0


@dataclass(frozen=True)
class Ratio:
    name: str
    value: float
    target: float
    higher_is_better: bool
    unit: str = "x"

    @property
    def met(self) -> bool:
        if math.isnan(self.value):
            return False
        return self.value >= self.target if self.higher_is_better else self.value <= self.target

    def line(self) -> str:
        sign = ">=" if self.higher_is_better else "<="
        verdict = "met" if self.met else "MISSED"
        value, target = f"{self.value:.2f}{self.unit}", f"{self.target:g}{self.unit}"
        return f"{self.name}: {value} (target {sign} {target}: {verdict})"


@dataclass
class Report:
    machine: str
    meta: dict[str, Any]
    """Machine, versions, configuration, corpus, timings, load: what reproduces it."""
    levels: list[LevelStats] = field(default_factory=list)
    cold_start: dict[str, float | None] = field(default_factory=dict)

    def level(self, system: str, concurrency: int) -> LevelStats | None:
        for stats in self.levels:
            if stats.system == system and stats.concurrency == concurrency:
                return stats
        return None

    def ratios(self) -> list[Ratio]:
        """The issue's targets, from the measured levels (NaN where one is missing)."""
        nan = float("nan")
        c = REFERENCE_CONCURRENCY
        server, limit, naive = (self.level(s, c) for s in ("server", "limit", "naive"))
        server_1, limit_1 = self.level("server", 1), self.level("limit", 1)
        return [
            Ratio(
                f"server / limit throughput at concurrency {c}",
                _ratio(server.inputs_per_s, limit.inputs_per_s) if server and limit else nan,
                SERVER_VS_LIMIT_TARGET,
                higher_is_better=True,
            ),
            Ratio(
                f"server / naive throughput at concurrency {c}",
                _ratio(server.inputs_per_s, naive.inputs_per_s) if server and naive else nan,
                SERVER_VS_NAIVE_TARGET,
                higher_is_better=True,
            ),
            Ratio(
                "server p50 - limit p50 latency at concurrency 1",
                server_1.p50_ms - limit_1.p50_ms if server_1 and limit_1 else nan,
                SINGLE_LATENCY_GAP_TARGET_MS,
                higher_is_better=False,
                unit=" ms",
            ),
        ]

    def to_dict(self) -> dict[str, Any]:
        return {
            "machine": self.machine,
            "meta": self.meta,
            "levels": [stats.to_dict() for stats in self.levels],
            "cold_start": self.cold_start,
            "ratios": [
                {
                    "name": r.name,
                    "value": r.value,
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
        throughput_ax.plot(xs, [s.inputs_per_s for s in points], marker="o", label=label)
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
        f"`encoding_format={meta.get('encoding_format', 'float')}`. Warm-up is not counted.",
        "",
        f"![throughput and p95 latency vs concurrency]({plot_name})",
        "",
        "## Targets",
        "",
        "| ratio | value | target | |",
        "|---|---:|---:|---|",
    ]
    for r in report.ratios():
        sign = ">=" if r.higher_is_better else "<="
        measured = not math.isnan(r.value)
        value = f"{r.value:.2f}{r.unit}" if measured else "not measured"
        verdict = ("met" if r.met else "**missed**") if measured else ""
        lines.append(f"| {r.name} | {value} | {sign} {r.target:g}{r.unit} | {verdict} |")
    lines += ["", "## Results", "", *_results_table(report.levels), ""]
    lines += ["## Cold start", "", *_cold_start_table(report.cold_start), ""]
    return "\n".join(lines)


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
        "| system | clients | requests | inputs/s | tokens/s | p50 ms | p95 ms | p99 ms | "
        "429 share | errors | mean batch | CPU ms/input |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    order = {system: i for i, system in enumerate(SYSTEMS)}
    for s in sorted(levels, key=lambda s: (order.get(s.system, 99), s.concurrency)):
        batch = _optional(s.mean_batch_size, ".1f")
        cpu = _optional(s.cpu_ms_per_input, ".2f")
        requests = f"{s.requests}{' (cut short)' if s.cut_short else ''}"
        rows.append(
            f"| {s.system} | {s.concurrency} | {requests} | {s.inputs_per_s:.1f} | "
            f"{s.tokens_per_s:.0f} | {s.p50_ms:.1f} | {s.p95_ms:.1f} | {s.p99_ms:.1f} | "
            f"{s.share_429:.1%} | {s.errors} | {batch} | {cpu} |"
        )
    rows += [
        "",
        "CPU ms/input: CPU time of the system under test (every thread of the server process; "
        "the benchmark process for the limit) per embedded input. It includes torch's threads "
        "waiting for each other, so it is less, not entirely, immune to other load on the machine.",
    ]
    return rows


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
