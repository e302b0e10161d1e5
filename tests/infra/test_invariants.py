"""Cross-component invariants, checked on every stack's whole program."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

from infra import gpu_spec
from rehearsal.charts import pin_of
from rehearsal.mockengine import ROOT, Inventory, Secret, load_stack_config

WORLD = ("0.0.0.0/0", "::/0")
TAG = "aws:autoscaling/tag:Tag"


def occurrences(value: Any, path: str = "") -> list[tuple[str, Any]]:
    """(path, scalar) for every scalar in nested inputs."""
    if isinstance(value, Secret):
        return occurrences(value.value, path)
    if isinstance(value, dict):
        return [o for k, v in value.items() for o in occurrences(v, f"{path}.{k}" if path else k)]
    if isinstance(value, list):
        return [o for i, v in enumerate(value) for o in occurrences(v, f"{path}[{i}]")]
    return [(path, value)]


def template_view(
    tags: dict[str, str],
) -> tuple[dict[str, str], list[dict[str, str]], dict[str, str]]:
    """What cluster-autoscaler reads from node-template tags: labels, taints, resources."""
    prefix = gpu_spec.AUTOSCALER_TAG_PREFIX
    labels = {
        k.removeprefix(f"{prefix}/label/"): v
        for k, v in tags.items()
        if k.startswith(f"{prefix}/label/")
    }
    taints = []
    for key, value in tags.items():
        if key.startswith(f"{prefix}/taint/"):
            taint_value, _, effect = value.partition(":")
            taints.append(
                {
                    "key": key.removeprefix(f"{prefix}/taint/"),
                    "value": taint_value,
                    "effect": effect,
                }
            )
    resources = {
        k.removeprefix(f"{prefix}/resources/"): v
        for k, v in tags.items()
        if k.startswith(f"{prefix}/resources/")
    }
    return labels, taints, resources


def test_node_taints_labels_and_autoscaler_tags_agree(inventory: Inventory, stack: str) -> None:
    """What an empty group's template claims is exactly what its nodes will have."""
    tags = inventory.of_type(TAG)
    effects = {
        "NO_SCHEDULE": "NoSchedule",
        "NO_EXECUTE": "NoExecute",
        "PREFER_NO_SCHEDULE": "PreferNoSchedule",
    }
    for group in load_stack_config(stack).node_groups.gpu:
        assert group.gpu is not None
        node_group = next(
            r
            for r in inventory.of_type("aws:eks/nodeGroup:NodeGroup")
            if r.inputs["nodeGroupName"] == group.name
        )
        asg_tags = {
            t.inputs["tag"]["key"]: t.inputs["tag"]["value"]
            for t in tags
            if t.inputs["autoscalingGroupName"].startswith(f"eks-{group.name}-")
        }
        labels, taints, resources = template_view(asg_tags)
        # EKS itself labels every node with its capacity type; the template must say it too.
        assert labels == {
            **node_group.inputs["labels"],
            gpu_spec.CAPACITY_TYPE_LABEL: node_group.inputs["capacityType"],
        }
        node_taints = [{**t, "effect": effects[t["effect"]]} for t in node_group.inputs["taints"]]
        assert taints == node_taints
        assert resources == {gpu_spec.GPU_RESOURCE: str(group.gpu.gpus)}
        # The toleration every GPU pod carries matches the node taint.
        assert gpu_spec.toleration() == {**node_taints[0], "operator": "Equal"}
        affinity = gpu_spec.node_affinity()["requiredDuringSchedulingIgnoredDuringExecution"]
        for expr in affinity["nodeSelectorTerms"][0]["matchExpressions"]:
            assert labels[expr["key"]] in expr["values"]


def test_every_kubernetes_object_and_chart_uses_the_cluster_provider(inventory: Inventory) -> None:
    (provider,) = inventory.of_type("pulumi:providers:kubernetes")
    k8s = [r for r in inventory.resources if r.type.startswith("kubernetes:")]
    assert k8s, "the program deploys Kubernetes objects"
    for r in k8s:
        assert r.provider == provider.urn, f"{r.type} {r.name} uses {r.provider}"


def test_imdsv2_required_on_every_launch_template(inventory: Inventory) -> None:
    templates = inventory.of_type("aws:ec2/launchTemplate:LaunchTemplate")
    assert len(templates) == len(inventory.of_type("aws:eks/nodeGroup:NodeGroup"))
    for t in templates:
        metadata = t.inputs["metadataOptions"]
        assert metadata["httpTokens"] == "required", t.name
        assert metadata["httpEndpoint"] == "enabled", t.name


def hop_limits(inventory: Inventory) -> dict[str, int]:
    """IMDS hop limit of each node group's nodes, by node group name."""
    templates = {
        t.name: t.inputs["metadataOptions"]["httpPutResponseHopLimit"]
        for t in inventory.of_type("aws:ec2/launchTemplate:LaunchTemplate")
    }
    return {
        g.inputs["nodeGroupName"]: next(
            v for k, v in templates.items() if k.endswith(f"-{g.inputs['nodeGroupName']}-lt")
        )
        for g in inventory.of_type("aws:eks/nodeGroup:NodeGroup")
    }


