"""Steady-state segments, pooling rounds and the paired round order: pure logic, hand-fed clocks."""

from __future__ import annotations

import math
from pathlib import Path

import pytest

from bench.limit import BatchLimits
from bench.report import Report
from bench.segment import NO_WINDOW, Segment, SegmentPlan, Window
from bench.stats import RoundResult, pool
from bench.suite import SuiteOptions, _Context, _run_level


def test_segment_numbers_warm_up_measured_and_closing_requests_in_one_loop() -> None:
    segment = Segment(SegmentPlan(warmup=2, measured=3), now=0.0)
    # One client, one second per request.
    for t in range(6):
        number = segment.next(float(t))
        assert number == t
        assert segment.is_measured(number) == (2 <= t < 5)  # 5: the closing request
        segment.succeeded(t + 1.0, inputs=1, tokens=10)
    assert segment.next(6.0) is None
    # From the first measured send (t=2) to the closing send (t=5): three completions.
    assert segment.window() == Window(elapsed_s=3.0, inputs=3, tokens=30)
    assert (segment.measured_sent, segment.cut_short) == (3, False)
    assert (segment.completed_requests, segment.completed_inputs) == (6, 6)


def test_window_reads_a_server_answering_one_request_at_a_time_at_its_rate() -> None:
    # Two clients, a server that answers one request per second.
    segment = Segment(SegmentPlan(warmup=2, measured=2), now=0.0)
    assert [segment.next(0.0), segment.next(0.0)] == [0, 1]
    segment.succeeded(1.0, inputs=1, tokens=10)
    assert segment.next(1.0) == 2  # the first measured request: the window opens
    segment.succeeded(2.0, inputs=1, tokens=10)  # a warm-up request, answered inside the window
    assert segment.next(2.0) == 3
    segment.succeeded(3.0, inputs=1, tokens=10)
    assert segment.next(3.0) == 4  # the closing request: the window closes
    assert segment.next(4.0) is None
    # 1 input/s, the server's rate. Counting the measured requests up to the last one's answer
    # (t=4) would read 2 inputs in 3 s.
    assert segment.window() == Window(elapsed_s=2.0, inputs=2, tokens=20)


def test_window_reads_a_batching_server_at_its_rate() -> None:
    # Two clients, a server that answers both in one batch per second; the answers of a batch
    # reach the clients 10 ms apart.
    segment = Segment(SegmentPlan(warmup=2, measured=2), now=0.0)
    assert [segment.next(0.0), segment.next(0.0)] == [0, 1]
    segment.succeeded(1.0, inputs=1, tokens=10)
    assert segment.next(1.0) == 2  # the window opens
    segment.succeeded(1.01, inputs=1, tokens=10)  # the rest of the warm-up batch
    assert segment.next(1.01) == 3
    segment.succeeded(2.0, inputs=1, tokens=10)
    assert segment.next(2.0) == 4  # the window closes at the same point of the next batch
    segment.succeeded(2.01, inputs=1, tokens=10)
    assert segment.next(2.01) is None
    # 2 inputs/s; every completion up to the last measured answer (t=2.01) would read 3 in 1.01 s.
    assert segment.window() == Window(elapsed_s=1.0, inputs=2, tokens=20)


def test_a_warm_up_out_of_time_hands_over_to_measurement() -> None:
    segment = Segment(SegmentPlan(warmup=100, measured=2, budget_s=1.0), now=0.0)
    assert [segment.next(0.0), segment.next(0.5)] == [0, 1]
    assert segment.next(1.0) == 2  # the warm-up's budget is spent: measured from here
    assert segment.is_measured(2)
    assert not segment.is_measured(1)
    assert segment.window_start == 1.0
    assert segment.next(1.9) == 3  # measurement has its own budget
    assert segment.next(1.95) == 4
    assert not segment.is_measured(4)
    assert segment.next(2.0) is None
    assert not segment.cut_short


def test_measurement_out_of_time_sends_no_more_and_is_cut_short() -> None:
    segment = Segment(SegmentPlan(warmup=0, measured=100, budget_s=1.0), now=0.0)
    assert segment.next(0.0) == 0
    segment.succeeded(0.9, inputs=1, tokens=10)
    assert segment.next(0.9) == 1
    assert segment.next(1.0) is None
    assert (segment.measured_sent, segment.cut_short) == (2, True)
    # No closing request: the window ends at the last send.
    assert segment.window() == Window(elapsed_s=0.9, inputs=1, tokens=10)


def test_nothing_measured_is_no_window() -> None:
    segment = Segment(SegmentPlan(warmup=5, measured=1), now=0.0)
    segment.next(0.0)
    assert segment.window() == NO_WINDOW


def test_a_plan_must_measure_something() -> None:
    with pytest.raises(ValueError, match="measured >= 1"):
        SegmentPlan(warmup=1, measured=0)


