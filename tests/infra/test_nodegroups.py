"""Node groups: the system group, spot GPU groups, launch templates and autoscaler ASG tags."""

from __future__ import annotations

import pytest

from infra import config, gpu_spec, versions
from rehearsal.mockengine import Inventory, Resource, load_stack_config

NODE_GROUP = "aws:eks/nodeGroup:NodeGroup"
TEMPLATE = "aws:ec2/launchTemplate:LaunchTemplate"
TAG = "aws:autoscaling/tag:Tag"


def groups(inventory: Inventory) -> dict[str, Resource]:
    return {r.inputs["nodeGroupName"]: r for r in inventory.of_type(NODE_GROUP)}


def test_one_group_per_configured_group(inventory: Inventory, stack: str) -> None:
    c = load_stack_config(stack)
    assert sorted(groups(inventory)) == sorted(["system", *(g.name for g in c.node_groups.gpu)])


def test_system_group_is_on_demand_untainted_and_labelled(inventory: Inventory, stack: str) -> None:
    system = groups(inventory)["system"].inputs
    assert system["capacityType"] == "ON_DEMAND"
    assert system["amiType"] == versions.SYSTEM_AMI_TYPE
    assert system.get("taints", []) == []
    assert system["labels"] == gpu_spec.SYSTEM_NODE_LABELS
    assert system["instanceTypes"] == list(
        load_stack_config(stack).node_groups.system.instance_types
    )


def test_gpu_groups_follow_the_config(inventory: Inventory, stack: str) -> None:
    by_name = groups(inventory)
    for group in load_stack_config(stack).node_groups.gpu:
        inputs = by_name[group.name].inputs
        assert inputs["capacityType"] == group.capacity_type
        assert inputs["instanceTypes"] == list(group.instance_types)
        assert inputs["amiType"] == versions.GPU_AMI_TYPE
        assert inputs["scalingConfig"] == {
            "minSize": group.min_size,
            "desiredSize": group.desired_size,
            "maxSize": group.max_size,
        }
        assert inputs["nodeRepairConfig"] == {"enabled": True}


def test_dev_gpu_group_is_spot_with_several_types_of_one_shape(dev: Inventory) -> None:
    inputs = groups(dev)["gpu-spot"].inputs
    assert inputs["capacityType"] == "SPOT"
    assert len(inputs["instanceTypes"]) >= 2
    assert len({config.GPU_INSTANCE_TYPES[t].shape for t in inputs["instanceTypes"]}) == 1


def test_gpu_groups_carry_the_gpu_spec_taint_and_labels(inventory: Inventory, stack: str) -> None:
    for group in load_stack_config(stack).node_groups.gpu:
        inputs = groups(inventory)[group.name].inputs
        assert inputs["taints"] == [
            {
                "key": gpu_spec.GPU_TAINT.key,
                "value": gpu_spec.GPU_TAINT.value,
                "effect": "NO_SCHEDULE",
            }
        ]
        assert inputs["labels"] == gpu_spec.gpu_node_labels(group.accelerator)
        assert inputs["labels"][gpu_spec.GPU_PRESENT_LABEL] == "true"


def test_pulumi_leaves_desired_size_to_the_autoscaler(inventory: Inventory) -> None:
    for group in inventory.of_type(NODE_GROUP):
        assert group.ignore_changes == ("scalingConfig.desiredSize",), group.name


def test_nodes_wait_for_the_networking_addons(inventory: Inventory) -> None:
    addons = {
        r.urn
        for r in inventory.of_type("aws:eks/addon:Addon")
        if r.inputs["addonName"] in {"vpc-cni", "kube-proxy", "eks-pod-identity-agent"}
    }
    for group in inventory.of_type(NODE_GROUP):
        assert addons <= set(group.depends_on), group.name


def test_each_group_has_its_own_launch_template(inventory: Inventory) -> None:
    templates = {r.name: r for r in inventory.of_type(TEMPLATE)}
    for group in inventory.of_type(NODE_GROUP):
        assert f"{group.name}-lt" in templates
        assert group.inputs["launchTemplate"]["id"].startswith("lt-")
        assert group.inputs["launchTemplate"]["version"] == "1"
        assert "diskSize" not in group.inputs, "disk size belongs to the launch template"


def test_gpu_root_volumes_fit_cuda_images(inventory: Inventory, stack: str) -> None:
    templates = {r.name: r for r in inventory.of_type(TEMPLATE)}
    by_name = groups(inventory)
    for group in load_stack_config(stack).node_groups.gpu:
        template = templates[f"{by_name[group.name].name}-lt"]
        (device,) = template.inputs["blockDeviceMappings"]
        assert device["deviceName"] == "/dev/xvda"
        assert device["ebs"]["volumeSize"] == group.disk_gib >= 100
        assert device["ebs"]["volumeType"] == "gp3"


def test_node_role_has_only_the_minimal_managed_policies(inventory: Inventory) -> None:
    node_policies = sorted(
        r.inputs["policyArn"].split("/")[-1]
        for r in inventory.of_type("aws:iam/rolePolicyAttachment:RolePolicyAttachment")
        if "-node-" in r.name
    )
    assert node_policies == sorted(
        ["AmazonEKSWorkerNodePolicy", "AmazonEC2ContainerRegistryPullOnly", "AmazonEKS_CNI_Policy"]
    )


@pytest.mark.parametrize("kind", ["label", "taint", "resources"])
def test_every_gpu_asg_has_node_template_tags(inventory: Inventory, stack: str, kind: str) -> None:
    tags = inventory.of_type(TAG)
    for group in load_stack_config(stack).node_groups.gpu:
        assert group.gpu is not None
        asg = [
            t.inputs
            for t in tags
            if t.inputs["autoscalingGroupName"].startswith(f"eks-{group.name}-")
        ]
        expected = gpu_spec.autoscaler_node_template_tags(
            group.gpu.gpus, group.accelerator, group.capacity_type
        )
        assert {t["tag"]["key"]: t["tag"]["value"] for t in asg} == expected
        assert any(f"/{kind}/" in t["tag"]["key"] for t in asg)
        assert all(t["tag"]["propagateAtLaunch"] is False for t in asg)


def test_the_gpu_resource_tag_counts_the_gpus_of_the_instance_type(prod: Inventory) -> None:
    key = f"{gpu_spec.AUTOSCALER_TAG_PREFIX}/resources/{gpu_spec.GPU_RESOURCE}"
    values = {t.inputs["tag"]["value"] for t in prod.of_type(TAG) if t.inputs["tag"]["key"] == key}
    assert values == {"1"}


def test_system_group_has_no_gpu_tags(inventory: Inventory) -> None:
    assert not [
        t
        for t in inventory.of_type(TAG)
        if t.inputs["autoscalingGroupName"].startswith("eks-system-")
    ]
