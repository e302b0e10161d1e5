"""Monitoring under the mock engine, and the adapter rules generated from the contract."""

from __future__ import annotations

import json
from typing import Any

import pytest
import yaml

from infra import adapter_rules, monitoring, scrape, versions
from rehearsal.charts import pin_of
from rehearsal.mockengine import Inventory, Resource, run_function
from service import contract

CHART = "kubernetes:helm.sh/v4:Chart"
PVC = "kubernetes:core/v1:PersistentVolumeClaim"
SYSTEM = {"gpu-inference.io/node-role": "system"}
SCRAPE = scrape.ScrapeSettings(
    inference_namespace="inference",
    inference_app_name="embeddings",
    dcgm_namespace="gpu-system",
    scrape_interval="15s",
)
ALERTS = {"groups": [{"name": "test", "rules": [{"alert": "Always", "expr": "vector(1)"}]}]}
DASHBOARD = {"title": "GPU inference", "panels": []}


def monitoring_args(**overrides: Any) -> monitoring.MonitoringArgs:
    fields: dict[str, Any] = {
        "namespace": "monitoring",
        "cluster_name": "gpu-inference-test",
        "system_node_selector": SYSTEM,
        "retention": "15d",
        "volume_size_gib": 50,
        "scrape": SCRAPE,
        "alert_rules": ALERTS,
        "dashboards": {"gpu-inference.json": DASHBOARD},
        **overrides,
    }
    return monitoring.MonitoringArgs(**fields)


@pytest.fixture(scope="module")
def inventory() -> Inventory:
    return run_function(lambda: monitoring.Monitoring("mon", monitoring_args()))


def chart(inventory: Inventory, name: str) -> Resource:
    return inventory.one(CHART, f"mon-{name}")


def values(inventory: Inventory, name: str) -> dict[str, Any]:
    found: dict[str, Any] = chart(inventory, name).inputs["values"]
    return found


# --- Adapter rules --------------------------------------------------------------------------------


def test_rules_serve_every_contract_hpa_metric_and_gpu_utilisation() -> None:
    served = {rule.api_name: rule for rule in adapter_rules.pod_metric_rules()}
    assert set(served) == {*contract.HPA_PODS_METRICS, adapter_rules.GPU_UTILIZATION_METRIC}
    for name in contract.HPA_PODS_METRICS:
        assert served[name].series == name
        assert served[name].job == scrape.INFERENCE_JOB
        assert name in contract.ALL_METRICS
    gpu = served[adapter_rules.GPU_UTILIZATION_METRIC]
    assert (gpu.series, gpu.job, gpu.source) == (
        adapter_rules.DCGM_GPU_UTIL,
        scrape.DCGM_JOB,
        "dcgm",
    )


def test_rules_are_in_the_adapter_format() -> None:
    rules = adapter_rules.adapter_rules()
    assert rules["default"] is False
    for rule in rules["custom"]:
        assert set(rule) == {"seriesQuery", "resources", "name", "metricsQuery"}
        assert rule["resources"]["overrides"] == {
            "namespace": {"resource": "namespace"},
            "pod": {"resource": "pod"},
        }
        for placeholder in ("<<.Series>>", "<<.LabelMatchers>>", "<<.GroupBy>>"):
            assert placeholder in rule["metricsQuery"], rule


def in_flight_rule() -> dict[str, Any]:
    return adapter_rules.rule_for(contract.REQUESTS_IN_FLIGHT).to_adapter_rule()


def test_expansion_for_one_pod_uses_equality_like_the_adapter() -> None:
    # Upstream pkg/naming/metrics_query_test.go: one name -> `resource="bar"`.
    query = adapter_rules.expand_metrics_query(in_flight_rule(), "inference", ["embeddings-a"])
    assert query == (
        'sum(inference_requests_in_flight{namespace="inference",pod="embeddings-a",'
        'job="inference"}) by (pod)'
    )


def test_expansion_for_several_pods_uses_a_regex_alternation_like_the_adapter() -> None:
    # Upstream: several names -> `resource=~"bar|baz"`, namespace matcher first.
    query = adapter_rules.expand_metrics_query(in_flight_rule(), "inference", ["a-1", "b-2"])
    assert query == (
        'sum(inference_requests_in_flight{namespace="inference",pod=~"a-1|b-2",'
        'job="inference"}) by (pod)'
    )


def test_expansion_refuses_zero_pods() -> None:
    with pytest.raises(ValueError, match="zero pods"):
        adapter_rules.expand_metrics_query(in_flight_rule(), "inference", [])


def test_unknown_metric_names_what_is_served() -> None:
    with pytest.raises(KeyError, match=contract.REQUESTS_IN_FLIGHT):
        adapter_rules.rule_for("inference_nonexistent")


# --- Scrape jobs ----------------------------------------------------------------------------------


def test_inference_job_scrapes_the_contract_metrics_port_and_path() -> None:
    job = scrape.inference_job(SCRAPE)
    assert job["metrics_path"] == contract.METRICS_PATH
    assert job["honor_labels"] is False
    keeps = {
        rule["source_labels"][0]: rule["regex"]
        for rule in job["relabel_configs"]
        if rule["action"] == "keep"
    }
    assert keeps == {
        scrape.META_APP_NAME_LABEL: "embeddings",
        scrape.META_PORT_NAME: contract.METRICS_PORT_NAME,
    }
    assert job["kubernetes_sd_configs"] == [{"role": "pod", "namespaces": {"names": ["inference"]}}]


def test_dcgm_job_never_sets_pod_or_namespace_target_labels() -> None:
    job = scrape.dcgm_job(SCRAPE)
    targets = {rule.get("target_label") for rule in job["relabel_configs"]}
    assert not targets & {"pod", "namespace", "container"}
    assert {"exporter_pod", "exporter_namespace", "node"} <= targets
    assert job["honor_labels"] is False


