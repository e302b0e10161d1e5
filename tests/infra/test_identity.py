"""Pod Identity roles: trust limited to one cluster's service account, association, policies."""

from __future__ import annotations

import json

import pytest

from infra.identity import PodIdentityTarget, WorkloadIdentity, WorkloadIdentityArgs
from rehearsal.mockengine import ACCOUNT, Inventory, run_function

TARGET = PodIdentityTarget(cluster_name="demo", partition="aws", agent=None)
POLICY = json.dumps(
    {
        "Version": "2012-10-17",
        "Statement": [{"Effect": "Allow", "Action": "s3:GetObject", "Resource": "*"}],
    }
)


def build(**kwargs: object) -> Inventory:
    args = WorkloadIdentityArgs(target=TARGET, namespace="ns", service_account="sa", **kwargs)  # type: ignore[arg-type]
    return run_function(lambda: WorkloadIdentity("wi", args))


@pytest.fixture(scope="module")
def inline() -> Inventory:
    return build(policy_json=POLICY)


def test_trust_is_pod_identity_for_one_service_account_of_one_cluster(inline: Inventory) -> None:
    trust = json.loads(inline.one("aws:iam/role:Role").inputs["assumeRolePolicy"])
    (statement,) = trust["Statement"]
    assert statement["Principal"] == {"Service": "pods.eks.amazonaws.com"}
    assert sorted(statement["Action"]) == ["sts:AssumeRole", "sts:TagSession"]
    assert statement["Condition"]["StringEquals"] == {
        "aws:RequestTag/eks-cluster-name": "demo",
        "aws:RequestTag/kubernetes-namespace": "ns",
        "aws:RequestTag/kubernetes-service-account": "sa",
    }


def test_association_binds_the_role_to_the_service_account(inline: Inventory) -> None:
    association = inline.one("aws:eks/podIdentityAssociation:PodIdentityAssociation").inputs
    role = inline.one("aws:iam/role:Role")
    assert association["clusterName"] == "demo"
    assert (association["namespace"], association["serviceAccount"]) == ("ns", "sa")
    assert association["roleArn"].startswith(f"arn:aws:iam::{ACCOUNT}:role/{role.name}-")


def test_inline_policy_is_attached_verbatim(inline: Inventory) -> None:
    assert inline.one("aws:iam/rolePolicy:RolePolicy").inputs["policy"] == POLICY
    assert inline.of_type("aws:iam/rolePolicyAttachment:RolePolicyAttachment") == []


def test_managed_policies_use_the_partition_and_addons_skip_the_association() -> None:
    inventory = build(
        managed_policy_arns=("service-role/AmazonEBSCSIDriverPolicy",), create_association=False
    )
    (attachment,) = inventory.of_type("aws:iam/rolePolicyAttachment:RolePolicyAttachment")
    assert (
        attachment.inputs["policyArn"]
        == "arn:aws:iam::aws:policy/service-role/AmazonEBSCSIDriverPolicy"
    )
    assert inventory.of_type("aws:eks/podIdentityAssociation:PodIdentityAssociation") == []


def test_children_belong_to_the_component(inline: Inventory) -> None:
    component = inline.one("gpu-inference:identity:WorkloadIdentity")
    for child in inline.resources:
        if child is not component:
            assert child.parent == component.urn
            assert child.name.startswith("wi-")
