"""CI can authenticate to and reach the Kubernetes API: access entries from stack config, a refusal
at preview of an identity that would get no access, and the private endpoint's ingress rules."""

from __future__ import annotations

import pytest

from infra.cluster import require_cluster_access
from infra.config import ConfigError
from rehearsal.mockengine import Inventory, load_stack_config, run_stack

DEPLOY = "arn:aws:iam::111122223333:role/gpu-inference-dev-deploy"
PREVIEW = "arn:aws:iam::111122223333:role/gpu-inference-dev-preview"
ASSOCIATION = "aws:eks/accessPolicyAssociation:AccessPolicyAssociation"


@pytest.mark.parametrize(
    ("overrides", "key"),
    [
        ({"deployRoleArn": "arn:aws:iam::111122223333:user/deployer"}, "deployRoleArn"),
        ({"previewRoleArn": "gpu-inference-dev-preview"}, "previewRoleArn"),
        ({"previewRoleArn": DEPLOY}, "previewRoleArn"),
        ({"adminPrincipalArns": [DEPLOY]}, "deployRoleArn"),
        # The same role under a path: one IAM principal, so a second access entry EKS refuses.
        ({"adminPrincipalArns": [DEPLOY.replace(":role/", ":role/ci/")]}, "deployRoleArn"),
    ],
)
def test_ci_roles_are_checked_before_anything_is_registered(overrides: dict, key: str) -> None:
    with pytest.raises(ConfigError) as caught:
        run_stack("dev", overrides)
    assert caught.value.key == f"gpu-inference:{key}"
    assert caught.value.stack_file == "Pulumi.dev.yaml"
    assert caught.value.registered_resources == ()  # type: ignore[attr-defined]


def session(role_arn: str) -> str:
    account = role_arn.split(":")[4]
    return f"arn:aws:sts::{account}:assumed-role/{role_arn.rsplit('/', 1)[-1]}/gha-123"


def test_the_ci_roles_and_admins_may_run_pulumi() -> None:
    sso = "arn:aws:iam::111122223333:role/aws-reserved/sso.amazonaws.com/AWSReservedSSO_Admin_0a1b"
    cluster = load_stack_config("dev", {"adminPrincipalArns": [sso]}).cluster
    assert require_cluster_access(session(DEPLOY), cluster, "Pulumi.dev.yaml") == DEPLOY
    assert require_cluster_access(session(PREVIEW), cluster, "Pulumi.dev.yaml") == PREVIEW
    # STS drops the role's path from the session ARN; the role name still identifies it.
    assert require_cluster_access(session(sso), cluster, "Pulumi.dev.yaml") == sso


@pytest.mark.parametrize(
    "caller",
    [
        "arn:aws:sts::111122223333:assumed-role/someone-else/alice",
        "arn:aws:sts::444455556666:assumed-role/gpu-inference-dev-deploy/gha-1",
        "arn:aws:iam::111122223333:root",
    ],
)
def test_an_identity_without_an_access_entry_is_refused(caller: str) -> None:
    cluster = load_stack_config("dev").cluster
    with pytest.raises(ConfigError) as caught:
        require_cluster_access(caller, cluster, "Pulumi.dev.yaml")
    assert caught.value.key == "gpu-inference:adminPrincipalArns"
    assert caller in str(caught.value)


def test_a_caller_without_access_stops_before_anything_is_registered() -> None:
    """With nobody configured, the mock engine runs as an unlisted user: refused at preview."""
    with pytest.raises(ConfigError) as caught:
        run_stack("dev", {"deployRoleArn": None, "previewRoleArn": None})
    assert "adminPrincipalArns" in str(caught.value)
    assert caught.value.registered_resources == ()  # type: ignore[attr-defined]


def test_kubernetes_objects_wait_for_every_access_policy(inventory: Inventory) -> None:
    (provider,) = inventory.of_type("pulumi:providers:kubernetes")
    associations = {a.urn for a in inventory.of_type(ASSOCIATION)}
    assert associations
    assert associations <= set(provider.depends_on)


def test_networks_routed_to_the_vpc_reach_the_private_endpoint(stack: str) -> None:
    cidrs = ["10.64.0.0/12", "172.20.4.0/24"]
    inventory = run_stack(stack, {"privateApiAccessCidrs": cidrs})
    rules = inventory.of_type("aws:vpc/securityGroupIngressRule:SecurityGroupIngressRule")
    api = [r.inputs for r in rules if r.name.rsplit("-", 2)[-2] == "from" and "api" in r.name]
    assert sorted(r["cidrIpv4"] for r in api) == cidrs
    for rule in api:
        assert (rule["fromPort"], rule["toPort"], rule["ipProtocol"]) == (443, 443, "tcp")
    # The EKS-managed cluster security group (on the endpoint's ENIs), not one the program makes.
    (group,) = {r["securityGroupId"] for r in api}
    own = {g.urn for g in inventory.of_type("aws:ec2/securityGroup:SecurityGroup")}
    assert group.startswith("sg-")
    assert group not in own
    # A runner admitted only through these rules makes the provider's first call: rules first.
    (provider,) = inventory.of_type("pulumi:providers:kubernetes")
    api_urns = {r.urn for r in rules if r.inputs in api}
    assert api_urns <= set(provider.depends_on)
