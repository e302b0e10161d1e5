"""`pulumi destroy` leaves nothing billable: what AWS would refuse or keep, and the deletion order.

The engine deletes a resource only once everything that depends on it is gone: ScheduleDeletes in
pulumi/pulumi pkg/resource/deploy/step_generator.go schedules by `DependenciesOf`, which counts a
resource's parent as well as its dependencies, then reverses the order. The dependencies the mock
engine records are explicit `depends_on` plus every resource whose outputs fed an input (the SDK
sends both in RegisterResource's `dependencies`). So "A is destroyed while B still exists" holds
when B is in `dependencies(A)`: B reached through dependencies and parents, transitively.
"""

from __future__ import annotations

import pytest

from infra import loadbalancer, monitoring, versions
from rehearsal.mockengine import Inventory, Resource

SERVICE = "kubernetes:core/v1:Service"
PVC = "kubernetes:core/v1:PersistentVolumeClaim"
ADDON = "aws:eks/addon:Addon"


def addon(inventory: Inventory, name: str) -> Resource:
    (found,) = [a for a in inventory.of_type(ADDON) if a.inputs["addonName"] == name]
    return found


def nlb_service(inventory: Inventory) -> Resource:
    (found,) = [
        s
        for s in inventory.of_type(SERVICE)
        if s.inputs["spec"].get("loadBalancerClass") == loadbalancer.LOAD_BALANCER_CLASS
    ]
    return found


def egress(inventory: Inventory) -> list[Resource]:
    """The private subnets' way to the AWS APIs: their route tables' default routes and
    associations, the NAT gateways, and the NAT gateways' own subnets' route to the internet."""
    subnets = inventory.of_type("aws:ec2/subnet:Subnet")
    nats = inventory.of_type("aws:ec2/natGateway:NatGateway")
    private = {s.urn for s in subnets if "kubernetes.io/role/internal-elb" in s.inputs["tags"]}
    nat_subnets = {s.urn for s in subnets if any(s.urn in n.depends_on for n in nats)}
    associations = [
        a
        for a in inventory.of_type("aws:ec2/routeTableAssociation:RouteTableAssociation")
        if set(a.depends_on) & (private | nat_subnets)
    ]
    return [*nats, *inventory.of_type("aws:ec2/route:Route"), *associations]


def test_ecr_repositories_are_deleted_with_their_images(inventory: Inventory) -> None:
    for repository in inventory.of_type("aws:ecr/repository:Repository"):
        assert repository.inputs.get("forceDelete") is True, repository.name


def test_the_nlb_service_is_destroyed_while_the_lb_controller_can_delete_the_nlb(
    inventory: Inventory,
) -> None:
    # The controller deletes the NLB, its frontend security group and (once no load balancer uses
    # it) the shared backend security group when the Service is deleted, then removes its
    # finalizer (aws-load-balancer-controller v2.17.0 controllers/service/service_controller.go
    # cleanupLoadBalancerResources; pkg/networking/backend_sg_provider.go releaseSG). Pulumi waits
    # for the Service to be gone (pulumi-kubernetes await.Deletion). The controller must still run,
    # with its AWS role, name resolution and a route to the APIs, until then.
    needed = inventory.dependencies(nlb_service(inventory))
    release = inventory.one("kubernetes:helm.sh/v3:Release")
    assert inventory.render_of(versions.AWS_LOAD_BALANCER_CONTROLLER.chart).resource == release
    must_outlive = [
        release,
        inventory.one(
            "aws:eks/nodeGroup:NodeGroup",
            next(
                n.name
                for n in inventory.of_type("aws:eks/nodeGroup:NodeGroup")
                if n.inputs["nodeGroupName"] == "system"
            ),
        ),
        addon(inventory, "coredns"),
        addon(inventory, "eks-pod-identity-agent"),
        addon(inventory, "vpc-cni"),
        *[
            a
            for a in inventory.of_type("aws:eks/podIdentityAssociation:PodIdentityAssociation")
            if a.inputs["serviceAccount"] == loadbalancer.SERVICE_ACCOUNT
        ],
        *egress(inventory),
    ]
    missing = [f"{r.type} {r.name}" for r in must_outlive if r.urn not in needed]
    assert not missing, f"destroyed before (or with) the NLB Service: {missing}"


def test_volume_claims_are_destroyed_while_the_ebs_csi_driver_can_delete_the_volumes(
    inventory: Inventory,
) -> None:
    # Reclaim policy Delete: the driver deletes the EBS volume once its claim is gone.
    claims = inventory.of_type(PVC)
    assert {c.inputs["metadata"]["name"] for c in claims} == {
        monitoring.PROMETHEUS_CLAIM,
        monitoring.ALERTMANAGER_CLAIM,
    }
    for claim in claims:
        needed = inventory.dependencies(claim)
        for required in (addon(inventory, "aws-ebs-csi-driver"), *egress(inventory)):
            assert required.urn in needed, f"{claim.name} does not outlive {required.name}"


# --- The Prometheus chart as the rehearsal renders it with our values ----------------------------


@pytest.fixture(scope="module")
def prometheus_objects(prod: Inventory) -> list[dict]:
    return [dict(o) for o in prod.render_of(versions.PROMETHEUS.chart).rendered.objects]


def kinds(objects: list[dict], kind: str) -> list[dict]:
    return [o for o in objects if o.get("kind") == kind]


def test_the_chart_makes_no_claim_of_its_own(prometheus_objects: list[dict]) -> None:
    assert kinds(prometheus_objects, "PersistentVolumeClaim") == []


def test_prometheus_mounts_the_claim_pulumi_owns(
    prometheus_objects: list[dict], prod: Inventory
) -> None:
    (server,) = [
        d
        for d in kinds(prometheus_objects, "Deployment")
        if d["metadata"]["name"] == monitoring.PROMETHEUS_SERVER_NAME
    ]
    claims = [
        v["persistentVolumeClaim"]["claimName"]
        for v in server["spec"]["template"]["spec"]["volumes"]
        if "persistentVolumeClaim" in v
    ]
    assert claims == [monitoring.PROMETHEUS_CLAIM]


def test_alertmanager_adopts_the_claim_pulumi_owns(
    prometheus_objects: list[dict], prod: Inventory
) -> None:
    # The StatefulSet controller names a claim <template>-<statefulset>-<ordinal> and uses an
    # existing claim of that name instead of creating one. One replica: ordinal 0 only.
    (alertmanager,) = kinds(prometheus_objects, "StatefulSet")
    spec = alertmanager["spec"]
    assert spec.get("replicas", 1) == 1
    (template,) = spec["volumeClaimTemplates"]
    expected = f"{template['metadata']['name']}-{alertmanager['metadata']['name']}-0"
    assert expected == monitoring.ALERTMANAGER_CLAIM
    (owned,) = [c for c in prod.of_type(PVC) if c.inputs["metadata"]["name"] == expected]
    assert owned.inputs["spec"]["storageClassName"] == template["spec"]["storageClassName"]
    assert owned.inputs["spec"]["resources"] == template["spec"]["resources"]
