"""The policy pack's validation functions on the real program's resources (mock engine): every
policy passes on both stacks as configured, and a modified copy of a real resource violates it with
a message that says what to fix. The PulumiPolicy wrapper is exercised the way the Pulumi CLI calls
it."""

from __future__ import annotations

import copy
from typing import Any

import pytest
from pulumi_policy import ResourceValidationArgs, ResourceValidationPolicy

from infra import gpu_spec
from policy.pack import resource_policies
from policy.policies import (
    CLUSTER,
    LAUNCH_TEMPLATE,
    NODE_GROUP,
    POLICIES,
    WORKLOAD_TYPES,
    StackInfo,
    eks_api_not_world_open_in_production,
    eks_secrets_encrypted_with_kms,
    gpu_node_groups_spot_outside_production,
    gpu_pods_tolerate_taint_and_request_gpu,
    images_pinned_by_digest,
    imdsv2_required,
    rendered_by_chart,
    violations,
)
from rehearsal.mockengine import Inventory, Resource

Stacks = dict[str, tuple[StackInfo, Inventory]]
DEPLOYMENT = "kubernetes:apps/v1:Deployment"
DIGEST = "sha256:" + "b" * 64


def gpu_deployment() -> dict[str, Any]:
    """A GPU Deployment built from the shared GPU spec, the way infra/inference.py builds its
    own."""
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": "embeddings", "namespace": "inference"},
        "spec": {
            "template": {
                "spec": {
                    "tolerations": [gpu_spec.toleration()],
                    "affinity": {"nodeAffinity": gpu_spec.node_affinity()},
                    "containers": [
                        {
                            "name": "server",
                            "image": f"123456789012.dkr.ecr.us-west-2.amazonaws.com/gpu@{DIGEST}",
                            "resources": {"limits": {gpu_spec.GPU_RESOURCE: 1}},
                        }
                    ],
                }
            }
        },
    }


def gpu_workloads(inventory: Inventory) -> list[dict[str, Any]]:
    """The program's own GPU workloads (the inference Deployment), as registered."""
    found = [
        r.inputs
        for r in inventory.resources
        if r.type in WORKLOAD_TYPES
        and r.rendered_by is None
        and gpu_spec.GPU_RESOURCE in str(r.inputs)
    ]
    assert found, "the program registers no GPU workload: nothing for the GPU policies to check"
    return found


def _one(inventory: Inventory, type_: str, where: str = "") -> Resource:
    return next(r for r in inventory.of_type(type_) if where in r.name)


@pytest.mark.parametrize("stack", ["dev", "prod"])
def test_every_policy_passes_on_the_real_stack(stack_inventories: Stacks, stack: str) -> None:
    info, inventory = stack_inventories[stack]
    found = {
        f"{r.type} {r.name}": v
        for r in inventory.resources
        if (v := violations(r.type, r.inputs, info, r.urn))
    }
    assert found == {}
    # Not vacuous: every policy looked at real resources of its types in this stack.
    types = {r.type for r in inventory.resources}
    for policy in POLICIES:
        assert policy.resource_types is not None
        assert policy.resource_types & types, f"{policy.name}: nothing to validate in {stack}"


def test_stack_production_flags_come_from_the_stack_files(stack_inventories: Stacks) -> None:
    assert stack_inventories["dev"][0].production is False
    assert stack_inventories["prod"][0].production is True


# --- GPU pods -------------------------------------------------------------------------------------


@pytest.mark.parametrize("stack", ["dev", "prod"])
def test_gpu_workloads_pass(stack_inventories: Stacks, stack: str) -> None:
    info, inventory = stack_inventories[stack]
    for workload in gpu_workloads(inventory):
        assert gpu_pods_tolerate_taint_and_request_gpu(DEPLOYMENT, workload, info) == []
        assert images_pinned_by_digest(DEPLOYMENT, workload, info) == []
        assert "@sha256:" in workload["spec"]["template"]["spec"]["containers"][0]["image"]


def test_gpu_pod_without_toleration_violates(stack_inventories: Stacks) -> None:
    info, inventory = stack_inventories["dev"]
    broken = copy.deepcopy(gpu_workloads(inventory)[0])
    broken["spec"]["template"]["spec"]["tolerations"] = []
    [message] = gpu_pods_tolerate_taint_and_request_gpu(DEPLOYMENT, broken, info)
    assert "does not tolerate the GPU node taint nvidia.com/gpu=true:NoSchedule" in message


def test_pod_on_gpu_nodes_without_gpu_request_violates(stack_inventories: Stacks) -> None:
    info, inventory = stack_inventories["dev"]
    broken = copy.deepcopy(gpu_workloads(inventory)[0])
    for container in broken["spec"]["template"]["spec"]["containers"]:
        container["resources"] = {"limits": {"cpu": "2"}}
    [message] = gpu_pods_tolerate_taint_and_request_gpu(DEPLOYMENT, broken, info)
    assert "placed on GPU nodes but requests no nvidia.com/gpu" in message


