"""cluster-autoscaler: pinned chart, priority expander, GPU-aware settings, least-privilege role."""

from __future__ import annotations

import json
import re

from infra import autoscaler, gpu_spec, versions
from rehearsal.charts import pin_of
from rehearsal.mockengine import Inventory, Resource, load_stack_config

CHART = "kubernetes:helm.sh/v4:Chart"


def chart(inventory: Inventory) -> Resource:
    return inventory.render_of(versions.CLUSTER_AUTOSCALER.chart).resource


def test_chart_is_the_pinned_upstream_one(inventory: Inventory) -> None:
    render = inventory.render_of(versions.CLUSTER_AUTOSCALER.chart)
    assert pin_of(render.source.archive) == versions.CLUSTER_AUTOSCALER
    assert render.resource.inputs["namespace"] == "kube-system"


def test_autodiscovers_this_cluster_in_its_region(inventory: Inventory, stack: str) -> None:
    values = chart(inventory).inputs["values"]
    c = load_stack_config(stack)
    assert values["autoDiscovery"] == {"clusterName": c.cluster.name}
    assert values["awsRegion"] == c.region
    assert values["cloudProvider"] == "aws"


def test_spot_groups_come_first_on_demand_last(inventory: Inventory, stack: str) -> None:
    values = chart(inventory).inputs["values"]
    assert values["extraArgs"]["expander"] == "priority"
    priorities = {int(k): v for k, v in values["expanderPriorities"].items()}
    asg_names = {
        g.name: f"eks-{g.name}-12345678-90ab-cdef-1234-567890abcdef"
        for g in load_stack_config(stack).node_groups.gpu
    }

    def priority(asg: str) -> int:
        return max(
            p for p, patterns in priorities.items() if any(re.match(x, asg) for x in patterns)
        )

    for group in load_stack_config(stack).node_groups.gpu:
        expected = autoscaler.SPOT_PRIORITY if group.is_spot else autoscaler.ON_DEMAND_PRIORITY
        assert priority(asg_names[group.name]) == expected, group.name
    assert (
        priority("eks-system-12345678-90ab-cdef-1234-567890abcdef") == autoscaler.FALLBACK_PRIORITY
    )


def test_prod_prefers_spot_over_its_on_demand_fallback(prod: Inventory) -> None:
    priorities = chart(prod).inputs["values"]["expanderPriorities"]
    spot = priorities[str(autoscaler.SPOT_PRIORITY)]
    on_demand = priorities[str(autoscaler.ON_DEMAND_PRIORITY)]
    assert len(spot) == 3
    assert on_demand == [autoscaler.asg_pattern("gpu-ondemand")]


def test_patterns_do_not_match_a_group_with_a_longer_name() -> None:
    assert not re.match(
        autoscaler.asg_pattern("gpu-spot"), "eks-gpu-spot-xl-12345678-90ab-cdef-1234-567890abcdef"
    )


def test_gpu_aware_scale_down_and_balancing(inventory: Inventory, stack: str) -> None:
    args = chart(inventory).inputs["values"]["extraArgs"]
    assert args["balance-similar-node-groups"] == "true"
    assert args["skip-nodes-with-local-storage"] == "false"
    assert args["ignore-daemonsets-utilization"] == "true"
    assert (
        args["scale-down-unneeded-time"]
        == load_stack_config(stack).autoscaler.scale_down_unneeded_time
    )
    assert (
        args["max-node-provision-time"]
        == load_stack_config(stack).autoscaler.max_node_provision_time
    )
    ignored = {v for k, v in args.items() if k.startswith("balancing-ignore-label_")}
    assert ignored == set(autoscaler.BALANCING_IGNORED_LABELS)


