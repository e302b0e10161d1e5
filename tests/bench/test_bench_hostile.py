"""The hostile level's composition and figures: pure logic (the mechanisms each scenario measures
are tested on a live server in tests/service/test_http_limits.py)."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import pytest

from bench.__main__ import build_parser
from bench.hostile.common import HostileOptions, ScenarioResult, server_env
from bench.hostile.level import SCENARIO_NAMES, Scenario, run_level, write_report
from bench.hostile.soak import SoakRun, slope


def test_the_soak_slope_is_the_least_squares_slope() -> None:
    assert slope([(0, 100), (60, 160), (120, 220)]) == pytest.approx(1.0)
    assert slope([(t, 500 + (-1) ** t) for t in range(100)]) == pytest.approx(0.0, abs=0.01)
    assert slope([(0, 5)]) == 0.0


def test_the_soak_figure_leaves_out_the_warm_up() -> None:
    """Pools and caches fill in the first tenth: a jump there is not a slope."""
    samples = [(t, 400.0 if t < 60 else 600.0) for t in range(0, 600, 2)]
    run = SoakRun("glibc", 600.0, samples, requests=10, inputs=20, errors=0)
    assert run.slope_mb_per_min == pytest.approx(0.0)
    assert "+0.0 MB/min" in run.line()


@dataclasses.dataclass
class OtherResult:
    goodput_ratio: float
    client_timeouts: int


def test_a_scenario_of_another_module_joins_the_level_with_one_entry(tmp_path: Path) -> None:
    ours = ScenarioResult("ours")
    ours.add("figure", "42 MB")
    scenarios = [
        Scenario("ours", lambda _: ours),
        Scenario("overload", lambda _: OtherResult(0.85, 0)),
        Scenario("skipped", lambda _: pytest.fail("not asked for")),
    ]
    options = HostileOptions(model="m", log_dir=tmp_path)
    results = run_level(options, ("ours", "overload"), scenarios)
    assert [r.name for r in results] == ["ours", "overload"]
    assert [(f.label, f.value) for f in results[1].figures] == [
        ("goodput_ratio", "0.85"),
        ("client_timeouts", "0"),
    ]
    paths = write_report(results, {"machine": "test"}, tmp_path)
    markdown = paths["markdown"].read_text()
    assert "## overload" in markdown
    assert "| goodput_ratio | 0.85 |" in markdown
    assert json.loads(paths["json"].read_text())["scenarios"][0]["figures"][0]["value"] == "42 MB"


def test_the_servers_allocator_is_chosen_per_scenario(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("LD_PRELOAD", "/somewhere/libjemalloc.so.2")
    options = HostileOptions(model="m", log_dir=Path("."), server_env=(("EMBED_X", "1"),))
    glibc = server_env(options, "glibc")
    assert "LD_PRELOAD" not in glibc  # the caller's preload does not leak into the glibc run
    assert glibc["EMBED_X"] == "1"
    assert glibc["HF_HUB_OFFLINE"] == "1"
    with pytest.raises(ValueError, match="unknown allocator"):
        server_env(options, "tcmalloc")


def test_the_cli_refuses_unknown_scenarios_and_allocators(
    capsys: pytest.CaptureFixture[str],
) -> None:
    args = build_parser().parse_args(["--hostile", "--scenarios", "soak,413"])
    assert args.scenarios == ("soak", "413")
    assert set(args.scenarios) <= set(SCENARIO_NAMES)
    for bad in (["--scenarios", "fuzz"], ["--allocators", "tcmalloc"], ["--soak-minutes", "0"]):
        with pytest.raises(SystemExit):
            build_parser().parse_args(["--hostile", *bad])
    assert "choose from" in capsys.readouterr().err