def test_gpu_node_agents_may_tolerate_the_taint_without_a_gpu(stack_inventories: Stacks) -> None:
    info, _ = stack_inventories["dev"]
    agent = copy.deepcopy(gpu_deployment())
    agent["kind"] = "DaemonSet"
    agent["spec"]["template"]["spec"]["containers"][0]["resources"] = {}
    daemonset = "kubernetes:apps/v1:DaemonSet"
    assert gpu_pods_tolerate_taint_and_request_gpu(daemonset, agent, info) == []


@pytest.mark.parametrize(
    ("image", "expected"),
    [
        ("registry.example/gpu:latest", "uses the `latest` tag"),
        (f"registry.example/gpu:latest@{DIGEST}", "uses the `latest` tag"),
        ("registry.example:5000/gpu:1.2.3", "has no @sha256 digest"),
        ("registry.example/gpu", "has no @sha256 digest"),
    ],
)
def test_unpinned_images_violate(stack_inventories: Stacks, image: str, expected: str) -> None:
    info, inventory = stack_inventories["dev"]
    broken = copy.deepcopy(gpu_workloads(inventory)[0])
    container = broken["spec"]["template"]["spec"]["containers"][0]
    container["image"] = image
    [message] = images_pinned_by_digest(DEPLOYMENT, broken, info)
    assert expected in message
    assert f"container {container['name']!r}" in message


def _chart_workload(inventory: Inventory, chart: str, kind: str) -> Resource:
    return next(
        r
        for r in inventory.chart_resources()
        if r.type == f"kubernetes:apps/v1:{kind}" and f"-{chart}:" in r.name
    )


def test_chart_images_pass_by_version_tag_and_the_same_image_in_our_workload_does_not(
    stack_inventories: Stacks,
) -> None:
    info, inventory = stack_inventories["dev"]
    exporter = _chart_workload(inventory, "dcgm-exporter", "DaemonSet")
    image = exporter.inputs["spec"]["template"]["spec"]["containers"][0]["image"]
    assert "@" not in image, image
    assert ":" in image.rsplit("/", 1)[-1], image
    assert images_pinned_by_digest(exporter.type, exporter.inputs, info, exporter.urn) == []
    # The program's own objects carry no chart URN: the tag alone is a violation.
    [message] = images_pinned_by_digest(exporter.type, exporter.inputs, info)
    assert "has no @sha256 digest" in message


@pytest.mark.parametrize(
    ("image", "expected"),
    [
        ("nvcr.io/nvidia/k8s/dcgm-exporter:latest", "uses the `latest` tag"),
        ("nvcr.io/nvidia/k8s/dcgm-exporter", "neither a version tag nor a digest"),
    ],
)
def test_chart_images_without_a_version_violate(
    stack_inventories: Stacks, image: str, expected: str
) -> None:
    info, inventory = stack_inventories["dev"]
    exporter = _chart_workload(inventory, "dcgm-exporter", "DaemonSet")
    broken = copy.deepcopy(exporter.inputs)
    broken["spec"]["template"]["spec"]["containers"][0]["image"] = image
    [message] = images_pinned_by_digest(exporter.type, broken, info, exporter.urn)
    assert expected in message
    assert "rendered by chart gpu-inference-dev-gpu-dcgm-exporter" in message


def test_chart_provenance_comes_from_the_urn_the_engine_sends() -> None:
    chart_child = (
        "urn:pulumi:dev::gpu-inference::gpu-inference:gpu:GpuStack$kubernetes:helm.sh/v4:Chart"
        "$kubernetes:apps/v1:DaemonSet::dev-gpu-dcgm-exporter:gpu-system/dcgm-exporter"
    )
    assert rendered_by_chart(chart_child) == "dev-gpu-dcgm-exporter"
    own = (
        "urn:pulumi:dev::gpu-inference::gpu-inference:inference:Inference"
        "$kubernetes:apps/v1:Deployment::x"
    )
    assert rendered_by_chart(own) is None
    assert rendered_by_chart(None) is None


# --- Node groups ----------------------------------------------------------------------------------


def test_on_demand_gpu_group_outside_production_violates(stack_inventories: Stacks) -> None:
    info, inventory = stack_inventories["dev"]
    broken = copy.deepcopy(_one(inventory, NODE_GROUP, "gpu").inputs)
    broken["capacityType"] = "ON_DEMAND"
    [message] = gpu_node_groups_spot_outside_production(NODE_GROUP, broken, info)
    assert "non-production stack 'dev' has capacityType ON_DEMAND; use SPOT" in message
    # Unset capacity is on-demand to EKS, so it violates too.
    del broken["capacityType"]
    assert gpu_node_groups_spot_outside_production(NODE_GROUP, broken, info)


def test_on_demand_gpu_fallback_is_allowed_in_production_only(stack_inventories: Stacks) -> None:
    info, inventory = stack_inventories["prod"]
    on_demand = _one(inventory, NODE_GROUP, "ondemand").inputs
    assert on_demand["capacityType"] == "ON_DEMAND"
    assert gpu_node_groups_spot_outside_production(NODE_GROUP, on_demand, info) == []
    staging = StackInfo(name="staging", production=False)
    assert gpu_node_groups_spot_outside_production(NODE_GROUP, on_demand, staging)


