"""infra/dashboard.py and its committed export: the panels the issue asks for, and the dashboard
check failing on each kind of broken dashboard with a message that names the panel."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from checks.dashboards import check_dashboard
from infra.dashboard import EXPORT_PATH, dashboard, render


def _exprs(board: dict[str, Any]) -> dict[str, list[str]]:
    return {
        p["title"]: [t["expr"] for t in p["targets"]] for p in board["panels"] if p["type"] != "row"
    }


def test_committed_export_equals_the_generated_dashboard() -> None:
    assert EXPORT_PATH.read_text() == render(dashboard()), (
        "dashboards/gpu-inference.json is stale: run `python -m infra.dashboard`"
    )


def test_dashboard_has_the_panels_the_issue_lists() -> None:
    exprs = _exprs(dashboard())
    joined = {title: " ".join(e) for title, e in exprs.items()}

    def panel_using(*needles: str) -> bool:
        return any(all(n in text for n in needles) for text in joined.values())

    assert panel_using("rate(inference_requests_total")  # requests/s
    assert panel_using("histogram_quantile(0.5", "histogram_quantile(0.95")  # p50/p95
    assert panel_using('status="429"')
    assert panel_using("sum by (pod) (inference_requests_in_flight")
    assert panel_using("sum by (pod) (inference_queue_items")
    assert panel_using("inference_batch_size_sum", "inference_batch_size_count")
    assert panel_using("rate(inference_tokens_total")
    assert panel_using("kube_horizontalpodautoscaler_status_current_replicas")
    assert panel_using("kube_horizontalpodautoscaler_spec_target_metric")
    assert panel_using("DCGM_FI_DEV_GPU_UTIL", "by (pod)")
    assert panel_using("DCGM_FI_DEV_FB_USED", "by (pod)")
    assert panel_using("label_eks_amazonaws_com_capacity_type")  # spot node count


def test_generated_dashboard_passes_the_check(promtool: Path) -> None:
    result = check_dashboard()
    assert result.passed, result.render()


def _write(tmp_path: Path, board: dict[str, Any]) -> Path:
    path = tmp_path / "board.json"
    path.write_text(json.dumps(board))
    return path


def _first_target(board: dict[str, Any]) -> dict[str, Any]:
    return next(p for p in board["panels"] if p["type"] != "row")["targets"][0]


@pytest.mark.parametrize(
    ("expr", "expected"),
    [
        ("sum(rate(inference_requests_total[5m])", "PromQL does not parse"),
        ("sum(rate(inference_request_total[5m]))", "unknown metric 'inference_request_total'"),
        ('sum(inference_ready{namespace="$nmspace"})', "uses $nmspace"),
        ('sum({__name__=~"inference_.*"})', "selects metrics by __name__"),
    ],
)
def test_broken_expression_fails_naming_the_panel(
    promtool: Path, tmp_path: Path, expr: str, expected: str
) -> None:
    board = dashboard()
    _first_target(board)["expr"] = expr
    result = check_dashboard(_write(tmp_path, board), expected=None)
    assert not result.passed
    messages = [str(f) for f in result.findings]
    assert any(expected in m and "'Requests per second'" in m for m in messages), messages


def test_structural_problems_fail(promtool: Path, tmp_path: Path) -> None:
    board = dashboard()
    panels = [p for p in board["panels"] if p["type"] != "row"]
    panels[1]["id"] = panels[0]["id"]
    panels[2]["gridPos"]["x"] = 20
    panels[3]["targets"].append(dict(panels[3]["targets"][0]))
    result = check_dashboard(_write(tmp_path, board), expected=None)
    messages = "\n".join(str(f) for f in result.findings)
    assert "unique integer id" in messages
    assert "24-column grid" in messages
    assert "distinct, non-empty refIds" in messages


def test_invalid_json_and_stale_export_fail(tmp_path: Path) -> None:
    broken = tmp_path / "broken.json"
    broken.write_text('{"panels": [}')
    result = check_dashboard(broken)
    assert "not valid JSON" in str(result.findings[0])

    stale = tmp_path / "stale.json"
    stale.write_text(render(dashboard(title="old title")))
    result = check_dashboard(stale, expected=render(dashboard()))
    assert any("regenerate it with `python -m infra.dashboard`" in str(f) for f in result.findings)


def test_annotation_queries_are_checked_like_panels(promtool: Path, tmp_path: Path) -> None:
    board = dashboard()
    [annotation] = board["annotations"]["list"]
    assert annotation["target"]["expr"].startswith('ALERTS{alertstate="firing"')
    annotation["target"]["expr"] = 'ALERT{alertstate="firing"} >'
    result = check_dashboard(_write(tmp_path, board), expected=None)
    messages = "\n".join(str(f) for f in result.findings)
    assert "annotation 'Firing alerts'" in messages
    assert "unknown metric 'ALERT'" in messages
    assert "PromQL does not parse" in messages
