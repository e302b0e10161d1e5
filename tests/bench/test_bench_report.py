"""Report writer, corpus, the limit's batch selection and the /metrics reader: pure logic."""

from __future__ import annotations

import json
import math
import statistics
from collections import deque
from pathlib import Path

import pytest
from prometheus_client import CollectorRegistry, Gauge, Histogram, generate_latest

from bench import scrape
from bench.corpus import Item, make_corpus, make_texts
from bench.limit import BatchLimits, _Pending, take_batch
from bench.report import Ratio, Report, render_markdown, write_report
from bench.stats import LevelStats, percentiles_ms


def _level(
    system: str,
    concurrency: int,
    rounds_inputs_per_s: tuple[float, ...],
    rounds_p50_ms: tuple[float, ...],
) -> LevelStats:
    """Three rounds with equal windows, pooled: throughput the mean, p50 the median round's."""
    inputs_per_s = statistics.mean(rounds_inputs_per_s)
    p50_ms = statistics.median(rounds_p50_ms)
    return LevelStats(
        system=system,
        concurrency=concurrency,
        requests=100,
        ok=98,
        rejected=2 if system == "server" else 0,
        errors=0,
        elapsed_s=100 / inputs_per_s,
        inputs=100,
        tokens=1400,
        p50_ms=p50_ms,
        p95_ms=p50_ms * 2,
        p99_ms=p50_ms * 3,
        mean_batch_size=None if system == "naive" else 8.0,
        cpu_ms_per_input=1.25 if system == "server" else None,
        cut_short=(system, concurrency) == ("naive", 64),
        rounds_inputs_per_s=rounds_inputs_per_s,
        rounds_p50_ms=rounds_p50_ms,
    )


@pytest.fixture
def report() -> Report:
    # The machine speeds up from round to round, then slows down: limit 240, 300, 360 inputs/s.
    levels = [
        _level("limit", 1, (90.0, 90.0, 90.0), (11.0, 12.0, 10.5)),
        _level("limit", 64, (240.0, 300.0, 360.0), (200.0, 200.0, 200.0)),
        _level("server", 1, (80.0, 80.0, 80.0), (13.5, 13.0, 16.5)),
        _level("server", 64, (228.0, 285.0, 270.0), (220.0, 220.0, 220.0)),
        _level("naive", 1, (70.0, 70.0, 70.0), (14.0, 14.0, 14.0)),
        _level("naive", 64, (60.0, 57.0, 63.0), (1000.0, 1000.0, 1000.0)),
    ]
    meta = {
        "model_name": "tiny",
        "cores": 2,
        "rounds": 3,
        "load_average_start": [0.5, 0.4, 0.3],
        "load_average_end": [2.1, 1.0, 0.5],
        "corpus": {"description": "short (10 seeded inputs)"},
    }
    return Report(
        machine="test-machine",
        meta=meta,
        levels=levels,
        cold_start={"server_ready_s": 5.5, "bare_total_s": 4.0, "naive_ready_s": None},
    )


def _by_name(report: Report) -> dict[str, Ratio]:
    return {r.name.split(" at ")[0]: r for r in report.ratios()}


def test_ratios_are_the_median_of_paired_rounds(report: Report) -> None:
    ratios = _by_name(report)
    server_vs_limit = ratios["server / limit throughput"]
    assert server_vs_limit.rounds == pytest.approx((228 / 240, 285 / 300, 270 / 360))
    # Paired, the server keeps 0.95x in two rounds of three; pooled it would read 261 / 300 = 0.87.
    assert server_vs_limit.value == pytest.approx(0.95)
    assert (server_vs_limit.low, server_vs_limit.high) == pytest.approx((0.75, 0.95))
    assert server_vs_limit.met
    server_vs_naive = ratios["server / naive throughput"]
    assert server_vs_naive.rounds == pytest.approx((3.8, 5.0, 270 / 63))
    assert server_vs_naive.value == pytest.approx(270 / 63)
    assert server_vs_naive.met
    latency_gap = ratios["server p50 - limit p50 latency"]
    assert latency_gap.rounds == pytest.approx((2.5, 1.0, 6.0))
    assert latency_gap.value == pytest.approx(2.5)
    assert latency_gap.met  # the median meets the target though one round misses it
    assert latency_gap.line() == (
        "server p50 - limit p50 latency at concurrency 1: 2.50 ms (target <= 5 ms: met); "
        "median of 3 paired rounds (range 1.00 to 6.00 ms)"
    )