def _round(
    window: Window,
    latencies_ms: list[float],
    cpu_s: float | None,
    segment_inputs: int,
    batch_totals: tuple[float, float],
    *,
    cut_short: bool = False,
) -> RoundResult:
    ok = len(latencies_ms)
    return RoundResult(
        requests=10,
        ok=ok,
        rejected=1,
        errors=10 - ok - 1,
        window=window,
        latencies_s=tuple(ms / 1000 for ms in latencies_ms),
        cpu_s=cpu_s,
        segment_inputs=segment_inputs,
        batch_totals=batch_totals,
        cut_short=cut_short,
    )


def test_pool_sums_rounds_and_takes_percentiles_over_all_latencies() -> None:
    rounds = [
        _round(Window(2.0, 12, 120), [10.0] * 9, 1.0, 20, (20.0, 5.0)),
        _round(Window(1.0, 10, 100), [30.0] * 8, 0.5, 10, (10.0, 1.0), cut_short=True),
    ]
    stats = pool("server", 16, rounds)
    assert (stats.system, stats.concurrency) == ("server", 16)
    assert (stats.requests, stats.ok, stats.rejected, stats.errors) == (20, 17, 2, 1)
    assert (stats.elapsed_s, stats.inputs, stats.tokens) == (3.0, 22, 220)
    assert stats.inputs_per_s == pytest.approx(22 / 3)
    assert stats.p50_ms == pytest.approx(10.0)  # 9 of the 17 latencies are 10 ms
    assert stats.p99_ms == pytest.approx(30.0)
    assert stats.cpu_ms_per_input == pytest.approx(1000 * 1.5 / 30)  # CPU over segment inputs
    assert stats.mean_batch_size == pytest.approx(30 / 6)  # summed histogram deltas
    assert stats.cut_short
    assert stats.rounds_inputs_per_s == pytest.approx((6.0, 10.0))
    assert stats.rounds_p50_ms == pytest.approx((10.0, 30.0))


def test_pool_leaves_unknown_cpu_and_batches_unknown() -> None:
    rounds = [
        _round(Window(1.0, 5, 50), [10.0], 1.0, 5, (0.0, 0.0)),
        _round(Window(1.0, 5, 50), [], None, 5, (0.0, 0.0)),
    ]
    stats = pool("naive", 4, rounds)
    assert stats.cpu_ms_per_input is None  # one round without CPU time: no partial figure
    assert stats.mean_batch_size is None
    assert math.isnan(stats.rounds_p50_ms[1])  # nothing succeeded: NaN, not a fake 0
    assert not stats.cut_short


def test_plans_per_round_follow_the_concurrency_in_whole_rotations() -> None:
    options = SuiteOptions("m", "m", Path("out"), Path("log"), "test", rounds=4)
    assert options.plan_for(1) == SegmentPlan(warmup=32, measured=100, budget_s=15.0)
    assert options.plan_for(10) == SegmentPlan(warmup=40, measured=100, budget_s=15.0)
    assert options.plan_for(16) == SegmentPlan(warmup=64, measured=128, budget_s=15.0)
    assert options.plan_for(64) == SegmentPlan(warmup=256, measured=512, budget_s=15.0)
    fixed = SuiteOptions("m", "m", Path("out"), Path("log"), "test", requests=60)
    assert fixed.plan_for(1).measured == 60
    assert fixed.plan_for(16).measured == 64
    assert fixed.plan_for(256) == SegmentPlan(warmup=1024, measured=256, budget_s=12.0)


class _FakeSystem:
    """Records when it ran; its throughput is the round number + 1 (times 10 for the server)."""

    def __init__(self, name: str, calls: list[tuple[str, int, int]]) -> None:
        self.name = name
        self.calls = calls

    def run_round(self, concurrency: int, plan: SegmentPlan, start: int, label: str) -> RoundResult:
        assert label.startswith(f"{self.name:6} c={concurrency} round ")
        round_number = start // (plan.warmup + plan.measured)
        self.calls.append((self.name, concurrency, start))
        rate = (round_number + 1) * (10 if self.name == "server" else 1)
        return _round(Window(1.0, rate, 10 * rate), [10.0], 1.0, rate, (rate, rate))


def test_each_round_runs_every_system_back_to_back_on_the_same_inputs() -> None:
    options = SuiteOptions("m", "m", Path("out"), Path("log"), "test", rounds=3)
    ctx = _Context(options, [], 384, BatchLimits(128, 32768), Report("test", {}))
    calls: list[tuple[str, int, int]] = []
    systems = [_FakeSystem(name, calls) for name in ("limit", "server", "naive")]

    ctx.report.levels += _run_level(ctx, systems, 64)

    per_round = 256 + 512
    assert calls == [
        (name, 64, r * per_round) for r in range(3) for name in ("limit", "server", "naive")
    ]
    assert [(s.system, s.concurrency) for s in ctx.report.levels] == [
        ("limit", 64),
        ("server", 64),
        ("naive", 64),
    ]
    assert ctx.report.levels[1].rounds_inputs_per_s == (10.0, 20.0, 30.0)
    server_vs_limit = ctx.report.ratios()[0]
    assert server_vs_limit.rounds == (10.0, 10.0, 10.0)