# --- Charts ---------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "pinned"),
    [
        ("prometheus", versions.PROMETHEUS),
        ("prometheus-adapter", versions.PROMETHEUS_ADAPTER),
        ("metrics-server", versions.METRICS_SERVER),
    ],
)
def test_charts_are_pinned(inventory: Inventory, name: str, pinned: versions.HelmChart) -> None:
    render = inventory.render_of(pinned.chart)
    assert render.resource == chart(inventory, name)
    assert pin_of(render.source.archive) == pinned


def test_prometheus_keeps_data_on_an_encrypted_gp3_volume(inventory: Inventory) -> None:
    server = values(inventory, "prometheus")["server"]
    assert server["retention"] == "15d"
    assert server["retentionSize"] == "40GB"
    assert server["persistentVolume"] == {
        "enabled": True,
        "existingClaim": monitoring.PROMETHEUS_CLAIM,
    }
    assert server["strategy"] == {"type": "Recreate"}
    claim = inventory.one(PVC, f"mon-{monitoring.PROMETHEUS_CLAIM}").inputs
    assert claim["metadata"] == {"name": monitoring.PROMETHEUS_CLAIM, "namespace": "monitoring"}
    assert claim["spec"]["resources"] == {"requests": {"storage": "50Gi"}}
    assert claim["spec"]["storageClassName"] == monitoring.STORAGE_CLASS
    storage_class = inventory.one("kubernetes:storage.k8s.io/v1:StorageClass").inputs
    assert storage_class["metadata"]["name"] == monitoring.STORAGE_CLASS
    assert storage_class["provisioner"] == "ebs.csi.aws.com"
    assert storage_class["parameters"] == {
        "type": "gp3",
        "encrypted": "true",
        "fsType": "ext4",
        "tagSpecification_1": "gpu-inference.io/cluster=gpu-inference-test",
    }
    assert storage_class["volumeBindingMode"] == "WaitForFirstConsumer"
    # Deleting a claim deletes its volume.
    assert storage_class["reclaimPolicy"] == "Delete"


def test_prometheus_runs_exactly_the_scrape_jobs_from_scrape_py(inventory: Inventory) -> None:
    prometheus = values(inventory, "prometheus")
    jobs = yaml.safe_load(prometheus["extraScrapeConfigs"])
    assert jobs == scrape.scrape_jobs(SCRAPE)
    assert "{{" not in prometheus["extraScrapeConfigs"]  # the chart runs it through `tpl`
    assert prometheus["server"]["global"]["scrape_interval"] == "15s"


def test_kube_state_metrics_exposes_the_node_capacity_type(inventory: Inventory) -> None:
    ksm = values(inventory, "prometheus")["kube-state-metrics"]
    assert ksm["metricLabelsAllowlist"] == ["nodes=[eks.amazonaws.com/capacityType]"]


@pytest.mark.parametrize(
    ("interval", "timeout"), [("15s", "10s"), ("1m", "10s"), ("5s", "5s"), ("500ms", "500ms")]
)
def test_scrape_timeout_never_exceeds_the_interval(interval: str, timeout: str) -> None:
    assert monitoring.scrape_timeout(interval) == timeout


def test_prometheus_deploys_the_alert_rules(inventory: Inventory) -> None:
    server_files = values(inventory, "prometheus")["serverFiles"]
    assert server_files == {monitoring.ALERT_RULES_FILE: ALERTS}


@pytest.mark.parametrize("name", ["prometheus-adapter", "metrics-server"])
def test_addons_run_on_system_nodes(inventory: Inventory, name: str) -> None:
    assert values(inventory, name)["nodeSelector"] == SYSTEM


def test_prometheus_components_run_on_system_nodes(inventory: Inventory) -> None:
    prometheus = values(inventory, "prometheus")
    for component in ("server", "kube-state-metrics", "alertmanager"):
        assert prometheus[component]["nodeSelector"] == SYSTEM, component


def test_adapter_points_at_the_server_and_relists_quickly(inventory: Inventory) -> None:
    adapter = values(inventory, "prometheus-adapter")
    assert adapter["prometheus"] == {
        "url": "http://prometheus-server.monitoring.svc",
        "port": monitoring.PROMETHEUS_SERVICE_PORT,
    }
    assert adapter["rules"] == adapter_rules.adapter_rules()
    assert adapter["metricsRelistInterval"] == "30s"
    assert adapter["replicas"] == 2
    assert adapter["podDisruptionBudget"]["enabled"] is True


def test_dashboard_configmap_is_labelled_for_the_grafana_sidecar(inventory: Inventory) -> None:
    configmap = inventory.one("kubernetes:core/v1:ConfigMap")
    assert configmap.inputs["metadata"]["labels"] == {"grafana_dashboard": "1"}
    assert configmap.inputs["metadata"]["namespace"] == "monitoring"
    assert json.loads(configmap.inputs["data"]["gpu-inference.json"]) == DASHBOARD


def test_namespace_is_baseline_and_reports_restricted(inventory: Inventory) -> None:
    labels = inventory.one("kubernetes:core/v1:Namespace").inputs["metadata"]["labels"]
    assert labels["pod-security.kubernetes.io/enforce"] == "baseline"
    assert labels["pod-security.kubernetes.io/audit"] == "restricted"


def test_prometheus_url_is_the_in_cluster_service() -> None:
    assert monitoring.prometheus_url("monitoring") == (
        "http://prometheus-server.monitoring.svc.cluster.local:80"
    )


def test_bad_volume_size_is_rejected() -> None:
    with pytest.raises(ValueError, match="volume_size_gib=0"):
        monitoring_args(volume_size_gib=0)