def test_ebs_csi_driver_reaches_imds_where_volumes_attach(inventory: Inventory) -> None:
    """The EBS CSI driver needs IMDS from a pod (hop limit >= 2, its docs/install.md "Metadata") on
    the nodes that its controller runs on and where volumes attach: the system nodes."""
    (ebs,) = [
        a
        for a in inventory.of_type("aws:eks/addon:Addon")
        if a.inputs["addonName"] == "aws-ebs-csi-driver"
    ]
    selector = json.loads(ebs.inputs["configurationValues"])["controller"]["nodeSelector"]
    limits = hop_limits(inventory)
    for group in inventory.of_type("aws:eks/nodeGroup:NodeGroup"):
        runs_there = selector.items() <= group.inputs["labels"].items()
        if runs_there:
            assert limits[group.inputs["nodeGroupName"]] >= 2, group.name


def test_gpu_nodes_keep_imds_from_their_pods(inventory: Inventory) -> None:
    """No pod on a GPU node needs instance metadata; the inference pods must not reach the node
    role's credentials."""
    limits = hop_limits(inventory)
    gpu = [g for g in limits if g != "system"]
    assert gpu
    for name in gpu:
        assert limits[name] == 1, name


def test_encryption_everywhere(inventory: Inventory) -> None:
    for t in inventory.of_type("aws:ec2/launchTemplate:LaunchTemplate"):
        for device in t.inputs["blockDeviceMappings"]:
            assert device["ebs"]["encrypted"] == "true", t.name
    for key in inventory.of_type("aws:kms/key:Key"):
        assert key.inputs["enableKeyRotation"] is True, key.name
    assert inventory.one("aws:eks/cluster:Cluster").inputs["encryptionConfig"]["resources"] == [
        "secrets"
    ]


def test_nothing_is_open_to_the_world(inventory: Inventory, stack: str) -> None:
    """0.0.0.0/0 may only be the destination of egress routes (to the IGW or a NAT gateway), or the
    source range of the one internet-facing load balancer when the stack explicitly allows it."""
    allow_lb = (
        load_stack_config(stack).inference.internet_facing
        and "0.0.0.0/0" in load_stack_config(stack).inference.client_cidrs
    )
    for r in inventory.resources:
        for path, value in occurrences(r.inputs):
            if value not in WORLD:
                continue
            egress_route = r.type == "aws:ec2/route:Route" and path == "destinationCidrBlock"
            intended_lb = (
                allow_lb
                and r.type == "kubernetes:core/v1:Service"
                and "loadBalancerSourceRanges" in path
            )
            assert egress_route or intended_lb, f"{r.type} {r.name}: {path} = {value}"


def test_every_resource_lives_in_a_component_named_after_it(inventory: Inventory) -> None:
    by_urn = {r.urn: r for r in inventory.resources}
    for r in inventory.resources:
        parent = by_urn.get(r.parent or "")
        if parent is None:
            assert r.type.startswith("gpu-inference:"), (
                f"{r.type} {r.name} is not inside a component"
            )
            continue
        if r.rendered_by is not None:
            # Named by the provider: "<chart resource>:<namespace>/<object name>".
            assert r.name.startswith(f"{parent.name}:"), (
                f"{r.name} is not named after {parent.name}"
            )
            continue
        assert r.name.startswith(f"{parent.name}-"), f"{r.name} is not named after {parent.name}"


def test_component_tokens_name_their_module(inventory: Inventory) -> None:
    for r in inventory.resources:
        if r.type.startswith("gpu-inference:"):
            _, module, name = r.type.split(":")
            assert re.fullmatch(r"[A-Z][A-Za-z]+", name), r.type
            assert (ROOT / "infra" / f"{module}.py").exists(), r.type


def test_every_chart_installs_a_pinned_vendored_archive(inventory: Inventory) -> None:
    for chart in inventory.charts():
        archive = Path(chart.inputs["chart"])
        assert pin_of(archive).archive_name == archive.name, chart.name
        assert "repositoryOpts" not in chart.inputs, chart.name


def test_both_stacks_synthesise_different_realistic_platforms(
    dev: Inventory, prod: Inventory
) -> None:
    def count(inventory: Inventory, type_: str) -> int:
        return len(inventory.of_type(type_))

    assert count(dev, "aws:ec2/subnet:Subnet") == 4
    assert count(prod, "aws:ec2/subnet:Subnet") == 6
    assert count(prod, "aws:eks/nodeGroup:NodeGroup") > count(dev, "aws:eks/nodeGroup:NodeGroup")
    assert Path(ROOT / "Pulumi.prod.yaml").read_text() != Path(ROOT / "Pulumi.dev.yaml").read_text()
