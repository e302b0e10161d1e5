"""Cross-checks over each whole rendered stack: the links of the autoscaling chain agree end to end.

service metric -> Prometheus scrape job -> prometheus-adapter rule -> HPA metric -> pods on GPU
nodes (tolerations, affinity, selectors, network policy), with every chart and image pinned.
"""

from __future__ import annotations

import functools
import re
from typing import Any

import pytest
import yaml

from infra import adapter_rules, gpu, gpu_spec, inference, monitoring, schedule, scrape, versions
from rehearsal.charts import pin_of
from rehearsal.mockengine import (
    Inventory,
    Resource,
    Secret,
    load_stack_config,
    run_stack,
    walk,
)
from service import contract

DEPLOYMENT = "kubernetes:apps/v1:Deployment"
PREBUILT = "123456789012.dkr.ecr.us-east-1.amazonaws.com/embeddings@sha256:" + "ef" * 32
DCGM_SERIES = frozenset({adapter_rules.DCGM_GPU_UTIL})
"""DCGM fields the adapter may use: dcgm-exporter's default counters (etc/default-counters.csv)."""


def chart_by_name(inv: Inventory, chart: str) -> Resource:
    return inv.render_of(chart).resource


def chart_values(inv: Inventory, chart: str) -> dict[str, Any]:
    values: dict[str, Any] = chart_by_name(inv, chart).inputs["values"]
    return values


def workload(inv: Inventory) -> dict[str, Any]:
    found = [
        r for r in inv.of_type(DEPLOYMENT) if r.inputs["metadata"]["name"] == inference.APP_NAME
    ]
    assert len(found) == 1, [r.name for r in inv.of_type(DEPLOYMENT)]
    return found[0].inputs


def server(inv: Inventory) -> dict[str, Any]:
    (container,) = workload(inv)["spec"]["template"]["spec"]["containers"]
    found: dict[str, Any] = container
    return found


def k8s_object(inv: Inventory, kind: str, name: str) -> dict[str, Any]:
    found = [
        r.inputs
        for r in inv.k8s_resources()
        if r.inputs["kind"] == kind and r.inputs["metadata"].get("name") == name
    ]
    assert len(found) == 1, f"expected one {kind}/{name}, found {len(found)}"
    return found[0]


def hpa(inv: Inventory) -> dict[str, Any]:
    return k8s_object(inv, "HorizontalPodAutoscaler", inference.APP_NAME)


def scrape_jobs(inv: Inventory) -> dict[str, dict[str, Any]]:
    text = chart_values(inv, versions.PROMETHEUS.chart)["extraScrapeConfigs"]
    return {job["job_name"]: job for job in yaml.safe_load(text)}


def keep_regex(job: dict[str, Any], meta_label: str) -> str:
    (regex,) = [
        rule["regex"]
        for rule in job["relabel_configs"]
        if rule["action"] == "keep" and rule["source_labels"] == [meta_label]
    ]
    found: str = regex
    return found


# --- Metrics: contract -> scrape -> adapter -> HPA ----------------------------------------------


def test_every_hpa_metric_is_served_by_an_adapter_rule_on_an_exported_series(
    inventory: Inventory,
) -> None:
    deployed_rules = chart_values(inventory, versions.PROMETHEUS_ADAPTER.chart)["rules"]
    assert deployed_rules["default"] is False
    by_name = {rule["name"]["as"]: rule for rule in deployed_rules["custom"]}
    hpa_metrics = [m["pods"]["metric"]["name"] for m in hpa(inventory)["spec"]["metrics"]]
    assert contract.REQUESTS_IN_FLIGHT in hpa_metrics, "in-flight requests are the primary signal"
    for name in hpa_metrics:
        assert name in by_name, f"HPA metric {name} has no adapter rule; rules: {sorted(by_name)}"
        series = by_name[name]["seriesQuery"].split("{", 1)[0]
        assert series in contract.ALL_METRICS or series in DCGM_SERIES, (name, series)


def test_adapter_rules_read_series_from_jobs_prometheus_runs(inventory: Inventory) -> None:
    jobs = scrape_jobs(inventory)
    for rule in chart_values(inventory, versions.PROMETHEUS_ADAPTER.chart)["rules"]["custom"]:
        job = adapter_rules.rule_for(rule["name"]["as"]).job
        assert f'job="{job}"' in rule["metricsQuery"], rule
        assert job in jobs, f"rule {rule['name']['as']} reads job {job}, which is not scraped"


