"""The gate sees every optional feature: each stack is also rendered with the all-options overlay
(rehearsal/overlay.py), and a defect planted in an object only an optional feature creates fails
the gate, naming the object."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml

from checks.chart_values import check_chart_values
from checks.checkov_scan import Target, check_checkov
from checks.policy_check import check_policies, stack_info
from checks.report import CheckResult
from checks.synth_render import StackRender
from infra import gpu
from policy.policies import StackInfo
from rehearsal import synth
from rehearsal.mockengine import Inventory, run_stack, stacks
from rehearsal.overlay import SUFFIX, all_options

DEVICE_PLUGIN = Path("manifests/charts/gpu-system-nvidia-device-plugin")


def render(tmp_path: Path, stack: str, overrides: dict[str, Any], name: str) -> StackRender:
    out = tmp_path / name
    synth.write(run_stack(stack, overrides), stack, out)
    return StackRender(name, out)


def render_all_options(tmp_path: Path, stack: str = "dev") -> StackRender:
    return render(tmp_path, stack, all_options(stack), stack + SUFFIX)


@pytest.fixture(scope="module")
def dev_inventory() -> Inventory:
    return run_stack("dev", all_options("dev"))


@pytest.fixture(scope="module")
def dev_all_options(
    dev_inventory: Inventory, tmp_path_factory: pytest.TempPathFactory
) -> StackRender:
    out = tmp_path_factory.mktemp("synth") / f"dev{SUFFIX}"
    synth.write(dev_inventory, "dev", out)
    return StackRender(out.name, out)


def test_the_overlay_renders_what_the_committed_stacks_leave_off(
    dev_all_options: StackRender,
) -> None:
    files = {path.name for path in dev_all_options.manifests_dir.rglob("*.yaml")}
    # Objects no committed stack has (tests/infra/test_synth.py counts theirs).
    assert {
        "gpu-system-configmap-nvidia-device-plugin-configs.yaml",  # time-slicing
        "inference-secret-embeddings-api-keys.yaml",  # API keys
        "monitoring-secret-alertmanager-receivers.yaml",  # receivers with credentials
    } <= files
    config = dev_all_options.config()
    assert config["gpu-inference:timeSlicingReplicas"] == "2"
    assert config["gpu-inference:apiKeys"] == "[secret]"
    registered = list(dev_all_options.registered())
    assert "aws:route53/record:Record" in {r.type for r in registered}  # route53ZoneId
    nlb = [
        r.inputs
        for r in registered
        if r.type == "kubernetes:core/v1:Service" and r.inputs["spec"].get("type") == "LoadBalancer"
    ]
    [service] = nlb
    annotations = service["metadata"]["annotations"]
    assert annotations["service.beta.kubernetes.io/aws-load-balancer-scheme"] == "internet-facing"
    assert "service.beta.kubernetes.io/aws-load-balancer-ssl-cert" in annotations  # TLS
    # kubernetesSupportType: EXTENDED, the cluster's upgrade policy and its pinned AMI release.
    [cluster] = [r.inputs for r in registered if r.type == "aws:eks/cluster:Cluster"]
    assert cluster["upgradePolicy"] == {"supportType": "EXTENDED"}
    groups = [r.inputs for r in registered if r.type == "aws:eks/nodeGroup:NodeGroup"]
    assert {g["releaseVersion"] for g in groups} == {config["gpu-inference:amiReleaseVersion"]}


def test_a_typo_in_an_optional_features_chart_values_fails_the_gate_by_name(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    real = gpu.device_plugin_values

    def planted(args: gpu.GpuStackArgs) -> dict[str, Any]:
        values = real(args)
        if "config" in values:  # only with time-slicing, which no committed stack turns on
            values["config"]["defualt"] = values["config"].pop("default")
        return values

    monkeypatch.setattr(gpu, "device_plugin_values", planted)
    result = check_chart_values([render_all_options(tmp_path)])
    [finding] = [str(f) for f in result.findings]
    assert "stack dev-all-options: chart nvidia-device-plugin 0.18.2" in finding
    assert "`config.defualt`" in finding
    assert "infra/gpu.py" in finding


@pytest.fixture(scope="module")
def device_plugin_checkov(
    checkov: Path, dev_all_options: StackRender, tmp_path_factory: pytest.TempPathFactory
) -> dict[str, CheckResult]:
    """checkov over the time-sliced device plugin as the program renders it, and with the named
    strategies removed (then the chart gives the plugin CAP_SYS_ADMIN, infra/gpu.py): one run."""
    real = gpu.device_plugin_values

    def privileged(args: gpu.GpuStackArgs) -> dict[str, Any]:
        values = real(args)
        values.pop("migStrategy", None)
        values.pop("deviceListStrategy", None)
        return values

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(gpu, "device_plugin_values", privileged)
        planted = render_all_options(tmp_path_factory.mktemp("planted"))
    targets = {
        "as rendered": Target(dev_all_options.root / DEVICE_PLUGIN, "kubernetes", "as rendered"),
        "planted": Target(planted.root / DEVICE_PLUGIN, "kubernetes", "planted"),
    }
    result = check_checkov(list(targets.values()))
    assert result.inspected > 0
    by_target = {label: CheckResult(label) for label in targets}
    for finding in result.findings:
        [label] = [k for k, t in targets.items() if finding.subject.startswith(str(t.path))]
        by_target[label].findings.append(finding)
    return by_target


def test_the_time_sliced_device_plugin_passes_checkov(
    device_plugin_checkov: dict[str, CheckResult],
) -> None:
    assert device_plugin_checkov["as rendered"].findings == []


def test_a_privileged_time_sliced_device_plugin_fails_checkov_by_name(
    device_plugin_checkov: dict[str, CheckResult],
) -> None:
    findings = device_plugin_checkov["planted"].findings
    failed = {f.message.split(" ", 1)[0] for f in findings}
    assert {"CKV_K8S_25", "CKV_K8S_39"} <= failed, findings
    assert all("[DaemonSet.gpu-system.nvidia-device-plugin]" in f.message for f in findings)


def test_the_policy_pack_checks_the_render_as_rendered_not_the_stack_file(tmp_path: Path) -> None:
    """An override that breaks a policy is caught: the check reads the render, not the stack."""
    groups = yaml.safe_load((Path(__file__).parents[2] / "Pulumi.dev.yaml").read_text())["config"][
        "gpu-inference:gpuNodeGroups"
    ]
    on_demand = {**groups[0], "name": "gpu-ondemand", "capacityType": "ON_DEMAND"}
    overridden = render(tmp_path, "dev", {"gpuNodeGroups": [*groups, on_demand]}, "dev-override")
    result = check_policies([overridden])
    [finding] = [str(f) for f in result.findings]
    assert "gpu-node-groups-spot-outside-production" in finding
    assert "aws:eks/nodeGroup:NodeGroup gpu-inference-dev-gpu-ondemand" in finding


def test_the_policy_check_sees_every_resource_the_engine_registered(
    dev_inventory: Inventory, dev_all_options: StackRender
) -> None:
    read = {r.urn: r for r in dev_all_options.registered()}
    assert set(read) == {r.urn for r in dev_inventory.resources}
    for resource in dev_inventory.resources:
        # As the synth writes them: secrets masked (a chart's Secret data too).
        shown = synth.masked_object if resource.rendered_by else synth.masked
        assert read[resource.urn].inputs == shown(resource.inputs), resource.name
    assert stack_info(dev_all_options) == StackInfo("dev", production=False)


def test_make_check_gates_every_stack_as_committed_and_with_all_options() -> None:
    makefile = (Path(__file__).parents[2] / "Makefile").read_text()
    recipe = makefile.split("\ncheck:", 1)[1].split("\n\n", 1)[0]
    gate = next(line for line in recipe.splitlines() if "-m checks" in line).split()
    for stack in stacks():
        assert f"synth STACK={stack}" in recipe
        assert f"synth-all-options STACK={stack}" in recipe
        assert {stack, stack + SUFFIX} <= set(gate), gate