def test_runs_on_system_nodes_as_the_pod_identity_service_account(inventory: Inventory) -> None:
    values = chart(inventory).inputs["values"]
    assert values["nodeSelector"] == gpu_spec.SYSTEM_NODE_LABELS
    assert "tolerations" not in values, "never on GPU nodes"
    assert values["rbac"]["serviceAccount"]["name"] == autoscaler.SERVICE_ACCOUNT
    (association,) = [
        a.inputs
        for a in inventory.of_type("aws:eks/podIdentityAssociation:PodIdentityAssociation")
        if a.inputs["serviceAccount"] == autoscaler.SERVICE_ACCOUNT
    ]
    assert association["namespace"] == autoscaler.NAMESPACE == chart(inventory).inputs["namespace"]


def test_chart_waits_for_its_pod_identity_association(inventory: Inventory) -> None:
    association = next(
        a
        for a in inventory.of_type("aws:eks/podIdentityAssociation:PodIdentityAssociation")
        if a.inputs["serviceAccount"] == autoscaler.SERVICE_ACCOUNT
    )
    assert association.urn in chart(inventory).depends_on


def policy(inventory: Inventory) -> dict:
    (found,) = [
        r for r in inventory.of_type("aws:iam/rolePolicy:RolePolicy") if "autoscaler" in r.name
    ]
    loaded: dict = json.loads(found.inputs["policy"])
    return loaded


def test_role_can_only_scale_this_clusters_groups(inventory: Inventory, stack: str) -> None:
    statements = {s["Sid"]: s for s in policy(inventory)["Statement"]}
    name = load_stack_config(stack).cluster.name
    scale = statements["ScaleOwnGroups"]
    assert sorted(scale["Action"]) == [
        "autoscaling:SetDesiredCapacity",
        "autoscaling:TerminateInstanceInAutoScalingGroup",
    ]
    assert (
        scale["Condition"]["StringEquals"][f"aws:ResourceTag/k8s.io/cluster-autoscaler/{name}"]
        == "owned"
    )
    read = statements["ReadOwnNodeGroups"]
    assert read["Resource"].endswith(f":nodegroup/{name}/*/*")
    discover = statements["Discover"]
    assert all(
        a.split(":")[1].startswith(("Describe", "GetInstanceTypes")) for a in discover["Action"]
    )


def test_role_trusts_only_the_autoscaler_service_account(inventory: Inventory, stack: str) -> None:
    (role,) = [r for r in inventory.of_type("aws:iam/role:Role") if "autoscaler" in r.name]
    condition = json.loads(role.inputs["assumeRolePolicy"])["Statement"][0]["Condition"][
        "StringEquals"
    ]
    assert condition == {
        "aws:RequestTag/eks-cluster-name": load_stack_config(stack).cluster.name,
        "aws:RequestTag/kubernetes-namespace": "kube-system",
        "aws:RequestTag/kubernetes-service-account": "cluster-autoscaler",
    }


def test_the_rendered_role_lets_1_35_watch_dra_objects(inventory: Inventory) -> None:
    """cluster-autoscaler 1.35 handles Dynamic Resource Allocation whatever the flags say
    (config/flags/flags.go at cluster-autoscaler-1.35.0: --enable-dynamic-resource-allocation
    defaults to true and any other value is fatal), so it lists and watches resource.k8s.io objects
    from its first loop; the chart grants that from 9.54.0 on (clusterrole.yaml)."""
    assert versions.CLUSTER_AUTOSCALER.app_version.startswith("1.35."), "re-read flags.go"
    render = inventory.render_of(versions.CLUSTER_AUTOSCALER.chart)
    [role] = [o for o in render.rendered.objects if o["kind"] == "ClusterRole"]
    dra = [r for r in role["rules"] if "resource.k8s.io" in r.get("apiGroups", [])]
    granted = {(res, verb) for r in dra for res in r["resources"] for verb in r["verbs"]}
    for resource in ("resourceslices", "deviceclasses", "resourceclaims"):
        assert {(resource, "list"), (resource, "watch")} <= granted, resource
