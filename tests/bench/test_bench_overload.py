"""The overload scenario (bench/overload.py) end to end, in miniature: our server on the tiny
model, a second of each phase. It checks the mechanics and the report, not the figures (those come
from `python -m bench.overload` on a quiet machine)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from bench import overload
from bench.hostile.common import HostileOptions
from bench.hostile.level import SCENARIO_NAMES, run_level
from bench.modelfiles import default_model_path
from bench.overload import OverloadResult, Scenario, _retry_after, run
from bench.tinymodel import build_tiny_model


@pytest.fixture(scope="module")
def result(tmp_path_factory: pytest.TempPathFactory) -> OverloadResult:
    model = build_tiny_model(default_model_path(), tmp_path_factory.mktemp("tiny") / "model")
    scenario = Scenario(
        capacity_clients=2,
        overload_factor=16,
        inputs=2,
        capacity_s=1.0,
        overload_s=2.0,
        warmup_s=0.5,
        client_timeout_s=30.0,
    )
    return run(scenario=scenario, model=str(model))


def test_the_scenario_measures_capacity_goodput_and_refusals(result: OverloadResult) -> None:
    assert result.capacity_inputs_per_s > 0
    assert result.capacity_clients in (2, 4)  # the better of the two capacity phases
    assert result.overload_clients == 32
    assert result.answered > 0
    assert (result.client_timeouts, result.errors) == (0, 0), result.error_samples
    assert result.goodput_inputs_per_s == pytest.approx(
        (result.answered - result.answered_late) * 2 / result.overload_s
    )
    assert result.ready_p50_ms is not None
    assert result.queue_seconds_p50 is not None  # the server's own estimate, scraped


def test_the_report_and_the_json_carry_the_figures(result: OverloadResult) -> None:
    text = "\n".join(result.lines())
    assert f"= {result.goodput_ratio:.2f}x capacity" in text
    assert f"{result.client_timeouts} client timeouts" in text
    assert "/ready while shedding" in text
    figures = json.loads(json.dumps(result.to_json()))
    assert figures["goodput_ratio"] == pytest.approx(result.goodput_ratio)
    assert Path(figures["server"].split(" in ", 1)[1]).is_dir()


def test_clients_wait_as_the_openai_sdk_reads_retry_after() -> None:
    assert _retry_after({"retry-after-ms": "1500", "retry-after": "2"}) == 1.5
    assert _retry_after({"retry-after": "3"}) == 3.0
    assert _retry_after({}) == 1.0


def test_the_hostile_level_runs_it_on_the_levels_server_and_reports_the_ratio(
    result: OverloadResult, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """One entry in bench/hostile/level.py's SCENARIOS: the level's model, source tree (the
    "before" of a change) and settings reach the scenario; its figures reach the report."""
    assert "overload" in SCENARIO_NAMES
    asked: list[dict[str, object]] = []

    def measured(**kwargs: object) -> OverloadResult:
        asked.append(kwargs)
        return result

    monkeypatch.setattr(overload, "run", measured)
    options = HostileOptions(
        model="model-dir",
        log_dir=tmp_path,
        server_src=tmp_path / "old",
        server_env=(("EMBED_MAX_QUEUE_SECONDS", "2"),),
    )
    (report,) = run_level(options, ("overload",))
    assert asked == [
        {
            "model": "model-dir",
            "source_dir": tmp_path / "old",
            "server_env": {"EMBED_MAX_QUEUE_SECONDS": "2"},
        }
    ]
    values = [figure.value for figure in report.figures]
    assert values[:2] == [
        f"{result.goodput_ratio:.2f}x (target >= 0.8)",
        f"{result.client_timeouts} (target none)",
    ]
    assert any(note.startswith("capacity") for note in report.notes)
