"""The Alertmanager gate: amtool accepts what the program renders, and rejects a broken
configuration or one that drops an alert although the stack has receivers."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml

from checks import tools
from checks.alertmanager_config import check_alertmanager, routed_receivers
from checks.synth_render import StackRender
from infra import alerting
from infra.alerts import alert_rule_groups
from infra.config import AlertReceiver
from tests.checks.conftest import require

RECEIVERS = (
    AlertReceiver("oncall", "pagerduty", ("page",), secret="0123456789abcdef0123456789abcdef"),
    AlertReceiver(
        "chat",
        "slack",
        ("ticket",),
        channel="#gpu",
        secret="https://hooks.slack.com/services/T/B/x",
    ),
    AlertReceiver("bus", "webhook", ("page", "ticket"), url="https://hooks.example.com/am"),
)


@pytest.fixture
def amtool() -> Path:
    return require(tools.AMTOOL)


def _render(tmp_path: Path, config: dict[str, Any], with_rules: bool = True) -> StackRender:
    root = tmp_path / "dev"
    (root / "manifests").mkdir(parents=True, exist_ok=True)
    (root / "charts").mkdir(exist_ok=True)
    (root / "inventory.yaml").write_text(yaml.safe_dump({"resources": []}))
    values: dict[str, Any] = {"alertmanager": {"enabled": True, "config": config}}
    if with_rules:
        values["serverFiles"] = {"alerting_rules.yml": alert_rule_groups()}
    chart = {"chart": "prometheus", "version": "27.52.0", "values": values}
    (root / "charts" / "monitoring-prometheus.yaml").write_text(yaml.safe_dump(chart))
    return StackRender("dev", root)


def _messages(tmp_path: Path, config: dict[str, Any]) -> str:
    result = check_alertmanager([_render(tmp_path, config)], tmp_path / "out")
    assert not result.passed
    return "\n".join(str(f) for f in result.findings)


def test_rendered_configuration_passes_and_routes_by_severity(amtool: Path, tmp_path: Path) -> None:
    config = {"enabled": True, **alerting.alertmanager_config(RECEIVERS)}
    result = check_alertmanager([_render(tmp_path, config)], tmp_path / "out")
    assert result.passed, result.render()
    written = tmp_path / "out" / "dev" / "0-alertmanager.yml"
    assert "enabled" not in yaml.safe_load(written.read_text()), "the chart drops `enabled`"
    page = {"alertname": "InferenceUnavailable", "severity": "critical", "namespace": "inference"}
    ticket = {"alertname": "GPUMemoryNearlyFull", "severity": "warning"}
    assert routed_receivers(amtool, written, page) == ["oncall", "bus"]
    assert routed_receivers(amtool, written, ticket) == ["chat", "bus"]
    # No severity at all (a rule someone adds without one) is a ticket, never dropped.
    assert routed_receivers(amtool, written, {"alertname": "New"}) == ["chat", "bus"]


def test_no_receivers_is_valid_and_goes_nowhere(amtool: Path, tmp_path: Path) -> None:
    config = alerting.alertmanager_config(())
    result = check_alertmanager([_render(tmp_path, config)], tmp_path / "out")
    assert result.passed, result.render()
    assert "InferenceUnavailable -> nowhere" in "\n".join(result.notes)


def test_broken_configuration_fails(amtool: Path, tmp_path: Path) -> None:
    config = alerting.alertmanager_config(RECEIVERS)
    config["route"]["routes"][0]["receiver"] = "no-such-receiver"
    messages = _messages(tmp_path, config)
    assert "amtool check-config rejected" in messages
    assert 'undefined receiver "no-such-receiver"' in messages


def test_credentials_inline_in_an_unknown_field_fail(amtool: Path, tmp_path: Path) -> None:
    config = alerting.alertmanager_config(RECEIVERS)
    config["receivers"][1]["pagerduty_configs"][0]["routing_key_filename"] = "/x"
    assert "routing_key_filename" in _messages(tmp_path, config)


def test_alert_dropped_despite_receivers_fails(amtool: Path, tmp_path: Path) -> None:
    config = alerting.alertmanager_config(RECEIVERS[:1])  # pages only: warnings end nowhere
    messages = _messages(tmp_path, config)
    assert "alert GPUMemoryNearlyFull (severity warning) is routed to ['nowhere']" in messages
    assert "InferenceUnavailable" not in messages


def test_missing_configuration_fails(tmp_path: Path) -> None:
    render = _render(tmp_path, {})
    chart_file = render.charts_dir / "monitoring-prometheus.yaml"
    chart = yaml.safe_load(chart_file.read_text())
    del chart["values"]["alertmanager"]["config"]
    chart_file.write_text(yaml.safe_dump(chart))
    result = check_alertmanager([render], tmp_path / "out")
    assert "no alertmanager.config" in "\n".join(str(f) for f in result.findings)


def test_rendered_config_map_is_what_is_checked(amtool: Path, tmp_path: Path) -> None:
    """With chart objects in the render, the gate reads the ConfigMap the pod mounts, not the
    values: a configuration the chart mangled would fail here even with correct values."""
    render = _render(tmp_path, alerting.alertmanager_config(RECEIVERS))
    config_map = {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": {"name": "prometheus-alertmanager", "namespace": "monitoring"},
        "data": {"alertmanager.yml": "route:\n  receiver: placeholder\nreceivers: []\n"},
    }
    folder = render.manifests_dir / "charts" / "monitoring-prometheus"
    folder.mkdir(parents=True)
    (folder / "monitoring-configmap-prometheus-alertmanager.yaml").write_text(
        yaml.safe_dump(config_map)
    )
    result = check_alertmanager([render], tmp_path / "out")
    messages = "\n".join(str(f) for f in result.findings)
    assert "monitoring-configmap-prometheus-alertmanager.yaml data[alertmanager.yml]" in messages
    assert 'undefined receiver "placeholder"' in messages
