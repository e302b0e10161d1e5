"""Grafana as each stack renders it: the pinned upstream chart with the program's values, checked on
the rendered objects against what the Prometheus chart and the server really expose."""

from __future__ import annotations

import json
from typing import Any
from urllib.parse import urlsplit

import pytest
import yaml

from checks.dashboards import expressions
from checks.metric_catalog import HISTOGRAM_SUFFIXES, metric_source
from checks.promql import metric_names
from infra import dashboard, grafana, inference, monitoring, versions
from infra.config import ConfigError
from rehearsal.charts import pin_of
from rehearsal.mockengine import Inventory, Secret, load_stack_config, run_stack
from service.metrics import Metrics

RANDOM_PASSWORD = "random:index/randomPassword:RandomPassword"


def objects(inventory: Inventory, kind: str, chart: str | None = None) -> list[dict[str, Any]]:
    if chart is None:
        return [o for o in inventory.cluster_objects() if o["kind"] == kind]
    return [o for o in inventory.render_of(chart).rendered.objects if o["kind"] == kind]


def named(inventory: Inventory, kind: str, name: str, chart: str | None = None) -> dict[str, Any]:
    found = [o for o in objects(inventory, kind, chart) if o["metadata"]["name"] == name]
    assert len(found) == 1, f"expected one {kind} {name}, found {len(found)}"
    return found[0]


def grafana_config(inventory: Inventory) -> dict[str, str]:
    data: dict[str, str] = named(inventory, "ConfigMap", grafana.FULLNAME, "grafana")["data"]
    return data


def grafana_pod(inventory: Inventory) -> dict[str, Any]:
    deployment = named(inventory, "Deployment", grafana.FULLNAME, "grafana")
    pod: dict[str, Any] = deployment["spec"]["template"]
    return pod


def datasource(inventory: Inventory) -> dict[str, Any]:
    [source] = yaml.safe_load(grafana_config(inventory)["datasources.yaml"])["datasources"]
    assert isinstance(source, dict)
    return source


def selects(selector: dict[str, str], labels: dict[str, str]) -> bool:
    return all(labels.get(k) == v for k, v in selector.items())


def test_both_stacks_deploy_the_pinned_chart(inventory: Inventory) -> None:
    render = inventory.render_of(versions.GRAFANA.chart)
    assert pin_of(render.source.archive) == versions.GRAFANA
    assert render.resource.inputs["namespace"] == monitoring.NAMESPACE
    assert "grafanaPortForward" in inventory.outputs


def test_grafana_is_optional() -> None:
    off = run_stack("dev", {"grafana": False})
    assert not [r for r in off.rendered if r.source.chart == "grafana"]
    assert not off.of_type(RANDOM_PASSWORD)
    assert not {"grafanaPortForward", "grafanaAdminPassword"} & set(off.outputs)
    # The dashboard ConfigMap stays for a Grafana the team brings (its sidecar label).
    assert named(off, "ConfigMap", monitoring.dashboard_config_map("gpu-inference.json"))


def test_datasource_is_the_prometheus_service(inventory: Inventory) -> None:
    """The URL Grafana calls resolves to the Service the Prometheus chart renders, whose port
    forwards to the server container's port, on the pods the Service selects."""
    source = datasource(inventory)
    assert source["type"] == "prometheus"
    assert source["isDefault"] is True
    assert source["uid"] == grafana.DATASOURCE_UID
    url = urlsplit(source["url"])
    name, namespace, svc, *_ = (url.hostname or "").split(".")
    assert svc == "svc"
    service = named(inventory, "Service", name, "prometheus")
    assert service["metadata"]["namespace"] == namespace
    [port] = [p for p in service["spec"]["ports"] if p["port"] == url.port]
    server = named(inventory, "Deployment", monitoring.PROMETHEUS_SERVER_NAME, "prometheus")
    pod = server["spec"]["template"]
    assert selects(service["spec"]["selector"], pod["metadata"]["labels"])
    [container] = [c for c in pod["spec"]["containers"] if c["name"] == "prometheus-server"]
    container_ports = {p.get("name"): p["containerPort"] for p in container["ports"]}
    target = port["targetPort"]
    assert target == monitoring.PROMETHEUS_CONTAINER_PORT or (
        container_ports.get(target) == monitoring.PROMETHEUS_CONTAINER_PORT
    )
    assert monitoring.PROMETHEUS_CONTAINER_PORT in container_ports.values()
    assert (
        source["jsonData"]["timeInterval"]
        == load_stack_config(
            "dev" if inventory.outputs["clusterName"].endswith("dev") else "prod"
        ).monitoring.scrape_interval
    )


