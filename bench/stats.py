"""One measured point (a system at a concurrency): its rounds, and how they are pooled."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

from bench.segment import Window

SYSTEMS = ("limit", "server", "naive")
"""The three lines of every report: the in-process limit, our server, the naive design."""

SYSTEM_LABELS = {
    "limit": "limit (encoder in-process, ideal batching)",
    "server": "our server (python -m service)",
    "naive": "naive (one forward pass per request)",
}


@dataclass(frozen=True)
class RoundResult:
    """One system's steady-state segment at one concurrency in one round, before pooling."""

    requests: int
    """Measured requests sent."""
    ok: int
    rejected: int
    errors: int
    window: Window
    latencies_s: tuple[float, ...]
    """Of the measured requests that succeeded."""
    cpu_s: float | None
    """CPU time of the system under test over the whole segment, warm-up included."""
    segment_inputs: int
    """Inputs completed over the whole segment: what cpu_s and batch_totals were measured over."""
    batch_totals: tuple[float, float]
    """(inputs, forward passes) over the whole segment."""
    cut_short: bool

    @property
    def inputs_per_s(self) -> float:
        return self.window.inputs_per_s

    @property
    def p50_ms(self) -> float:
        return percentiles_ms(self.latencies_s)[0]


@dataclass(frozen=True)
class LevelStats:
    """A system at a concurrency, pooled over its rounds."""

    system: str
    concurrency: int
    requests: int
    """Measured requests sent, all rounds (warm-up excluded)."""
    ok: int
    rejected: int
    """Answered 429 (overloaded)."""
    errors: int
    """Any other status, a timeout or a broken connection."""
    elapsed_s: float
    """The rounds' steady-state windows, summed."""
    inputs: int
    """Inputs embedded inside those windows (bench/segment.py)."""
    tokens: int
    p50_ms: float
    p95_ms: float
    p99_ms: float
    mean_batch_size: float | None
    """Inputs per forward pass (server: its /metrics; limit: exact; naive: 1 by design)."""
    cpu_ms_per_input: float | None = None
    """CPU time of the system under test per embedded input (all its threads; limit: this process).
    Less sensitive to other load on the machine than wall time: the cost of HTTP and batching."""
    cut_short: bool = False
    """A round hit its time budget and sent fewer requests than planned."""
    rounds_inputs_per_s: tuple[float, ...] = ()
    """Each round's throughput, in round order: the spread, and what paired ratios pair."""
    rounds_p50_ms: tuple[float, ...] = ()
    """Each round's median latency (NaN for a round where nothing succeeded)."""

    @property
    def inputs_per_s(self) -> float:
        return self.inputs / self.elapsed_s if self.elapsed_s > 0 else 0.0

    @property
    def tokens_per_s(self) -> float:
        return self.tokens / self.elapsed_s if self.elapsed_s > 0 else 0.0

    @property
    def share_429(self) -> float:
        return self.rejected / self.requests if self.requests else 0.0

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data.update(
            inputs_per_s=self.inputs_per_s,
            tokens_per_s=self.tokens_per_s,
            share_429=self.share_429,
        )
        return data

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> LevelStats:
        fields = {name: data[name] for name in cls.__dataclass_fields__ if name in data}
        for name in ("rounds_inputs_per_s", "rounds_p50_ms"):  # JSON lists
            fields[name] = tuple(fields.get(name, ()))
        return cls(**fields)


def pool(system: str, concurrency: int, rounds: Sequence[RoundResult]) -> LevelStats:
    """One LevelStats from a system's rounds at one concurrency: counts, windows, CPU and passes
    summed, percentiles over every round's latencies together."""
    p50, p95, p99 = percentiles_ms([latency for r in rounds for latency in r.latencies_s])
    return LevelStats(
        system=system,
        concurrency=concurrency,
        requests=sum(r.requests for r in rounds),
        ok=sum(r.ok for r in rounds),
        rejected=sum(r.rejected for r in rounds),
        errors=sum(r.errors for r in rounds),
        elapsed_s=sum(r.window.elapsed_s for r in rounds),
        inputs=sum(r.window.inputs for r in rounds),
        tokens=sum(r.window.tokens for r in rounds),
        p50_ms=p50,
        p95_ms=p95,
        p99_ms=p99,
        mean_batch_size=_pooled_mean_batch(rounds),
        cpu_ms_per_input=_pooled_cpu_ms(rounds),
        cut_short=any(r.cut_short for r in rounds),
        rounds_inputs_per_s=tuple(r.inputs_per_s for r in rounds),
        rounds_p50_ms=tuple(r.p50_ms for r in rounds),
    )


def _pooled_mean_batch(rounds: Sequence[RoundResult]) -> float | None:
    passes = sum(r.batch_totals[1] for r in rounds)
    return sum(r.batch_totals[0] for r in rounds) / passes if passes > 0 else None


def _pooled_cpu_ms(rounds: Sequence[RoundResult]) -> float | None:
    cpu = [r.cpu_s for r in rounds]
    inputs = sum(r.segment_inputs for r in rounds)
    if not cpu or any(c is None for c in cpu) or inputs == 0:
        return None
    return 1000 * sum(c for c in cpu if c is not None) / inputs


def percentiles_ms(latencies_s: Sequence[float]) -> tuple[float, float, float]:
    """p50, p95, p99 in milliseconds (NaN, not a fake zero, when none succeeded)."""
    if not latencies_s:
        nan = float("nan")
        return nan, nan, nan
    p50, p95, p99 = np.percentile(np.asarray(latencies_s) * 1000.0, [50, 95, 99])
    return float(p50), float(p95), float(p99)