def test_inference_job_scrapes_the_workload_pods_on_the_metrics_port(
    inventory: Inventory,
) -> None:
    job = scrape_jobs(inventory)[scrape.INFERENCE_JOB]
    deployment = workload(inventory)
    namespace = deployment["metadata"]["namespace"]
    assert job["kubernetes_sd_configs"][0]["namespaces"]["names"] == [namespace]
    pod_labels = deployment["spec"]["template"]["metadata"]["labels"]
    assert keep_regex(job, scrape.META_APP_NAME_LABEL) == pod_labels["app.kubernetes.io/name"]
    ports = {port["name"]: port["containerPort"] for port in server(inventory)["ports"]}
    assert ports[keep_regex(job, scrape.META_PORT_NAME)] == contract.METRICS_PORT
    env = {item["name"]: item["value"] for item in server(inventory)["env"]}
    assert env[contract.ENV_METRICS_PORT] == str(contract.METRICS_PORT)
    assert job["metrics_path"] == contract.METRICS_PATH


def test_dcgm_job_scrapes_the_exporter_namespace(inventory: Inventory) -> None:
    job = scrape_jobs(inventory)[scrape.DCGM_JOB]
    [exporter] = [
        o
        for o in inventory.render_of(versions.DCGM_EXPORTER.chart).rendered.objects
        if o["kind"] == "DaemonSet"
    ]
    assert job["kubernetes_sd_configs"][0]["namespaces"]["names"] == [
        exporter["metadata"]["namespace"]
    ]
    labels = exporter["spec"]["template"]["metadata"]["labels"]
    assert keep_regex(job, scrape.META_APP_NAME_LABEL) == labels["app.kubernetes.io/name"]


def test_adapter_queries_the_prometheus_that_scrapes(inventory: Inventory) -> None:
    adapter = chart_values(inventory, versions.PROMETHEUS_ADAPTER.chart)["prometheus"]
    # The Service the Prometheus chart renders for its server (the one that scrapes our jobs).
    [service] = [
        o
        for o in inventory.render_of(versions.PROMETHEUS.chart).rendered.objects
        if o["kind"] == "Service"
        and o["spec"]["selector"].get("app.kubernetes.io/component") == "server"
        and o["spec"].get("clusterIP") != "None"
    ]
    meta = service["metadata"]
    assert adapter["url"] == f"http://{meta['name']}.{meta['namespace']}.svc"
    assert adapter["port"] in [p["port"] for p in service["spec"]["ports"]]
    assert adapter["port"] == monitoring.PROMETHEUS_SERVICE_PORT


def test_hpa_targets_the_deployment(inventory: Inventory) -> None:
    spec = hpa(inventory)["spec"]
    assert spec["scaleTargetRef"]["name"] == workload(inventory)["metadata"]["name"]
    assert spec["behavior"]["scaleDown"]["stabilizationWindowSeconds"] >= 300
    for policy in spec["behavior"]["scaleDown"]["policies"]:
        assert (policy["type"], policy["value"]) == ("Pods", 1)


# --- Pods on GPU nodes ----------------------------------------------------------------------------


def gpu_node_groups(inv: Inventory) -> list[Resource]:
    groups = [
        r
        for r in inv.of_type("aws:eks/nodeGroup:NodeGroup")
        if (r.inputs.get("labels") or {}).get(gpu_spec.GPU_PRESENT_LABEL) == "true"
    ]
    assert groups, "no GPU node group"
    return groups


def tolerates(tolerations: list[dict[str, Any]], taint: dict[str, Any]) -> bool:
    """Kubernetes' matching of a node taint (EKS API spelling) by a list of tolerations."""
    effect = {
        "NO_SCHEDULE": "NoSchedule",
        "NO_EXECUTE": "NoExecute",
        "PREFER_NO_SCHEDULE": "PreferNoSchedule",
    }[taint["effect"]]
    for toleration in tolerations:
        if toleration.get("key") != taint["key"] or toleration.get("effect") not in (None, effect):
            continue
        if toleration.get("operator") == "Exists" or toleration.get("value") == taint["value"]:
            return True
    return False


def lands_on(affinity: dict[str, Any], labels: dict[str, str]) -> bool:
    """Whether a required node affinity (`In` terms) admits a node with these labels."""
    required = affinity["nodeAffinity"]["requiredDuringSchedulingIgnoredDuringExecution"]
    return any(
        all(
            expr["operator"] == "In" and labels.get(expr["key"]) in expr["values"]
            for expr in term["matchExpressions"]
        )
        for term in required["nodeSelectorTerms"]
    )


