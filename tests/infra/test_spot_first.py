"""Spot first holds with `balance-similar-node-groups` on: no on-demand GPU group is ever "similar"
to a spot one, so cluster-autoscaler cannot split a spot scale-up onto on-demand GPUs.

Why this is the property to test (cluster-autoscaler-1.35.0, the app version of the pinned chart
9.59.0; READ_AT below): after the expander picks the best option, `ScaleUp` calls `balanceScaleUps`
(core/scaleup/orchestrator/orchestrator.go), which adds every group that `ComputeSimilarNodeGroups`
finds and splits the new nodes between them, ignoring expander priorities. Similarity on AWS is
`CreateAwsNodeInfoComparator` (processors/nodegroupset/aws_nodegroups.go) ->
`IsCloudProviderNodeInfoSimilar` (compare_nodegroups.go): equal capacity (GPU and CPU exact, memory
within a ratio) and `compareLabels`: every label not ignored must be on both nodes with one value.
Two groups of the same instance type (prod: gpu-spot-xl and gpu-ondemand) pass the capacity check,
so the labels alone decide. This test rebuilds the label sets cluster-autoscaler compares, from what
the program registered, and applies that rule with the ignored labels the rendered flags add.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable
from typing import Any

import pytest

from infra import gpu_spec, versions
from rehearsal.mockengine import Inventory, Resource, load_stack_config, run_stack

READ_AT = "1.35.0"
"""The cluster-autoscaler release whose source this module restates (tag cluster-autoscaler-1.35.0
of kubernetes/autoscaler). A pin past it fails below until the comparator is re-read there."""
CHART = "cluster-autoscaler"
NODE_GROUP = "aws:eks/nodeGroup:NodeGroup"
TAG = "aws:autoscaling/tag:Tag"
TEMPLATE_LABEL = f"{gpu_spec.AUTOSCALER_TAG_PREFIX}/label/"

# compare_nodegroups.go `BasicIgnoredLabels` (apiv1.LabelHostname, LabelZoneFailureDomain,
# LabelZoneRegion, LabelZoneFailureDomainStable, LabelZoneRegionStable and two literals).
BASIC_IGNORED = {
    "kubernetes.io/hostname",
    "failure-domain.beta.kubernetes.io/zone",
    "failure-domain.beta.kubernetes.io/region",
    "topology.kubernetes.io/zone",
    "topology.kubernetes.io/region",
    "beta.kubernetes.io/fluentd-ds-ready",
    "kops.k8s.io/instancegroup",
}
# aws_nodegroups.go `awsIgnoredLabels` (1.35.0 added topology.k8s.aws/zone-id).
AWS_IGNORED = {
    "alpha.eksctl.io/instance-id",
    "alpha.eksctl.io/nodegroup-name",
    "eks.amazonaws.com/nodegroup",
    "k8s.amazonaws.com/eniConfig",
    "lifecycle",
    "topology.ebs.csi.aws.com/zone",
    "topology.k8s.aws/zone-id",
}


def test_the_restated_comparator_is_the_pinned_autoscalers() -> None:
    assert versions.CLUSTER_AUTOSCALER.app_version == READ_AT, (
        f"cluster-autoscaler is pinned at {versions.CLUSTER_AUTOSCALER.app_version}; this module "
        f"restates {READ_AT}: re-read processors/nodegroupset and core/scaleup at the new tag"
    )


def rendered_ignored_labels(inventory: Inventory) -> set[str]:
    """`--balancing-ignore-label` flags of the cluster-autoscaler container, from the pinned chart
    rendered with the program's values (what the cluster will run)."""
    objects = inventory.render_of(CHART).rendered.objects
    (deployment,) = [o for o in objects if o["kind"] == "Deployment"]
    (container,) = deployment["spec"]["template"]["spec"]["containers"]
    args = [*container.get("command", []), *container.get("args", [])]
    assert "--balance-similar-node-groups=true" in args, "balancing is what this test is about"
    flag = "--balancing-ignore-label="
    return {a.removeprefix(flag) for a in args if a.startswith(flag)}


def compare_labels(a: dict[str, str], b: dict[str, str], ignored: set[str]) -> bool:
    """compare_nodegroups.go `compareLabels`."""
    return all(k in a and k in b and a[k] == b[k] for k in (a.keys() | b.keys()) - ignored)


def real_node(group: Resource, instance_type: str) -> dict[str, str]:
    """Labels of a running node of a managed group: the group's labels plus what EKS and the kubelet
    add (https://docs.aws.amazon.com/eks/latest/userguide/managed-node-groups.html; the
    eks.amazonaws.com/* set) and the well-known kubelet labels. The node-info cache keeps these for
    an empty group that once had nodes (mixed_nodeinfos_processor.go)."""
    inputs = group.inputs
    return {
        **inputs["labels"],
        "eks.amazonaws.com/capacityType": inputs["capacityType"],
        "eks.amazonaws.com/nodegroup": inputs["nodeGroupName"],
        "eks.amazonaws.com/nodegroup-image": f"ami-{inputs['amiType'].lower()}",
        "eks.amazonaws.com/sourceLaunchTemplateId": f"lt-{inputs['nodeGroupName']}",
        "eks.amazonaws.com/sourceLaunchTemplateVersion": "1",
        "node.kubernetes.io/instance-type": instance_type,
        "kubernetes.io/arch": "amd64",
        "kubernetes.io/os": "linux",
        "topology.kubernetes.io/zone": "zone-a",
        "kubernetes.io/hostname": f"ip-{inputs['nodeGroupName']}",
    }


