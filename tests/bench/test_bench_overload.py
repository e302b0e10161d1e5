"""The overload scenario (bench/overload.py) end to end, in miniature: our server on the tiny
model, a second of each phase. It checks the mechanics and the report, not the figures (those come
from `python -m bench.overload` on a quiet machine)."""

from __future__ import annotations

import asyncio
import json
import time
from pathlib import Path
from typing import cast

import pytest

from bench import overload
from bench.hostile.common import HostileOptions
from bench.hostile.level import SCENARIO_NAMES, run_level
from bench.httpclient import Connection, Response
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


def test_the_latency_from_the_first_send_includes_the_retry_waits(result: OverloadResult) -> None:
    """Each request's first-send latency is at least its admitted attempt's, so every quantile
    is; and fewer requests are in time from their first send than from their admitted attempt."""
    assert result.first_send_p50_s is not None
    assert result.latency_p50_s is not None
    assert result.first_send_p50_s >= result.latency_p50_s
    assert result.answered_in_time_from_first_send <= result.answered - result.answered_late
    assert "from the first send" in "\n".join(result.lines())


class AnsweringConnection:
    """Answers every request 200 at once."""

    async def send(self, body: bytes) -> Response:
        return Response(200, {}, b"{}")


def test_an_answer_after_the_window_is_not_counted() -> None:
    """Work finished after the window, divided by the window's length, read as more than the
    capacity (1.17x in a stored run)."""
    phase = overload._Phase("127.0.0.1", 1, [b"x"], Scenario(inputs=8))
    tally = overload._Tally()
    now = time.perf_counter()
    connection = cast(Connection, AnsweringConnection())
    assert asyncio.run(phase._send(connection, b"x", tally, first=now, end=now - 1)) is None
    assert (tally.answered, tally.answered_inputs, tally.after_window) == (0, 0, 1)
    assert asyncio.run(phase._send(connection, b"x", tally, first=now - 9, end=now + 60)) is None
    assert (tally.answered, tally.in_time_inputs, tally.late) == (1, 8, 0)  # the attempt: in time
    assert tally.first_send_s[0] >= 9  # but 9 s after the request was first sent
