"""What each stack really deploys for observability, read from its render: the alert rules in the
Prometheus chart's values, the dashboards in the Grafana-sidecar ConfigMaps, and the
kube-state-metrics node-label allowlist that the dashboard's and alerts' `label_*` selectors need.

infra/alerts.py and infra/dashboard.py are checked with their defaults elsewhere; this checks the
values the program actually rendered for each stack (its namespace, HPA name and thresholds).
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

from checks import tools
from checks.alert_rules import check_rule_metric_names, promtool_check_rules, rule_expressions
from checks.dashboards import expressions, validate_board
from checks.report import CheckResult
from checks.synth_render import StackRender, walk_mappings
from checks.yamlio import dump_yaml

DASHBOARD_LABEL = "grafana_dashboard"
"""The label the Grafana chart's dashboard sidecar watches (its default
`sidecar.dashboards.label`)."""
KSM_VALUES_KEY = "kube-state-metrics"
_NODE_LABEL_SELECTOR = re.compile(r"\blabel_[a-zA-Z0-9_]+")


def deployed_rule_files(render: StackRender) -> list[tuple[str, dict[str, Any]]]:
    """(chart/file, rule file) for every rule file in any chart's `serverFiles` values."""
    found = []
    for chart_name, chart in render.charts().items():
        for mapping in walk_mappings(chart.get("values") or {}):
            server_files = mapping.get("serverFiles")
            if not isinstance(server_files, dict):
                continue
            for file_name, content in server_files.items():
                if isinstance(content, dict) and content.get("groups"):
                    found.append((f"{chart_name}/{file_name}", content))
    return found


def deployed_dashboards(render: StackRender) -> list[tuple[str, dict[str, Any] | str]]:
    """(ConfigMap/key, dashboard or the unparsable text) for every sidecar-labelled ConfigMap."""
    found: list[tuple[str, dict[str, Any] | str]] = []
    for path, obj in render.manifests():
        labels = (obj.get("metadata") or {}).get("labels") or {}
        if obj.get("kind") != "ConfigMap" or DASHBOARD_LABEL not in labels:
            continue
        for key, text in (obj.get("data") or {}).items():
            where = f"{tools.relative(path)} data[{key}]"
            try:
                found.append((where, json.loads(text)))
            except (TypeError, json.JSONDecodeError) as error:
                found.append((where, f"not valid JSON: {error}"))
    return found


def node_label_allowlist(render: StackRender) -> set[str] | None:
    """Node label keys kube-state-metrics exports as `label_*` (None: no kube-state-metrics values
    found)."""
    allowed: set[str] | None = None
    for chart in render.charts().values():
        for mapping in walk_mappings(chart.get("values") or {}):
            ksm = mapping.get(KSM_VALUES_KEY)
            if not isinstance(ksm, dict):
                continue
            allowed = allowed or set()
            for entry in ksm.get("metricLabelsAllowlist") or []:
                resource, _, keys = str(entry).partition("=")
                if resource.strip() == "nodes":
                    allowed.update(k.strip() for k in keys.strip("[]").split(",") if k.strip())
    return allowed


def ksm_label_name(key: str) -> str:
    """kube-state-metrics' metric label for a Kubernetes label key: invalid characters become `_`,
    then camelCase becomes snake_case (labelName() in internal/store/utils.go of
    kubernetes/kube-state-metrics), so eks.amazonaws.com/capacityType is exported as
    label_eks_amazonaws_com_capacity_type."""
    sanitized = re.sub(r"[^a-zA-Z0-9_]", "_", key)
    return "label_" + re.sub(r"([a-z0-9])([A-Z])", r"\1_\2", sanitized).lower()


def check_deployed_observability(renders: list[StackRender], out_dir: Path) -> CheckResult:
    result = CheckResult("deployed alert rules, dashboards and kube-state-metrics labels (synth)")
    for render in renders:
        if render.problems():
            result.fail(f"stack {render.stack}", "no complete render to read (see the synth check)")
            continue
        exprs = _check_rules(render, out_dir, result) + _check_dashboards(render, result)
        _check_node_labels(render, exprs, result)
    return result


def _check_rules(render: StackRender, out_dir: Path, result: CheckResult) -> list[str]:
    rule_files = deployed_rule_files(render)
    if not rule_files:
        result.fail(
            f"stack {render.stack}",
            "no alert rules in any chart's serverFiles: the Prometheus chart must deploy "
            "infra/alerts.py",
        )
    exprs: list[str] = []
    for where, rules in rule_files:
        path = out_dir / render.stack / (where.replace("/", "--") + ".yaml")
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(dump_yaml(rules))
        promtool_check_rules(path, result)
        check_rule_metric_names(rules, result)
        exprs += rule_expressions(rules)
    return exprs


def _check_dashboards(render: StackRender, result: CheckResult) -> list[str]:
    dashboards = deployed_dashboards(render)
    if not dashboards:
        result.fail(
            f"stack {render.stack}",
            f"no ConfigMap labelled {DASHBOARD_LABEL} in the manifests: infra/dashboard.py is not "
            "deployed",
        )
    exprs: list[str] = []
    for where, board in dashboards:
        if isinstance(board, str):
            result.fail(where, board)
            continue
        validate_board(board, f"stack {render.stack}: {where}", result)
        exprs += expressions(board)
    return exprs


def _check_node_labels(render: StackRender, exprs: list[str], result: CheckResult) -> None:
    used = {
        m
        for expr in exprs
        if "kube_node_labels" in expr
        for m in _NODE_LABEL_SELECTOR.findall(expr)
    }
    if not used:
        return
    allowed = node_label_allowlist(render) or set()
    exported = {ksm_label_name(key): key for key in allowed}
    for label in sorted(used - set(exported)):
        result.fail(
            f"stack {render.stack}",
            f"queries use kube_node_labels' {label}, but the Prometheus chart's "
            f"{KSM_VALUES_KEY}.metricLabelsAllowlist does not export that node label "
            "(kube-state-metrics "
            "exports no node labels by default): the panel or alert would stay empty",
        )
