"""What a stack's render deploys for observability: alert rules in chart values, dashboards in
sidecar ConfigMaps, and the kube-state-metrics node-label allowlist their `label_*` selectors
need."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import yaml

from checks.synth_checks import check_deployed_observability, ksm_label_name
from checks.synth_render import StackRender
from infra.alerts import alert_rule_groups
from infra.dashboard import dashboard

ALLOWLIST = ["nodes=[eks.amazonaws.com/capacityType,node.kubernetes.io/instance-type]"]


def _render(
    tmp_path: Path,
    rules: dict[str, Any] | None,
    board_text: str | None,
    allowlist: list[str] | None = ALLOWLIST,
) -> StackRender:
    root = tmp_path / "dev"
    (root / "manifests").mkdir(parents=True)
    (root / "charts").mkdir()
    (root / "inventory.yaml").write_text(
        yaml.safe_dump([{"type": "aws:eks/cluster:Cluster", "inputs": {"version": "1.34"}}])
    )
    values: dict[str, Any] = {"kube-state-metrics": {"enabled": True}}
    if allowlist is not None:
        values["kube-state-metrics"]["metricLabelsAllowlist"] = allowlist
    if rules is not None:
        values["serverFiles"] = {"alerting_rules.yml": rules}
    chart = {"chart": "prometheus", "version": "27.0.0", "values": values}
    (root / "charts" / "monitoring-prometheus.yaml").write_text(yaml.safe_dump(chart))
    if board_text is not None:
        config_map = {
            "apiVersion": "v1",
            "kind": "ConfigMap",
            "metadata": {
                "name": "gpu-inference-dashboard",
                "namespace": "monitoring",
                "labels": {"grafana_dashboard": "1"},
            },
            "data": {"gpu-inference.json": board_text},
        }
        path = root / "manifests" / "monitoring-configmap-gpu-inference-dashboard.yaml"
        path.write_text(yaml.safe_dump(config_map))
    return StackRender("dev", root)


def test_render_reader_finds_the_cluster_version(tmp_path: Path) -> None:
    render = _render(tmp_path, alert_rule_groups(), json.dumps(dashboard()))
    assert render.problems() == []
    assert render.kubernetes_version() == "1.34"


def test_deployed_rules_and_dashboard_pass(promtool: Path, tmp_path: Path) -> None:
    render = _render(tmp_path, alert_rule_groups(), json.dumps(dashboard()))
    result = check_deployed_observability([render], tmp_path / "out")
    assert result.passed, result.render()


def test_missing_rules_and_dashboard_fail(tmp_path: Path) -> None:
    result = check_deployed_observability([_render(tmp_path, None, None)], tmp_path / "out")
    messages = "\n".join(str(f) for f in result.findings)
    assert "no alert rules in any chart's serverFiles" in messages
    assert "no ConfigMap labelled grafana_dashboard" in messages


def test_broken_deployed_rule_and_dashboard_fail(promtool: Path, tmp_path: Path) -> None:
    rules = alert_rule_groups()
    rules["groups"][0]["rules"][0]["expr"] = "kube_deployment_spec_replicas >"
    render = _render(tmp_path, rules, '{"panels": [')
    result = check_deployed_observability([render], tmp_path / "out")
    messages = "\n".join(str(f) for f in result.findings)
    assert "InferencePodsNotReady" in messages
    assert "parse error" in messages
    assert "data[gpu-inference.json]: not valid JSON" in messages


def test_node_label_selector_needs_the_ksm_allowlist(promtool: Path, tmp_path: Path) -> None:
    render = _render(tmp_path, alert_rule_groups(), json.dumps(dashboard()), allowlist=None)
    result = check_deployed_observability([render], tmp_path / "out")
    [finding] = result.findings
    assert "label_eks_amazonaws_com_capacity_type" in finding.message
    assert "metricLabelsAllowlist does not export that node label" in finding.message


def test_ksm_label_names() -> None:
    capacity = ksm_label_name("eks.amazonaws.com/capacityType")
    assert capacity == "label_eks_amazonaws_com_capacity_type"
    instance = ksm_label_name("node.kubernetes.io/instance-type")
    assert instance == "label_node_kubernetes_io_instance_type"
