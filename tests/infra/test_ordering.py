"""Creation order on a first `pulumi up`: the platform comes up on the system node group alone, and
whatever needs cluster DNS waits for the CoreDNS add-on.

The engine creates a resource only after everything it depends on was created: its explicit
`depends_on`, and (because a child registers only once its parent's registration returned) whatever
its ancestors depend on. `waits_for` follows both, transitively, over what the mock engine recorded.
"""

from __future__ import annotations

from rehearsal.mockengine import Inventory, Resource

ADDON = "aws:eks/addon:Addon"
NODE_GROUP = "aws:eks/nodeGroup:NodeGroup"
# Charts whose pods call a Service or an AWS endpoint by name from their first start: the AWS SDKs
# in cluster-autoscaler and the LB controller, Prometheus' scrapes and Alertmanager, the adapter's
# Prometheus URL, metrics-server's kubelet scrapes through the API server's Service.
NEEDS_DNS = (
    "cluster-autoscaler",
    "aws-load-balancer-controller",
    "prometheus",
    "prometheus-adapter",
    "metrics-server",
)


def waits_for(inventory: Inventory, resource: Resource) -> set[str]:
    """URNs of every resource that must exist before `resource` is created."""
    seen: set[str] = set()
    pending = [resource]
    while pending:
        current = pending.pop()
        chain = [current]
        while chain[-1].parent is not None and _known(inventory, chain[-1].parent):
            chain.append(inventory.by_urn(chain[-1].parent))
        for node in chain:
            for urn in node.depends_on:
                if urn not in seen:
                    seen.add(urn)
                    if _known(inventory, urn):
                        pending.append(inventory.by_urn(urn))
    return seen


def _known(inventory: Inventory, urn: str) -> bool:
    return any(r.urn == urn for r in inventory.resources)


def addon(inventory: Inventory, name: str) -> Resource:
    (found,) = [a for a in inventory.of_type(ADDON) if a.inputs["addonName"] == name]
    return found


def groups(inventory: Inventory) -> tuple[str, set[str]]:
    """(system group URN, GPU group URNs)."""
    by_name = {g.inputs["nodeGroupName"]: g.urn for g in inventory.of_type(NODE_GROUP)}
    system = by_name.pop("system")
    return system, set(by_name.values())


def test_dns_waits_for_the_system_group_only(inventory: Inventory) -> None:
    system, gpu = groups(inventory)
    for name in ("coredns", "aws-ebs-csi-driver"):
        before = waits_for(inventory, addon(inventory, name))
        assert system in before, f"{name} would be created before any node it can run on"
        assert not before & gpu, f"{name} waits for GPU node groups: {sorted(before & gpu)}"


def test_the_ebs_csi_controller_starts_after_dns(inventory: Inventory) -> None:
    coredns = addon(inventory, "coredns").urn
    assert coredns in waits_for(inventory, addon(inventory, "aws-ebs-csi-driver"))


def test_everything_that_needs_dns_waits_for_coredns(inventory: Inventory) -> None:
    coredns = addon(inventory, "coredns").urn
    charts = {r.source.chart: r.resource for r in inventory.rendered}
    assert set(NEEDS_DNS) <= set(charts), sorted(charts)
    for chart in NEEDS_DNS:
        assert coredns in waits_for(inventory, charts[chart]), f"{chart} does not wait for DNS"


def test_nothing_on_the_platform_waits_for_a_gpu_group(inventory: Inventory) -> None:
    """A GPU group that cannot start (quota, capacity) fails only itself: every add-on, chart and
    Kubernetes object (the inference workload included: its pods wait for the autoscaler, not the
    deployment) can be created with no GPU node."""
    _, gpu = groups(inventory)
    platform = [
        r
        for r in inventory.resources
        if r.type == ADDON
        or r.type.startswith("kubernetes:")
        or r.type.startswith("gpu-inference:")
    ]
    for resource in platform:
        if resource.type == "gpu-inference:nodegroups:NodeGroups":
            continue
        blocked = waits_for(inventory, resource) & gpu
        assert not blocked, f"{resource.name} waits for GPU node groups {sorted(blocked)}"