def test_network_policy_lets_grafana_reach_prometheus_only(inventory: Inventory) -> None:
    policy = named(inventory, "NetworkPolicy", grafana.FULLNAME, "grafana")
    pod = grafana_pod(inventory)
    assert selects(policy["spec"]["podSelector"]["matchLabels"], pod["metadata"]["labels"])
    assert set(policy["spec"]["policyTypes"]) == {"Ingress", "Egress"}
    server = named(inventory, "Deployment", monitoring.PROMETHEUS_SERVER_NAME, "prometheus")
    server_labels = server["spec"]["template"]["metadata"]["labels"]
    [dns, to_prometheus] = policy["spec"]["egress"]
    assert dns["ports"] == [{"port": 53, "protocol": "UDP"}]
    assert to_prometheus["ports"] == [
        {"port": monitoring.PROMETHEUS_CONTAINER_PORT, "protocol": "TCP"}
    ]
    [peer] = to_prometheus["to"]
    assert selects(peer["podSelector"]["matchLabels"], server_labels)
    [ingress] = policy["spec"]["ingress"]
    assert ingress["ports"] == [{"port": grafana.CONTAINER_PORT}]
    assert ingress["from"], "not open to every pod: only labelled clients (port-forward bypasses)"


def test_dashboard_is_provisioned_from_infra_dashboard_and_is_home(inventory: Inventory) -> None:
    pod = grafana_pod(inventory)["spec"]
    volumes = {v["name"]: v for v in pod["volumes"]}
    [container] = [c for c in pod["containers"] if c["name"] == "grafana"]
    mounts = {m["mountPath"]: m["name"] for m in container["volumeMounts"]}
    config_map_name = volumes[mounts[grafana.DASHBOARDS_DIR]]["configMap"]["name"]
    [config_map] = [
        o
        for o in inventory.k8s_manifests()
        if o["kind"] == "ConfigMap"
        and o["metadata"]["name"] == config_map_name
        and o["metadata"]["namespace"] == monitoring.NAMESPACE
    ]
    ini = grafana_config(inventory)["grafana.ini"]
    home = ini.split("default_home_dashboard_path = ", 1)[1].splitlines()[0]
    assert home.startswith(grafana.DASHBOARDS_DIR + "/")
    board = json.loads(config_map["data"][home.rsplit("/", 1)[1]])
    stack = "dev" if inventory.outputs["clusterName"].endswith("dev") else "prod"
    assert board == dashboard.dashboard(
        namespace=load_stack_config(stack).inference.namespace, hpa=inference.APP_NAME
    )
    providers = yaml.safe_load(grafana_config(inventory)["dashboardproviders.yaml"])["providers"]
    assert [p["options"]["path"] for p in providers] == [grafana.DASHBOARDS_DIR]
    # The dashboard's data source variable offers Prometheus sources; the provisioned one is the
    # default, so it is preselected.
    [variable] = [v for v in board["templating"]["list"] if v["type"] == "datasource"]
    assert variable["query"] == datasource(inventory)["type"]


def test_dashboard_metrics_are_ones_the_server_and_prometheus_expose(inventory: Inventory) -> None:
    """Each metric a panel queries: a series the real server registry exposes, or one of
    kube-state-metrics' families whose collector the rendered kube-state-metrics runs and that
    Prometheus scrapes (the chart's annotation-driven service job)."""
    registry = Metrics()
    registry.requests.labels("/v1/embeddings", "200").inc()
    registry.request_duration.labels("/v1/embeddings").observe(0.1)
    exposed = {s.name for f in registry.registry.collect() for s in f.samples}
    ksm = named(inventory, "Deployment", "prometheus-kube-state-metrics", "prometheus")
    [args] = [c["args"] for c in ksm["spec"]["template"]["spec"]["containers"]]
    collectors = next(a for a in args if a.startswith("--resources=")).split("=", 1)[1].split(",")
    ksm_service = named(inventory, "Service", "prometheus-kube-state-metrics", "prometheus")
    assert ksm_service["metadata"]["annotations"]["prometheus.io/scrape"] == "true"
    board = json.loads(
        named(inventory, "ConfigMap", monitoring.dashboard_config_map("gpu-inference.json"))[
            "data"
        ]["gpu-inference.json"]
    )
    names = {m for expr in expressions(board) for m in metric_names(expr)}
    assert names
    for name in sorted(names):
        source = metric_source(name)
        if source == "service":
            base = next((name.removesuffix(s) for s in HISTOGRAM_SUFFIXES if name.endswith(s)), "")
            assert name in exposed or f"{base}_bucket" in exposed, f"the server has no {name}"
        elif source == "kube-state-metrics":
            family = name.removeprefix("kube_").split("_", 1)[0]
            resource = {"horizontalpodautoscaler": "horizontalpodautoscalers"}.get(
                family, f"{family}s"
            )
            assert resource in collectors, f"{name}: kube-state-metrics does not collect {resource}"
        elif source == "prometheus":
            # ALERTS exists once Prometheus loads alerting rules: the rendered server config has
            # the program's rule file.
            server_config = named(inventory, "ConfigMap", "prometheus-server", "prometheus")
            rules = yaml.safe_load(server_config["data"][monitoring.ALERT_RULES_FILE])
            assert rules["groups"], f"{name}: the server loads no alerting rule"
        else:
            assert source == "dcgm-exporter", f"{name}: no exporter exposes it"