def gpu_pod_placements(inv: Inventory) -> dict[str, dict[str, Any]]:
    pod = workload(inv)["spec"]["template"]["spec"]
    placements = {"inference": {"tolerations": pod["tolerations"], "affinity": pod["affinity"]}}
    for chart in (versions.NVIDIA_DEVICE_PLUGIN.chart, versions.DCGM_EXPORTER.chart):
        values = chart_values(inv, chart)
        placements[chart] = {"tolerations": values["tolerations"], "affinity": values["affinity"]}
    return placements


def test_gpu_pods_tolerate_and_select_every_gpu_node_group(inventory: Inventory) -> None:
    for group in gpu_node_groups(inventory):
        taints, labels = group.inputs["taints"], group.inputs["labels"]
        assert taints, group.name
        for who, placement in gpu_pod_placements(inventory).items():
            for taint in taints:
                assert tolerates(placement["tolerations"], taint), (who, group.name, taint)
            assert lands_on(placement["affinity"], labels), (who, group.name)


def test_gpu_pods_do_not_land_on_system_nodes(inventory: Inventory) -> None:
    system = [
        r
        for r in inventory.of_type("aws:eks/nodeGroup:NodeGroup")
        if r not in gpu_node_groups(inventory)
    ]
    assert system
    for group in system:
        for who, placement in gpu_pod_placements(inventory).items():
            assert not lands_on(placement["affinity"], group.inputs.get("labels") or {}), who


def test_workload_requests_the_resource_the_device_plugin_advertises(inventory: Inventory) -> None:
    assert server(inventory)["resources"]["limits"][gpu_spec.GPU_RESOURCE] == "1"
    plugin = chart_values(inventory, versions.NVIDIA_DEVICE_PLUGIN.chart)
    if "config" in plugin:
        config = yaml.safe_load(plugin["config"]["map"][gpu.DEVICE_PLUGIN_CONFIG_NAME])
        names = {r["name"] for r in config["sharing"]["timeSlicing"]["resources"]}
        assert names == {gpu_spec.GPU_RESOURCE}


def test_probes_and_ports_follow_the_contract(inventory: Inventory) -> None:
    container = server(inventory)
    assert container["readinessProbe"]["httpGet"]["path"] == contract.READY_PATH
    assert container["startupProbe"]["httpGet"]["path"] == contract.READY_PATH
    assert container["livenessProbe"]["httpGet"]["path"] == contract.HEALTH_PATH
    ports = {port["name"]: port["containerPort"] for port in container["ports"]}
    for probe in ("readinessProbe", "startupProbe", "livenessProbe"):
        # The metrics listener: no API connection can lock the kubelet out there.
        assert ports[container[probe]["httpGet"]["port"]] == contract.METRICS_PORT, probe


def test_services_pdb_and_policy_select_the_deployment_pods(inventory: Inventory) -> None:
    deployment = workload(inventory)
    pod_labels = deployment["spec"]["template"]["metadata"]["labels"]
    selectors = [deployment["spec"]["selector"]["matchLabels"]]
    for resource in inventory.k8s_resources():
        obj = resource.inputs
        if obj["metadata"].get("namespace") != deployment["metadata"]["namespace"]:
            continue
        if obj["kind"] == "Service":
            selectors.append(obj["spec"]["selector"])
        elif obj["kind"] == "PodDisruptionBudget":
            selectors.append(obj["spec"]["selector"]["matchLabels"])
        elif obj["kind"] == "NetworkPolicy":
            selector = obj["spec"]["podSelector"]["matchLabels"]
            if selector == schedule.SELECTOR:  # the servingHours scaler's own pods
                assert not selector.items() <= pod_labels.items()
                continue
            selectors.append(selector)
    assert len(selectors) == 5, "deployment, ClusterIP service, NLB service, PDB, network policy"
    for selector in selectors:
        assert selector
        assert selector.items() <= pod_labels.items(), selector


def test_network_policy_admits_the_deployed_prometheus_to_the_metrics_port(
    inventory: Inventory,
) -> None:
    policy = k8s_object(inventory, "NetworkPolicy", inference.APP_NAME)["spec"]
    # The Prometheus server pods as the pinned chart renders them with our values.
    [server] = [
        o
        for o in inventory.render_of(versions.PROMETHEUS.chart).rendered.objects
        if o["kind"] == "Deployment" and o["metadata"]["name"] == monitoring.PROMETHEUS_SERVER_NAME
    ]
    server_pod_labels = server["spec"]["template"]["metadata"]["labels"]
    (rule,) = [r for r in policy["ingress"] if r["ports"][0]["port"] == contract.METRICS_PORT_NAME]
    (peer,) = rule["from"]
    selector = peer["podSelector"]["matchLabels"]
    assert selector
    assert selector.items() <= server_pod_labels.items()
    assert peer["namespaceSelector"]["matchLabels"] == {
        "kubernetes.io/metadata.name": server["metadata"]["namespace"]
    }