def test_one_good_round_is_not_a_pass(report: Report) -> None:
    report.levels = [s for s in report.levels if (s.system, s.concurrency) != ("limit", 64)]
    report.levels.append(_level("limit", 64, (240.0, 330.0, 320.0), (200.0, 200.0, 200.0)))
    server_vs_limit = _by_name(report)["server / limit throughput"]
    assert server_vs_limit.rounds == pytest.approx((0.95, 285 / 330, 270 / 320))
    assert server_vs_limit.value == pytest.approx(285 / 330)  # 0.86: the median round
    assert server_vs_limit.high == pytest.approx(0.95)
    assert not server_vs_limit.met
    assert "0.86x (target >= 0.9x: MISSED)" in server_vs_limit.line()


def test_missing_levels_give_unmeasured_ratios_not_passes(report: Report) -> None:
    report.levels = [s for s in report.levels if s.system != "naive"]
    naive_ratio = _by_name(report)["server / naive throughput"]
    assert naive_ratio.rounds == ()
    assert math.isnan(naive_ratio.value)
    assert math.isnan(naive_ratio.low)
    assert not naive_ratio.measured
    assert not naive_ratio.met
    assert "| server / naive throughput at concurrency 64 | not measured |  |" in render_markdown(
        report
    )


def test_a_round_without_a_value_makes_the_ratio_unmeasured_not_a_pass(report: Report) -> None:
    report.levels = [s for s in report.levels if (s.system, s.concurrency) != ("server", 1)]
    report.levels.append(_level("server", 1, (80.0, 80.0, 80.0), (13.5, math.nan, 13.0)))
    latency_gap = _by_name(report)["server p50 - limit p50 latency"]
    assert math.isnan(latency_gap.value)
    assert not latency_gap.met


def test_write_report_writes_json_markdown_and_png(report: Report, tmp_path: Path) -> None:
    paths = write_report(report, tmp_path / "out")

    data = json.loads(paths["json"].read_text())
    assert Report.from_dict(data).levels == report.levels
    assert data["levels"][3]["inputs_per_s"] == pytest.approx(261.0)
    assert data["levels"][3]["rounds_inputs_per_s"] == [228.0, 285.0, 270.0]
    assert data["levels"][2]["share_429"] == pytest.approx(0.02)
    # The mixed corpus and the serving overhead were not run: not measured, so not met.
    assert [r["met"] for r in data["ratios"]] == [True, True, True, False, False]
    assert [r["rounds"] for r in data["ratios"]][3:] == [[], []]
    assert data["ratios"][0]["value"] == pytest.approx(0.95)
    assert data["ratios"][0]["rounds"] == pytest.approx([0.95, 0.95, 0.75])
    assert (data["ratios"][0]["low"], data["ratios"][0]["high"]) == pytest.approx((0.75, 0.95))

    markdown = paths["markdown"].read_text()
    row = (
        "| server | 64 | 100 | 261.0 | 228-285 | 3654 | 220.0 | 440.0 | 660.0 | 2.0% | 0 | 8.0 "
        "| 1.25 |"
    )
    assert row in markdown
    assert "| naive | 64 | 100 (cut short) | 60.0 | 57-63 |" in markdown
    ratio_row = (
        "| server / limit throughput at concurrency 64 | 0.95x | 0.75 to 0.95x | >= 0.9x | met |"
    )
    assert ratio_row in markdown
    assert "Each value is the median of 3 paired rounds" in markdown
    assert "Each concurrency runs 3 rounds" in markdown
    assert "![throughput and p95 latency vs concurrency](plot.png)" in markdown
    assert "| our server: process start to /ready 200 | 5.50 |" in markdown
    assert "naive server: process start" not in markdown  # None: not measured, not 0
    assert "load average 0.50 at the start and 2.10 at the end" in markdown

    assert paths["plot"].read_bytes().startswith(b"\x89PNG")


def test_percentiles_of_nothing_are_nan() -> None:
    assert all(math.isnan(p) for p in percentiles_ms([]))
    assert percentiles_ms([0.001] * 10) == pytest.approx((1.0, 1.0, 1.0))


def test_corpus_is_fixed_by_seed_and_mixes_lengths() -> None:
    assert make_texts("short", 50, seed=1) == make_texts("short", 50, seed=1)
    assert make_texts("short", 50, seed=1) != make_texts("short", 50, seed=2)
    mixed = make_texts("mixed", 200, seed=0)
    word_counts = [len(text.split()) for text in mixed]
    assert min(word_counts) <= 16 < 100 <= max(word_counts)
    assert all(len(text.split()) <= 16 for text in make_texts("short", 200, seed=0))
    with pytest.raises(ValueError, match="corpus kind 'huge'"):
        make_texts("huge", 10, seed=0)  # type: ignore[arg-type]


def test_corpus_carries_the_counted_tokens() -> None:
    corpus = make_corpus("short", 5, 0, lambda texts: [len(t.split()) + 2 for t in texts])
    assert [item.tokens for item in corpus] == [len(item.text.split()) + 2 for item in corpus]