def template_node(group: Resource, instance_type: str, tags: dict[str, str]) -> dict[str, str]:
    """Labels of the scale-from-zero template (cloudprovider/aws/aws_manager.go
    `buildNodeFromTemplate`): generic labels, the ASG's node-template label tags, the `eks:` ASG
    tags EKS puts on a managed group's ASG (`extractLabelsFromAsg`), then DescribeNodegroup's
    labels (aws_wrapper.go `getManagedNodegroupInfo`: amiType, capacityType, k8sVersion, nodegroup,
    the group's labels)."""
    inputs = group.inputs
    labels = {
        "kubernetes.io/arch": "amd64",
        "kubernetes.io/os": "linux",
        "node.kubernetes.io/instance-type": instance_type,
        "topology.kubernetes.io/zone": "zone-a",
        "topology.ebs.csi.aws.com/zone": "zone-a",
        "kubernetes.io/hostname": f"template-{inputs['nodeGroupName']}",
        **{
            k.removeprefix(TEMPLATE_LABEL): v
            for k, v in tags.items()
            if k.startswith(TEMPLATE_LABEL)
        },
        "nodegroup-name": inputs["nodeGroupName"],
        "cluster-name": inputs["clusterName"],
    }
    return {
        **labels,
        "amiType": inputs["amiType"],
        "eks.amazonaws.com/capacityType": inputs["capacityType"],
        "k8sVersion": inputs["version"],
        "eks.amazonaws.com/nodegroup": inputs["nodeGroupName"],
        **inputs["labels"],
    }


def asg_tags(inventory: Inventory, group_name: str) -> dict[str, str]:
    return {
        t.inputs["tag"]["key"]: t.inputs["tag"]["value"]
        for t in inventory.of_type(TAG)
        if t.inputs["autoscalingGroupName"].startswith(f"eks-{group_name}-")
    }


Shape = Callable[[Resource, str], dict[str, str]]


def node_shapes(inventory: Inventory) -> dict[str, Shape]:
    return {
        "running node": real_node,
        "empty-group template": lambda g, t: template_node(
            g, t, asg_tags(inventory, g.inputs["nodeGroupName"])
        ),
    }


def gpu_groups(inventory: Inventory) -> list[Resource]:
    return [g for g in inventory.of_type(NODE_GROUP) if g.inputs["nodeGroupName"] != "system"]


def similar_pairs(inventory: Inventory) -> list[tuple[str, str, str, str, str]]:
    """(group, how it is seen, other group, how it is seen, instance type) for every pair of GPU
    groups the comparator would call similar, over the instance types they share."""
    ignored = BASIC_IGNORED | AWS_IGNORED | rendered_ignored_labels(inventory)
    shapes = node_shapes(inventory)
    found = []
    for a, b in itertools.combinations(gpu_groups(inventory), 2):
        shared = set(a.inputs["instanceTypes"]) & set(b.inputs["instanceTypes"])
        for instance_type in sorted(shared):
            for (sa, fa), (sb, fb) in itertools.product(shapes.items(), repeat=2):
                if compare_labels(fa(a, instance_type), fb(b, instance_type), ignored):
                    found.append(
                        (
                            a.inputs["nodeGroupName"],
                            sa,
                            b.inputs["nodeGroupName"],
                            sb,
                            instance_type,
                        )
                    )
    return found


def capacity(inventory: Inventory, name: str) -> Any:
    (group,) = [g for g in gpu_groups(inventory) if g.inputs["nodeGroupName"] == name]
    return group.inputs["capacityType"]


def test_no_spot_group_is_similar_to_an_on_demand_group(inventory: Inventory) -> None:
    mixed = [
        p
        for p in similar_pairs(inventory)
        if capacity(inventory, p[0]) != capacity(inventory, p[2])
    ]
    assert not mixed, f"a spot scale-up would be split onto on-demand GPUs: {mixed}"


def test_prod_really_has_a_spot_and_an_on_demand_group_of_one_instance_type(
    prod: Inventory,
) -> None:
    """Without such a pair the test above would hold vacuously."""
    by_type: dict[str, set[str]] = {}
    for group in gpu_groups(prod):
        for t in group.inputs["instanceTypes"]:
            by_type.setdefault(t, set()).add(group.inputs["capacityType"])
    assert any(kinds == {"SPOT", "ON_DEMAND"} for kinds in by_type.values()), by_type


def test_the_capacity_type_is_a_node_template_label(inventory: Inventory) -> None:
    """Empty groups carry it even when DescribeNodegroup fails (the autoscaler only logs that)."""
    for group in gpu_groups(inventory):
        tags = asg_tags(inventory, group.inputs["nodeGroupName"])
        assert tags[TEMPLATE_LABEL + gpu_spec.CAPACITY_TYPE_LABEL] == group.inputs["capacityType"]


@pytest.fixture(scope="module")
def twin_spot_groups() -> Inventory:
    """prod plus a copy of its first spot group: what per-AZ spot groups would look like."""
    groups = [
        {
            "name": g.name,
            "capacityType": g.capacity_type,
            "instanceTypes": list(g.instance_types),
            "minSize": g.min_size,
            "desiredSize": g.desired_size,
            "maxSize": g.max_size,
            "diskGiB": g.disk_gib,
        }
        for g in load_stack_config("prod").node_groups.gpu
    ]
    twin = {**groups[0], "name": f"{groups[0]['name']}-b"}
    return run_stack("prod", {"gpuNodeGroups": [*groups, twin]})


def test_balancing_still_works_between_identical_spot_groups(twin_spot_groups: Inventory) -> None:
    """The control: the model is not one that calls everything dissimilar."""
    pairs = similar_pairs(twin_spot_groups)
    twins = {(p[0], p[2]) for p in pairs}
    assert ("gpu-spot-xl", "gpu-spot-xl-b") in twins, pairs
    assert all(capacity(twin_spot_groups, p[0]) == "SPOT" for p in pairs)
