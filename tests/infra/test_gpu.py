"""The GPU component under the mock engine: device plugin and DCGM exporter, placement, sharing."""

from __future__ import annotations

from typing import Any

import pulumi
import pytest
import yaml

from infra import config, gpu, gpu_spec, scrape, versions
from rehearsal.charts import pin_of
from rehearsal.mockengine import Inventory, Resource, run_function

CHART = "kubernetes:helm.sh/v4:Chart"


def build(replicas: int) -> Inventory:
    def program() -> None:
        gpu.GpuStack(
            "gpu", gpu.GpuStackArgs(namespace="gpu-system", time_slicing_replicas=replicas)
        )

    return run_function(program)


@pytest.fixture(scope="module")
def plain() -> Inventory:
    return build(1)


@pytest.fixture(scope="module")
def sliced() -> Inventory:
    return build(4)


def chart(inventory: Inventory, name: str) -> Resource:
    return inventory.one(CHART, f"gpu-{name}")


def values(inventory: Inventory, name: str) -> dict[str, Any]:
    found: dict[str, Any] = chart(inventory, name).inputs["values"]
    return found


@pytest.mark.parametrize(
    ("name", "pinned"),
    [("device-plugin", versions.NVIDIA_DEVICE_PLUGIN), ("dcgm-exporter", versions.DCGM_EXPORTER)],
)
def test_charts_are_the_pinned_upstream_ones(
    plain: Inventory, name: str, pinned: versions.HelmChart
) -> None:
    render = plain.render_of(pinned.chart)
    assert render.resource == chart(plain, name)
    assert pin_of(render.source.archive) == pinned
    assert render.resource.inputs["namespace"] == "gpu-system"


@pytest.mark.parametrize("name", ["device-plugin", "dcgm-exporter"])
def test_daemonsets_run_on_gpu_nodes_only_and_tolerate_the_taint(
    plain: Inventory, name: str
) -> None:
    chart_values = values(plain, name)
    assert chart_values["tolerations"] == [gpu_spec.toleration()], name
    assert chart_values["affinity"] == {"nodeAffinity": gpu_spec.node_affinity()}, name
    taint = gpu_spec.GPU_TAINT
    (toleration,) = chart_values["tolerations"]
    assert (toleration["key"], toleration["value"], toleration["effect"]) == (
        taint.key,
        taint.value,
        taint.effect,
    )


def test_namespace_allows_the_host_access_the_daemonsets_need(plain: Inventory) -> None:
    namespace = plain.one("kubernetes:core/v1:Namespace")
    assert namespace.inputs["metadata"]["name"] == "gpu-system"
    assert namespace.inputs["metadata"]["labels"]["pod-security.kubernetes.io/enforce"] == (
        "privileged"
    )


def test_dcgm_exporter_attributes_gpus_to_pods_and_is_scraped_by_our_job(plain: Inventory) -> None:
    dcgm = values(plain, "dcgm-exporter")
    assert dcgm["kubeletPath"] == "/var/lib/kubelet/pod-resources"
    # The ServiceMonitor CRD does not exist without the Prometheus Operator: rendering it would
    # fail.
    assert dcgm["serviceMonitor"] == {"enabled": False}
    assert dcgm["extraEnv"] == []
    # scrape.dcgm_job keeps pods by the app name and `metrics` port name the chart renders.
    [daemonset] = [
        o for o in plain.render_of("dcgm-exporter").rendered.objects if o["kind"] == "DaemonSet"
    ]
    pod = daemonset["spec"]["template"]
    assert pod["metadata"]["labels"]["app.kubernetes.io/name"] == scrape.DCGM_APP_NAME
    ports = [p["name"] for c in pod["spec"]["containers"] for p in c.get("ports", [])]
    assert scrape.DCGM_METRICS_PORT_NAME in ports


def test_the_exporters_dcgm_is_its_own_and_binds_nothing_on_the_node(plain: Inventory) -> None:
    """The node monitoring agent's nv-hostengine holds hostPort 5555 on every GPU node
    (infra/cluster.py): the exporter's embedded engine must stay in its pod's network namespace,
    and connects to no other engine."""
    [daemonset] = [
        o for o in plain.render_of("dcgm-exporter").rendered.objects if o["kind"] == "DaemonSet"
    ]
    pod = daemonset["spec"]["template"]["spec"]
    assert not pod.get("hostNetwork")
    for container in pod["containers"]:
        assert not [p for p in container.get("ports", []) if "hostPort" in p], container["name"]
        arguments = [*container.get("command", []), *container.get("args", [])]
        assert not {"-r", "--remote-hostengine-info"} & set(arguments), arguments


def test_no_time_slicing_config_with_one_replica(plain: Inventory) -> None:
    assert "config" not in values(plain, "device-plugin")