def test_limit_batches_take_the_shortest_inputs_within_both_limits() -> None:
    lengths = [30, 10, 20, 10, 50]
    queue = deque(_Pending(Item(f"t{i}", n), 0.0, i) for i, n in enumerate(lengths))

    batch = take_batch(queue, BatchLimits(max_batch_size=3, max_batch_tokens=100))
    assert [p.item.tokens for p in batch] == [10, 10, 20]  # 3 x 20 = 60 padded tokens
    assert [p.item.tokens for p in queue] == [30, 50]  # the rest keeps its arrival order

    batch = take_batch(queue, BatchLimits(max_batch_size=3, max_batch_tokens=40))
    assert [p.item.tokens for p in batch] == [30]  # 2 x 50 > 40 padded tokens
    assert [p.item.tokens for p in take_batch(queue, BatchLimits(3, 40))] == [50]  # over: alone


def test_histogram_mean_between_two_scrapes_of_a_real_exposition() -> None:
    registry = CollectorRegistry()
    batch_size = Histogram("inference_batch_size", "inputs per pass", registry=registry)
    Gauge("inference_model_load_seconds", "load", registry=registry).set(3.25)
    batch_size.observe(1)
    before = scrape.histogram_totals(generate_latest(registry).decode(), "inference_batch_size")
    for size in (8, 16, 24):
        batch_size.observe(size)
    text = generate_latest(registry).decode()
    after = scrape.histogram_totals(text, "inference_batch_size")

    assert scrape.mean_between(before, after) == pytest.approx(16.0)
    assert scrape.mean_between(after, after) is None
    assert scrape.gauge_value(text, "inference_model_load_seconds") == pytest.approx(3.25)
    assert scrape.histogram_totals(text, "inference_absent") == (0.0, 0.0)


def test_embedding_body_check_rejects_what_is_not_a_unit_vector() -> None:
    good = json.dumps({"data": [{"embedding": [0.6, 0.8]}]}).encode()
    assert scrape.check_embedding_body(good, 2, "float") == pytest.approx([0.6, 0.8])
    with pytest.raises(scrape.BadEmbeddingResponseError, match="expected 3 dimensions"):
        scrape.check_embedding_body(good, 3, "float")
    with pytest.raises(scrape.BadEmbeddingResponseError, match="unit vector"):
        scrape.check_embedding_body(b'{"data": [{"embedding": [1.0, 1.0]}]}', 2, "float")
    with pytest.raises(scrape.BadEmbeddingResponseError, match="not an embeddings response"):
        scrape.check_embedding_body(b'{"error": {}}', 2, "float")


def _overhead_round(rate: float, cpu_us: float | None) -> dict[str, object]:
    return {
        "requests_per_s": rate,
        "cpu_us_per_request": cpu_us,
        "ok": 2048,
        "errors": 0,
        "load_average": 1.5,
    }


def test_mixed_corpus_serving_overhead_and_fairness_are_reported_paired(report: Report) -> None:
    report.mixed_levels = [
        _level("limit", 64, (100.0, 120.0, 90.0), (500.0, 500.0, 500.0)),
        _level("server", 64, (95.0, 96.0, 99.0), (520.0, 520.0, 520.0)),
    ]
    report.overhead = {
        "clients": 64,
        "requests": 2048,
        "settings": {"server": {"EMBED_SERVED_MODEL_NAME": "tiny"}, "floor": {}},
        "rounds": {
            "server": [_overhead_round(r, 150.0) for r in (3000.0, 2000.0, 3500.0)],
            "floor": [_overhead_round(r, None) for r in (6000.0, 8000.0, 8000.0)],
        },
    }
    report.fairness = {
        "bulk_inputs": 384,
        "head_start_s": 0.5,
        "runs": [
            {
                "small_alone_ms": 15.0,
                "small_behind_bulk_ms": 7000.0,
                "bulk_ms": 21000.0,
                "small_status": 200,
                "bulk_status": 200,
                "share_of_bulk": 1 / 3,
            }
        ],
    }
    ratios = {r.name.split(":")[0]: r for r in report.ratios()}
    mixed = ratios["mixed corpus"]
    assert mixed.rounds == pytest.approx((0.95, 0.8, 1.1))  # round by round, not pooled
    assert mixed.value == pytest.approx(0.95)
    assert mixed.met
    overhead = ratios["serving overhead"]
    assert overhead.rounds == pytest.approx((0.5, 0.25, 0.4375))
    assert not overhead.met  # the median round, 0.44x
    text = render_markdown(report)
    assert "## Mixed corpus" in text
    assert "| server | 3000, 2000, 3500 | 3000 | 150 |" in text
    assert "| 1 | 15 | 7000 | 21000 | 0.33 |" in text
    again = Report.from_dict(json.loads(json.dumps(report.to_dict())))
    assert again.overhead == report.overhead
    assert again.fairness == report.fairness
    assert [s.system for s in again.mixed_levels] == ["limit", "server"]
