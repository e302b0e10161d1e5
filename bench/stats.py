"""One measured point (a system at a concurrency) and how it is summarised."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

SYSTEMS = ("limit", "server", "naive")
"""The three lines of every report: the in-process limit, our server, the naive design."""

SYSTEM_LABELS = {
    "limit": "limit (encoder in-process, ideal batching)",
    "server": "our server (python -m service)",
    "naive": "naive (one forward pass per request)",
}


@dataclass(frozen=True)
class LevelStats:
    system: str
    concurrency: int
    requests: int
    """Requests sent in the measured phase (warm-up excluded)."""
    ok: int
    rejected: int
    """Answered 429 (overloaded)."""
    errors: int
    """Any other status, a timeout or a broken connection."""
    elapsed_s: float
    inputs: int
    """Inputs embedded by the requests that succeeded."""
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
    """The level hit its time budget and sent fewer requests than planned."""

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
        return cls(**{name: data[name] for name in cls.__dataclass_fields__ if name in data})


def percentiles_ms(latencies_s: Sequence[float]) -> tuple[float, float, float]:
    """p50, p95, p99 in milliseconds (NaN, not a fake zero, when none succeeded)."""
    if not latencies_s:
        nan = float("nan")
        return nan, nan, nan
    p50, p95, p99 = np.percentile(np.asarray(latencies_s) * 1000.0, [50, 95, 99])
    return float(p50), float(p95), float(p99)