def test_time_slicing_shares_each_gpu_among_the_configured_replicas(sliced: Inventory) -> None:
    config = values(sliced, "device-plugin")["config"]
    assert config["default"] == gpu.DEVICE_PLUGIN_CONFIG_NAME
    parsed = yaml.safe_load(config["map"][gpu.DEVICE_PLUGIN_CONFIG_NAME])
    assert parsed["version"] == "v1"
    sharing = parsed["sharing"]["timeSlicing"]
    assert sharing["resources"] == [{"name": gpu_spec.GPU_RESOURCE, "replicas": 4}]
    assert sharing["renameByDefault"] is False
    assert sharing["failRequestsGreaterThanOne"] is True
    # ...and DCGM maps the shared replicas back to pods.
    assert {"name": "KUBERNETES_VIRTUAL_GPUS", "value": "true"} in values(sliced, "dcgm-exporter")[
        "extraEnv"
    ]


def daemonset(inventory: Inventory, name: str) -> dict[str, Any]:
    objects = inventory.render_of("nvidia-device-plugin").rendered.objects
    return next(o for o in objects if o["kind"] == "DaemonSet" and o["metadata"]["name"] == name)


def pod_containers(workload: dict[str, Any]) -> list[dict[str, Any]]:
    spec = workload["spec"]["template"]["spec"]
    containers: list[dict[str, Any]] = spec.get("initContainers", []) + spec["containers"]
    return containers


@pytest.mark.parametrize("fixture", ["plain", "sliced"])
def test_the_device_plugin_stays_unprivileged_with_or_without_time_slicing(
    request: pytest.FixtureRequest, fixture: str
) -> None:
    """With a config map the chart would add CAP_SYS_ADMIN unless the MIG and device-list
    strategies are named (templates/_helpers.tpl `requiresCapSysAdmin`, chart 0.18.2)."""
    inventory: Inventory = request.getfixturevalue(fixture)
    plugin = daemonset(inventory, "nvidia-device-plugin")
    contexts = {c["name"]: c.get("securityContext") for c in pod_containers(plugin)}
    assert contexts["nvidia-device-plugin-ctr"] == {
        "allowPrivilegeEscalation": False,
        "capabilities": {"drop": ["ALL"]},
    }
    for name, context in contexts.items():
        assert not (context or {}).get("capabilities", {}).get("add"), f"{name}: {context}"
    if fixture == "sliced":
        assert contexts["nvidia-device-plugin-sidecar"] == contexts["nvidia-device-plugin-ctr"]
        strategies = values(inventory, "device-plugin")
        config = yaml.safe_load(strategies["config"]["map"][gpu.DEVICE_PLUGIN_CONFIG_NAME])
        # The flags win over the config file: they must say the same.
        assert strategies["migStrategy"] == config["flags"]["migStrategy"] == "none"
        assert strategies["deviceListStrategy"] == "envvar"


def test_the_mps_control_daemon_the_chart_always_renders_runs_on_no_node(
    sliced: Inventory,
) -> None:
    """Backs the checkov skips of the MPS daemon: it selects nvidia.com/mps.capable=true, a label
    only gpu-feature-discovery sets (under MPS sharing), which is off; the nodes never carry it."""
    mps = daemonset(sliced, "nvidia-device-plugin-mps-control-daemon")
    assert mps["spec"]["template"]["spec"]["nodeSelector"] == {"nvidia.com/mps.capable": "true"}
    assert values(sliced, "device-plugin")["gfd"] == {"enabled": False}
    for accelerator in {t.gpu_model for t in config.GPU_INSTANCE_TYPES.values()}:
        assert "nvidia.com/mps.capable" not in gpu_spec.gpu_node_labels(accelerator)
    assert "mps" not in values(sliced, "device-plugin")["config"]["map"]["default"]


def test_children_are_parented_to_the_component(plain: Inventory) -> None:
    component = plain.one("gpu-inference:gpu:GpuStack")
    children = {r.name for r in plain.children(component)}
    assert children == {"gpu-namespace", "gpu-device-plugin", "gpu-dcgm-exporter"}


def test_invalid_replicas_fail_with_the_value() -> None:
    with pytest.raises(ValueError, match="time_slicing_replicas=0"):
        gpu.GpuStackArgs(namespace="gpu-system", time_slicing_replicas=0)


def test_kubernetes_provider_comes_through_opts() -> None:
    def program() -> None:
        provider = pulumi.ProviderResource("kubernetes", "k8s-test", {})
        gpu.GpuStack(
            "gpu",
            gpu.GpuStackArgs(namespace="gpu-system", time_slicing_replicas=1),
            opts=pulumi.ResourceOptions(providers={"kubernetes": provider}),
        )

    inventory = run_function(program)
    for resource in inventory.resources:
        if resource.type.startswith("kubernetes:"):
            assert resource.provider is not None, resource.name
            assert resource.provider.endswith("k8s-test"), resource.name
