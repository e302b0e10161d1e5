"""One steady-state segment of a closed loop: `warmup` unrecorded requests, then `measured` recorded
ones, sent by the same clients without a pause, and the time window its throughput is read over.

A measured phase that starts with every client idle and ends with them draining measures the ramp as
well as the steady state. Here the clients never stop between warm-up and measurement.

The window runs from the moment the first measured request is sent to the moment the request after
the last measured one (the closing request, not recorded) is sent, and its throughput is the inputs
completed inside it. In a closed loop every send follows a completion of the same client, so the
window holds exactly `measured` completions whatever the system does, and both of its ends fall at
the same point of the clients' rotation when `measured` is a multiple of the clients
(SuiteOptions.plan_for). Two simpler windows are biased:

- ending at the last measured completion and counting the measured inputs reads a server that
  answers one request after another (the naive one) low: it still holds c - 1 warm-up requests when
  the first measured one is sent, so the window spends (c - 1) / (measured + c - 1) of its time on
  them, 20 % at 64 clients;
- ending there and counting every completion reads a batching server high: a batch's answers reach
  the clients over a few milliseconds, and the first of them opens the window, so the rest of that
  warm-up batch is counted too (measured: 75 completions for 60 measured requests at 16 clients,
  +25 %).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from tqdm import tqdm


@dataclass(frozen=True)
class SegmentPlan:
    warmup: int
    """Requests sent first and not recorded."""
    measured: int
    """Requests recorded after them."""
    budget_s: float | None = None
    """Per part (warm-up, then measurement): no new request after this long, so a starved machine
    cannot stall a run; what was sent still completes. A cut warm-up hands over to measurement."""

    def __post_init__(self) -> None:
        if self.warmup < 0 or self.measured < 1:
            raise ValueError(f"need warmup >= 0 and measured >= 1, got {self}")


@dataclass(frozen=True)
class Window:
    elapsed_s: float
    """From the first measured request sent to the closing request sent (bench/segment.py)."""
    inputs: int
    """Inputs completed (successfully) inside the window, by any request."""
    tokens: int

    @property
    def inputs_per_s(self) -> float:
        return self.inputs / self.elapsed_s if self.elapsed_s > 0 else 0.0


NO_WINDOW = Window(0.0, 0, 0)
"""Nothing measured was sent."""


class Segment:
    """Which request a closed loop sends next and what completed when (one thread or event loop).

    Requests are numbered in the order they are sent, warm-up included; the caller maps a number to
    its payload and reports each successful completion with `succeeded`. The window needs warmup >=
    clients: then every measured send follows a completion."""

    def __init__(self, plan: SegmentPlan, now: float) -> None:
        self.plan = plan
        self.issued = 0
        self.measured_from: int | None = None
        """Number of the first measured request, once it is sent."""
        self.window_start = math.nan
        self.window_end = math.nan
        """When the closing request was sent; out of time, when the last measured one was."""
        self._deadline = self._after_budget(now)
        self._completions: list[tuple[float, int, int]] = []
        """(time, inputs, tokens) of every successful request."""

    def next(self, now: float) -> int | None:
        """The number of the request to send now, or None: send nothing more."""
        if self.measured_from is None and not self._warming_up(now):
            self.measured_from, self.window_start = self.issued, now
            self._deadline = self._after_budget(now)
        if self.measured_from is not None:
            if self.issued - self.measured_from > self.plan.measured or now >= self._deadline:
                return None
            self.window_end = now
        self.issued += 1
        return self.issued - 1

    def is_measured(self, number: int) -> bool:
        if self.measured_from is None:
            return False
        return self.measured_from <= number < self.measured_from + self.plan.measured

    def succeeded(self, now: float, *, inputs: int, tokens: int) -> None:
        """A request of the segment completed successfully (failures add nothing to count)."""
        self._completions.append((now, inputs, tokens))

    @property
    def measured_sent(self) -> int:
        if self.measured_from is None:
            return 0
        return min(self.issued - self.measured_from, self.plan.measured)

    @property
    def cut_short(self) -> bool:
        return self.measured_sent < self.plan.measured

    @property
    def completed_requests(self) -> int:
        """Successful requests of the whole segment, warm-up and closing request included."""
        return len(self._completions)

    @property
    def completed_inputs(self) -> int:
        """Inputs of the whole segment: what its CPU time was spent on."""
        return sum(inputs for _, inputs, _ in self._completions)

    def window(self) -> Window:
        start, end = self.window_start, self.window_end
        if math.isnan(start):
            return NO_WINDOW
        # Strictly after the start: the completion that freed the first measured client is outside,
        # as the one that freed the closing request's client is inside.
        inside = [(inputs, tokens) for at, inputs, tokens in self._completions if start < at <= end]
        return Window(
            end - start, sum(inputs for inputs, _ in inside), sum(tokens for _, tokens in inside)
        )

    def _warming_up(self, now: float) -> bool:
        return self.issued < self.plan.warmup and now < self._deadline

    def _after_budget(self, now: float) -> float:
        return math.inf if self.plan.budget_s is None else now + self.plan.budget_s


def progress_bar(plan: SegmentPlan, label: str | None) -> tqdm:
    """A progress bar over the whole segment; none without a label (tests)."""
    return tqdm(
        total=plan.warmup + plan.measured + 1,
        desc=label,
        unit="req",
        mininterval=0.5,
        disable=label is None,
    )