def test_admin_password_is_generated_secret_and_never_in_values(inventory: Inventory) -> None:
    [password] = inventory.of_type(RANDOM_PASSWORD)
    assert password.inputs["length"] >= 32
    secret = next(
        r
        for r in inventory.k8s_resources()
        if r.inputs["kind"] == "Secret" and r.inputs["metadata"]["name"] == grafana.ADMIN_SECRET
    )
    data = secret.inputs["stringData"]
    assert isinstance(data, Secret), "encrypted in state, masked in the preview"
    assert isinstance(inventory.outputs["grafanaAdminPassword"], Secret)
    assert inventory.outputs["grafanaAdminPassword"].value == data.value["admin-password"]
    assert inventory.outputs["grafanaAdminUser"] == data.value["admin-user"]
    pod = grafana_pod(inventory)["spec"]
    [container] = [c for c in pod["containers"] if c["name"] == "grafana"]
    assert not [e for e in container["env"] if "secretKeyRef" in e.get("valueFrom", {})], (
        "credentials are files, not environment variables"
    )
    env = {e["name"]: e.get("value") for e in container["env"]}
    volumes = {v["name"]: v for v in pod["volumes"]}
    mounts = {m["mountPath"]: m["name"] for m in container["volumeMounts"]}
    for variable in ("GF_SECURITY_ADMIN_USER__FILE", "GF_SECURITY_ADMIN_PASSWORD__FILE"):
        folder, key = env[variable].rsplit("/", 1)
        assert volumes[mounts[folder]]["secret"]["secretName"] == grafana.ADMIN_SECRET
        assert key in data.value, f"{variable} names a key the Secret does not have"
    assert not [o for o in inventory.render_of("grafana").rendered.objects if o["kind"] == "Secret"]


def test_pod_meets_restricted_pod_security_on_system_nodes(inventory: Inventory) -> None:
    """Pod Security Standards `restricted` (kubernetes.io/docs/concepts/security/
    pod-security-standards): non-root, no privilege escalation, every capability dropped,
    RuntimeDefault seccomp, only configMap/secret/emptyDir/projected volumes, no host namespaces."""
    pod = grafana_pod(inventory)["spec"]
    assert pod["nodeSelector"] == {"gpu-inference.io/node-role": "system"}
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert pod["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}
    assert not {"hostNetwork", "hostPID", "hostIPC"} & {k for k, v in pod.items() if v}
    assert pod["automountServiceAccountToken"] is False
    for volume in pod["volumes"]:
        assert {"configMap", "secret", "emptyDir", "projected"} & set(volume), volume
    for container in pod["containers"] + pod.get("initContainers", []):
        context = container["securityContext"]
        assert context["allowPrivilegeEscalation"] is False, container["name"]
        assert context["capabilities"]["drop"] == ["ALL"], container["name"]
        assert not context["capabilities"].get("add"), container["name"]
        assert context.get("runAsUser", 1) != 0, container["name"]
        assert context["readOnlyRootFilesystem"] is True, container["name"]


def test_port_forward_output_names_the_rendered_service(inventory: Inventory) -> None:
    command = inventory.outputs["grafanaPortForward"].split()
    assert command[:4] == ["kubectl", "-n", monitoring.NAMESPACE, "port-forward"]
    service = named(inventory, "Service", command[4].removeprefix("svc/"), "grafana")
    local, remote = command[5].split(":")
    assert local == str(grafana.CONTAINER_PORT)
    [port] = [p for p in service["spec"]["ports"] if p["port"] == int(remote)]
    assert port["targetPort"] in (grafana.CONTAINER_PORT, "grafana")


@pytest.mark.parametrize("flag", ["yes", "1"])
def test_grafana_flag_is_validated(flag: str) -> None:
    with pytest.raises(ConfigError) as error:
        load_stack_config("dev", {"grafana": flag})
    assert error.value.key == "gpu-inference:grafana"
