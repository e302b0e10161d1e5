"""infra/alerts.py: the rules the issue asks for, validated and unit-tested with the real promtool,
and each kind of broken rule making the gate fail with a message that names the rule."""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import pytest

from checks.alert_rules import check_alert_rules
from infra.alerts import alert_rule_groups

EXPECTED_ALERTS = {
    "InferencePodsNotReady",
    "InferenceUnavailable",
    "InferenceHPAAtMaxReplicas",
    "InferenceHighThrottleRate",
    "InferenceHighLatencyP95",
    "InferenceGPUCapacityUnavailable",
    "GPUHeadroomPending",
    "GPUXidError",
    "GPUMemoryNearlyFull",
}


def _rules(groups: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {r["alert"]: r for g in groups["groups"] for r in g["rules"]}


def test_every_alert_of_the_issue_exists_with_a_severity_and_summary() -> None:
    rules = _rules(alert_rule_groups())
    assert set(rules) == EXPECTED_ALERTS
    for name, rule in rules.items():
        assert rule["labels"]["severity"] in {"warning", "critical"}, name
        assert rule["annotations"]["summary"], name
        assert rule["annotations"]["description"], name
    assert rules["InferenceHPAAtMaxReplicas"]["for"] == "15m"


def test_thresholds_and_names_flow_into_the_expressions() -> None:
    rules = _rules(
        alert_rule_groups(
            namespace="search",
            deployment="gte",
            hpa="gte-hpa",
            p95_latency_seconds=2.5,
            max_throttled_ratio=0.1,
            gpu_memory_used_ratio=0.9,
            hpa_at_max_for="30m",
        )
    )
    assert rules["InferenceHighLatencyP95"]["expr"].rstrip().endswith("> 2.5")
    assert rules["InferenceHighThrottleRate"]["expr"].rstrip().endswith("> 0.1")
    assert rules["GPUMemoryNearlyFull"]["expr"].rstrip().endswith("> 0.9")
    assert 'horizontalpodautoscaler="gte-hpa"' in rules["InferenceHPAAtMaxReplicas"]["expr"]
    assert rules["InferenceHPAAtMaxReplicas"]["for"] == "30m"
    assert 'deployment="gte"' in rules["InferencePodsNotReady"]["expr"]
    assert 'namespace="search"' in rules["InferenceHighThrottleRate"]["expr"]


@pytest.mark.parametrize(
    ("kwargs", "key"),
    [
        ({"max_throttled_ratio": 0}, "max_throttled_ratio"),
        ({"gpu_memory_used_ratio": 1.5}, "gpu_memory_used_ratio"),
        ({"p95_latency_seconds": -1}, "p95_latency_seconds"),
        ({"hpa_at_max_for": "15 minutes"}, "hpa_at_max_for"),
        ({"namespace": 'inference"} or vector(1) #'}, "namespace"),
    ],
)
def test_bad_arguments_are_refused_with_the_key_and_what_is_allowed(
    kwargs: dict[str, Any], key: str
) -> None:
    with pytest.raises(ValueError, match=key) as error:
        alert_rule_groups(**kwargs)
    assert "expected" in str(error.value)


def test_default_rules_pass_promtool_check_and_unit_tests(promtool: Path, tmp_path: Path) -> None:
    result = check_alert_rules(tmp_path)
    assert result.passed, result.render()
    assert (tmp_path / "alerts.yaml").is_file()


def test_unparsable_rule_fails_with_promtool_naming_the_rule(
    promtool: Path, tmp_path: Path
) -> None:
    rules = alert_rule_groups()
    broken = copy.deepcopy(rules)
    broken["groups"][0]["rules"][0]["expr"] = "sum(kube_deployment_spec_replicas"
    result = check_alert_rules(tmp_path, rule_file=broken)
    assert not result.passed
    message = str(result.findings[0])
    assert "InferencePodsNotReady" in message
    assert "parse error" in message


def test_changed_threshold_fails_the_promtool_unit_test(promtool: Path, tmp_path: Path) -> None:
    # 9% of requests get 429 in the unit test; a 20% threshold must make the firing case fail.
    result = check_alert_rules(tmp_path, rule_file=alert_rule_groups(max_throttled_ratio=0.2))
    assert not result.passed
    message = "\n".join(str(f) for f in result.findings)
    assert "alerts_test.yaml" in message
    assert "InferenceHighThrottleRate" in message


def test_misspelt_metric_fails_although_it_parses(promtool: Path, tmp_path: Path) -> None:
    broken = copy.deepcopy(alert_rule_groups())
    broken["groups"][1]["rules"][1]["expr"] = "DCGM_FI_DEV_XID_ERROR > 0"
    result = check_alert_rules(tmp_path, rule_file=broken)
    assert not result.passed
    assert any("unknown metric 'DCGM_FI_DEV_XID_ERROR'" in str(f) for f in result.findings)
    assert any("GPUXidError" in f.subject for f in result.findings)
