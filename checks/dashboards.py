"""Grafana dashboards: valid dashboard JSON, every PromQL expression parses (promtool), every metric
exists, every variable is defined, and the committed export equals what infra/dashboard.py
generates."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

from checks import tools
from checks.metric_catalog import UNKNOWN_METRIC_HINT, metric_source
from checks.promql import (
    grafana_variables,
    metric_names,
    parse_expressions,
    substitute_grafana_variables,
    uses_name_matcher,
)
from checks.report import CheckResult
from infra.dashboard import EXPORT_PATH, dashboard, render

_GRID_WIDTH = 24


def check_dashboard(path: Path = EXPORT_PATH, expected: str | None = None) -> CheckResult:
    """Check one dashboard file; `expected` is the text it must equal (default: the generated
    export)."""
    result = CheckResult(f"dashboard {tools.relative(path)}")
    subject = tools.relative(path)
    if not path.is_file():
        result.fail(subject, "missing: run `python -m infra.dashboard` to write the export")
        return result
    text = path.read_text()
    try:
        board = json.loads(text)
    except json.JSONDecodeError as error:
        result.fail(
            subject, f"not valid JSON: {error.msg} at line {error.lineno} column {error.colno}"
        )
        return result
    if not isinstance(board, dict):
        result.fail(subject, "not a dashboard: the top level must be a JSON object")
        return result
    if path.resolve() == EXPORT_PATH.resolve() and expected is None:
        expected = render(dashboard())
    if expected is not None and text != expected:
        result.fail(
            subject,
            "differs from infra/dashboard.py's dashboard(): regenerate it with `python -m "
            "infra.dashboard`",
        )
    validate_board(board, subject, result)
    return result


def validate_board(board: dict[str, Any], subject: str, result: CheckResult) -> None:
    """Structure, variables, PromQL syntax and metric names of one dashboard."""
    _check_structure(board, subject, result)
    _check_expressions(board, subject, result)


def expressions(board: dict[str, Any]) -> list[str]:
    return [t["expr"] for _, t in _targets(board) if isinstance(t.get("expr"), str)]


def _targets(board: dict[str, Any]) -> list[tuple[str, dict[str, Any]]]:
    """(label, target) for every query target: annotation queries, then panels (rows' nested
    panels included)."""
    found: list[tuple[str, dict[str, Any]]] = []
    for annotation in (board.get("annotations") or {}).get("list") or []:
        if isinstance(annotation.get("target"), dict):
            found.append((f"annotation {annotation.get('name')!r}", annotation["target"]))
    for panel in _all_panels(board):
        label = f"panel {panel.get('id')} {panel.get('title')!r}"
        for target in panel.get("targets") or []:
            found.append((label, target))
    return found


def _all_panels(board: dict[str, Any]) -> list[dict[str, Any]]:
    panels: list[dict[str, Any]] = []
    for panel in board.get("panels") or []:
        panels.append(panel)
        panels.extend(panel.get("panels") or [])  # a collapsed row keeps its panels inside
    return panels


def _check_structure(board: dict[str, Any], subject: str, result: CheckResult) -> None:
    for key, kind in (("uid", str), ("title", str), ("schemaVersion", int), ("panels", list)):
        if not isinstance(board.get(key), kind):
            result.fail(subject, f"top-level {key!r} must be a {kind.__name__}")
    seen_ids: set[Any] = set()
    for panel in _all_panels(board):
        label = f"panel {panel.get('id')} {panel.get('title')!r}"
        result.inspected += 1
        if not isinstance(panel.get("id"), int) or panel["id"] in seen_ids:
            result.fail(subject, f"{label}: every panel needs a unique integer id")
        seen_ids.add(panel.get("id"))
        grid = panel.get("gridPos") or {}
        if not all(isinstance(grid.get(k), int) for k in ("h", "w", "x", "y")):
            result.fail(subject, f"{label}: gridPos needs integer h, w, x and y")
        elif grid["x"] + grid["w"] > _GRID_WIDTH or grid["w"] < 1 or grid["h"] < 1:
            result.fail(subject, f"{label}: gridPos {grid} does not fit Grafana's 24-column grid")
        if panel.get("type") == "row":
            continue
        if not panel.get("targets"):
            result.fail(subject, f"{label}: has no query targets")
        ref_ids = [t.get("refId") for t in panel.get("targets") or []]
        if len(ref_ids) != len(set(ref_ids)) or not all(ref_ids):
            result.fail(
                subject, f"{label}: targets need distinct, non-empty refIds (got {ref_ids})"
            )


def _check_expressions(board: dict[str, Any], subject: str, result: CheckResult) -> None:
    defined = {v.get("name") for v in (board.get("templating") or {}).get("list") or []}
    to_parse: dict[str, str] = {}
    labels: dict[str, str] = {}
    for index, (label, target) in enumerate(_targets(board)):
        expr = target.get("expr")
        where = f"{label} target {target.get('refId')}"
        if not isinstance(expr, str) or not expr.strip():
            result.fail(subject, f"{where}: no PromQL expression")
            continue
        result.inspected += 1
        for variable in sorted(grafana_variables(expr) - defined):
            result.fail(subject, f"{where}: uses ${variable}, which the dashboard does not define")
        if uses_name_matcher(expr):
            result.fail(
                subject, f"{where}: selects metrics by __name__; name them so they can be verified"
            )
        for metric in sorted(metric_names(expr)):
            if metric_source(metric) is None:
                result.fail(subject, f"{where}: unknown metric {metric!r}: {UNKNOWN_METRIC_HINT}")
        key = f"expr_{index}_" + re.sub(r"\W", "_", str(target.get("refId")))
        to_parse[key] = substitute_grafana_variables(expr)
        labels[key] = where
    if not to_parse:
        return
    parsed = parse_expressions(to_parse)
    if parsed is None:
        tools.PROMTOOL.report_missing(result, subject)
        return
    if isinstance(parsed, str):
        result.fail(subject, parsed)
        return
    for error in parsed:
        result.fail(subject, f"{labels[error.key]}: PromQL does not parse: {error.message}")
