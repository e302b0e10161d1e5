"""The `hostile` level: every scenario in SCENARIOS, one after another, each against its own
fresh `python -m service` on loopback, and one report (hostile.md, hostile.json).

A scenario is a name and a function of the level's options that returns its result: a
ScenarioResult (figures rendered as a table), or any dataclass (its fields rendered as a table),
so a scenario from another module joins the level with one line in SCENARIOS, as the overload
scenario of bench/overload.py does.
"""

from __future__ import annotations

import dataclasses
import json
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bench import overload
from bench.hostile import headers, slowconn, soak, stall, toolarge
from bench.hostile.common import HostileOptions, ScenarioResult


@dataclass(frozen=True)
class Scenario:
    name: str
    run: Callable[[HostileOptions], Any]


SCENARIOS: tuple[Scenario, ...] = (
    Scenario("soak", soak.run),
    Scenario("slow", slowconn.run),
    Scenario("headers", headers.run),
    Scenario("stall", stall.run),
    Scenario("413", toolarge.run),
    Scenario("overload", overload.hostile),
)
SCENARIO_NAMES = tuple(scenario.name for scenario in SCENARIOS)


def run_level(
    options: HostileOptions,
    names: Sequence[str] = SCENARIO_NAMES,
    scenarios: Sequence[Scenario] = SCENARIOS,
) -> list[ScenarioResult]:
    results = []
    for scenario in scenarios:
        if scenario.name not in names:
            continue
        start = time.perf_counter()
        print(f"hostile: {scenario.name} ...", flush=True)
        result = as_scenario_result(scenario.name, scenario.run(options))
        result.notes.append(f"scenario took {time.perf_counter() - start:.0f} s")
        results.append(result)
    return results


def as_scenario_result(name: str, result: Any) -> ScenarioResult:
    if isinstance(result, ScenarioResult):
        return result
    converted = ScenarioResult(name)
    if dataclasses.is_dataclass(result) and not isinstance(result, type):
        for key, value in dataclasses.asdict(result).items():
            converted.add(key, value)
    else:
        converted.add("result", result)
    return converted


def render_markdown(results: Sequence[ScenarioResult], meta: dict[str, str]) -> str:
    lines = ["# Hostile traffic", ""]
    lines += [f"- {key}: {value}" for key, value in meta.items()]
    for result in results:
        lines += ["", f"## {result.name}", "", "| what | figure |", "| --- | --- |"]
        lines += [f"| {figure.label} | {figure.value} |" for figure in result.figures]
        if result.notes:
            lines += [""] + [f"- {note}" for note in result.notes]
    return "\n".join(lines) + "\n"


def write_report(
    results: Sequence[ScenarioResult], meta: dict[str, str], out_dir: Path
) -> dict[str, Path]:
    out_dir.mkdir(parents=True, exist_ok=True)
    paths = {"markdown": out_dir / "hostile.md", "json": out_dir / "hostile.json"}
    paths["markdown"].write_text(render_markdown(results, meta))
    data = {"meta": meta, "scenarios": [dataclasses.asdict(r) for r in results]}
    paths["json"].write_text(json.dumps(data, indent=2) + "\n")
    return paths