# --- Pinning --------------------------------------------------------------------------------------


def test_every_chart_is_pinned_from_the_versions_table(inventory: Inventory) -> None:
    installed = [pin_of(render.source.archive) for render in inventory.rendered]
    assert sorted(installed, key=str) == sorted(versions.HELM_CHARTS, key=str)


def test_no_chart_value_or_manifest_uses_a_floating_image_tag(inventory: Inventory) -> None:
    for resource in [*inventory.charts(), *inventory.k8s_resources()]:
        for value in walk(resource.inputs):
            if isinstance(value, str):
                assert not value.endswith(":latest"), (resource.name, value)


@functools.cache
def with_prebuilt_image(stack: str) -> Inventory:
    return run_stack(stack, {"image": PREBUILT})


@pytest.mark.parametrize("stack_name", ["dev", "prod"])
def test_a_prebuilt_image_is_run_by_its_digest_and_nothing_is_built(stack_name: str) -> None:
    inv = with_prebuilt_image(stack_name)
    assert server(inv)["image"] == PREBUILT
    assert inv.of_type("docker-build:index:Image") == []
    assert inv.outputs["imageRef"] == PREBUILT


def test_a_built_image_is_pushed_and_referenced_by_digest(inventory: Inventory) -> None:
    (image,) = inventory.of_type("docker-build:index:Image")
    assert image.inputs["push"] is True
    repository = inventory.outputs["ecrRepositoryUrl"]
    (tag,) = image.inputs["tags"]
    assert tag.startswith(f"{repository}:")
    reference = server(inventory)["image"]
    assert re.fullmatch(rf"{re.escape(repository)}@sha256:[0-9a-f]{{64}}", reference), reference
    assert inventory.outputs["imageRef"] == reference


# --- Outputs --------------------------------------------------------------------------------------

CLIENT_OUTPUTS = (
    "endpointUrl",
    "openaiBaseUrl",
    "modelId",
    "embeddingDimension",
    "apiPaths",
    "clusterName",
    "region",
    "kubeconfig",
    "namespace",
    "hpaName",
    "prometheusUrl",
    "imageRef",
    "ecrRepositoryUrl",
)


def test_stack_outputs_for_clients(inventory: Inventory) -> None:
    outputs = inventory.outputs
    assert set(CLIENT_OUTPUTS) <= set(outputs), sorted(set(CLIENT_OUTPUTS) - set(outputs))
    assert outputs["apiPaths"] == contract.API_PATHS
    assert outputs["hpaName"] == hpa(inventory)["metadata"]["name"]
    assert outputs["namespace"] == workload(inventory)["metadata"]["namespace"]
    assert outputs["prometheusUrl"] == monitoring.prometheus_url(monitoring.NAMESPACE)
    assert isinstance(outputs["kubeconfig"], Secret)
    assert "apiKey" not in outputs  # neither stack file configures keys


def test_api_key_output_is_secret_when_keys_are_set() -> None:
    inv = run_stack(
        "dev",
        {
            "internetFacing": True,
            "clientCidrs": ["203.0.113.0/24"],
            "apiKeys": {"secure": "encrypted"},
        },
    )
    assert isinstance(inv.outputs["apiKey"], Secret)


def test_time_sliced_capacity_reaches_the_autoscaler_node_templates() -> None:
    replicas = 4
    inv = run_stack("dev", {"timeSlicingReplicas": replicas})
    plugin = chart_values(inv, versions.NVIDIA_DEVICE_PLUGIN.chart)
    config = yaml.safe_load(plugin["config"]["map"][gpu.DEVICE_PLUGIN_CONFIG_NAME])
    assert config["sharing"]["timeSlicing"]["resources"][0]["replicas"] == replicas
    key = f"{gpu_spec.AUTOSCALER_TAG_PREFIX}/resources/{gpu_spec.GPU_RESOURCE}"
    advertised = [
        int(tag.inputs["tag"]["value"])
        for tag in inv.of_type("aws:autoscaling/tag:Tag")
        if tag.inputs["tag"]["key"] == key
    ]
    gpus = [g.gpu.gpus for g in load_stack_config("dev").node_groups.gpu if g.gpu]
    assert advertised == [n * replicas for n in gpus]
