"""The AWS Load Balancer Controller component: chart, Pod Identity role, least-privilege policy."""

from __future__ import annotations

import json
from typing import Any

import pytest

from infra import gpu_spec, loadbalancer, versions
from infra.identity import PodIdentityTarget
from rehearsal.charts import pin_of
from rehearsal.mockengine import Inventory, run_function

RELEASE = "kubernetes:helm.sh/v3:Release"


@pytest.fixture(scope="module")
def inventory() -> Inventory:
    def program() -> None:
        loadbalancer.LoadBalancerController(
            "lbc",
            loadbalancer.LoadBalancerControllerArgs(
                target=PodIdentityTarget(cluster_name="gpu-dev", partition="aws", agent=None),
                cluster_name="gpu-dev",
                region="us-west-2",
                vpc_id="vpc-0123456789abcdef0",
                system_node_selector=gpu_spec.system_node_selector(),
            ),
        )

    return run_function(program)


def release_values(inventory: Inventory) -> dict[str, Any]:
    found: dict[str, Any] = inventory.one(RELEASE).inputs["values"]
    return found


def test_chart_is_pinned_and_runs_on_system_nodes(inventory: Inventory) -> None:
    inputs = inventory.one(RELEASE).inputs
    render = inventory.render_of(versions.AWS_LOAD_BALANCER_CONTROLLER.chart)
    assert render.resource == inventory.one(RELEASE)
    assert pin_of(render.source.archive) == versions.AWS_LOAD_BALANCER_CONTROLLER
    assert inputs["namespace"] == loadbalancer.NAMESPACE
    values = release_values(inventory)
    assert values["nodeSelector"] == gpu_spec.system_node_selector()
    assert values["clusterName"] == "gpu-dev"
    assert values["vpcId"] == "vpc-0123456789abcdef0"
    assert values["serviceAccount"] == {"create": True, "name": loadbalancer.SERVICE_ACCOUNT}
    assert values["enableServiceMutatorWebhook"] is False


def test_role_is_bound_to_the_controller_service_account(inventory: Inventory) -> None:
    association = inventory.one("aws:eks/podIdentityAssociation:PodIdentityAssociation").inputs
    assert association["namespace"] == loadbalancer.NAMESPACE
    assert association["serviceAccount"] == loadbalancer.SERVICE_ACCOUNT
    trust = json.loads(inventory.one("aws:iam/role:Role").inputs["assumeRolePolicy"])
    tags = trust["Statement"][0]["Condition"]["StringEquals"]
    assert tags["aws:RequestTag/kubernetes-service-account"] == loadbalancer.SERVICE_ACCOUNT


SCOPED_ACTIONS = (
    "elasticloadbalancing:DeleteLoadBalancer",
    "elasticloadbalancing:DeleteTargetGroup",
    "elasticloadbalancing:ModifyLoadBalancerAttributes",
    "elasticloadbalancing:ModifyTargetGroup",
    "ec2:DeleteSecurityGroup",
)


def test_policy_scopes_deletion_to_the_controllers_own_resources() -> None:
    """Load balancers, target groups and security groups are only deleted or changed when they carry
    the controller's cluster tag, so the role cannot touch anything else in the account."""
    policy = json.loads(loadbalancer.iam_policy("aws"))
    for action in SCOPED_ACTIONS:
        granting = [s for s in policy["Statement"] if action in s["Action"]]
        assert granting, action
        for statement in granting:
            resource_tag = f"aws:ResourceTag/{loadbalancer.CLUSTER_TAG}"
            assert statement["Condition"]["Null"][resource_tag] == "false", action
    actions = {a for s in policy["Statement"] for a in s["Action"]}
    assert "elasticloadbalancing:CreateLoadBalancer" in actions
    assert "elasticloadbalancing:RegisterTargets" in actions
    assert not any(a.endswith(":*") for a in actions)


def test_policy_uses_the_partition() -> None:
    assert "arn:aws-cn:elasticloadbalancing" in loadbalancer.iam_policy("aws-cn")
    assert "arn:aws:" not in loadbalancer.iam_policy("aws-cn")