def test_system_node_group_may_be_on_demand(stack_inventories: Stacks) -> None:
    info, inventory = stack_inventories["dev"]
    system = _one(inventory, NODE_GROUP, "system").inputs
    assert gpu_node_groups_spot_outside_production(NODE_GROUP, system, info) == []


# --- EKS ------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("cidrs", "expected"),
    [(["0.0.0.0/0"], "open to 0.0.0.0/0"), (None, "no publicAccessCidrs")],
)
def test_world_open_api_in_production_violates(
    stack_inventories: Stacks, cidrs: list[str] | None, expected: str
) -> None:
    info, inventory = stack_inventories["prod"]
    broken = copy.deepcopy(inventory.one(CLUSTER).inputs)
    broken["vpcConfig"]["publicAccessCidrs"] = cidrs
    [message] = eks_api_not_world_open_in_production(CLUSTER, broken, info)
    assert expected in message


def test_world_open_api_is_allowed_outside_production_and_when_private(
    stack_inventories: Stacks,
) -> None:
    dev_info, dev = stack_inventories["dev"]
    open_dev = copy.deepcopy(dev.one(CLUSTER).inputs)
    open_dev["vpcConfig"]["publicAccessCidrs"] = ["0.0.0.0/0"]
    assert eks_api_not_world_open_in_production(CLUSTER, open_dev, dev_info) == []
    prod_info, prod = stack_inventories["prod"]
    private = copy.deepcopy(prod.one(CLUSTER).inputs)
    private["vpcConfig"].update(endpointPublicAccess=False, publicAccessCidrs=["0.0.0.0/0"])
    assert eks_api_not_world_open_in_production(CLUSTER, private, prod_info) == []


@pytest.mark.parametrize(
    "mutate",
    [
        lambda c: c.pop("encryptionConfig"),
        lambda c: c["encryptionConfig"].update(resources=["configmaps"]),
        lambda c: c["encryptionConfig"].update(provider={}),
    ],
)
def test_cluster_without_kms_secrets_encryption_violates(
    stack_inventories: Stacks, mutate: Any
) -> None:
    info, inventory = stack_inventories["dev"]
    broken = copy.deepcopy(inventory.one(CLUSTER).inputs)
    mutate(broken)
    [message] = eks_secrets_encrypted_with_kms(CLUSTER, broken, info)
    assert "no KMS envelope encryption of secrets" in message


# --- IMDSv2 ---------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "metadata_options", [{"httpTokens": "optional"}, {}, {"httpEndpoint": "enabled"}]
)
def test_launch_template_allowing_imdsv1_violates(
    stack_inventories: Stacks, metadata_options: dict[str, str]
) -> None:
    info, inventory = stack_inventories["dev"]
    broken = copy.deepcopy(inventory.of_type(LAUNCH_TEMPLATE)[0].inputs)
    broken["metadataOptions"] = metadata_options
    [message] = imdsv2_required(LAUNCH_TEMPLATE, broken, info)
    assert "allows IMDSv1" in message
    assert "httpTokens: required" in message


def test_node_group_without_launch_template_violates(stack_inventories: Stacks) -> None:
    info, inventory = stack_inventories["dev"]
    broken = copy.deepcopy(_one(inventory, NODE_GROUP, "gpu").inputs)
    del broken["launchTemplate"]
    [message] = imdsv2_required(NODE_GROUP, broken, info)
    assert "no launch template" in message


# --- The PulumiPolicy wrapper ---------------------------------------------------------------------


def test_wrapper_reports_violations_with_the_resource_urn(stack_inventories: Stacks) -> None:
    info, inventory = stack_inventories["dev"]
    group = _one(inventory, NODE_GROUP, "gpu")
    broken = {**group.inputs, "capacityType": "ON_DEMAND"}
    reported: list[tuple[str, str | None]] = []
    for policy in resource_policies(stack_info=lambda: info):
        args = ResourceValidationArgs(
            resource_type=NODE_GROUP,
            props=broken,
            urn=group.urn,
            name=group.name,
            opts=None,  # type: ignore[arg-type]
            provider=None,
        )
        assert isinstance(policy, ResourceValidationPolicy)
        validate = policy.validate
        assert callable(validate)
        validate(args, lambda message, urn: reported.append((message, urn)))
    assert len(reported) == 1
    assert "use SPOT" in reported[0][0]
    assert reported[0][1] == group.urn


def test_wrapper_has_one_mandatory_policy_per_spec() -> None:
    policies = resource_policies(stack_info=lambda: StackInfo("dev", False))
    assert [p.name for p in policies] == [spec.name for spec in POLICIES]
    assert all(p.enforcement_level is not None for p in policies)
    assert {p.enforcement_level.value for p in policies if p.enforcement_level} == {"mandatory"}
