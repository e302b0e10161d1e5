"""The EKS control plane: pinned version, encryption, logs, endpoint access, access entries,
add-ons,
the Kubernetes provider and the kubeconfig."""

from __future__ import annotations

import json
from typing import Any

import jsonschema
import pytest
import yaml

from infra import config, gpu_spec, versions
from rehearsal.mockengine import ROOT, Inventory, Secret, load_stack_config

CLUSTER = "aws:eks/cluster:Cluster"
ADDON = "aws:eks/addon:Addon"


def eks(inventory: Inventory) -> dict:
    return inventory.one(CLUSTER).inputs


def test_cluster_runs_the_pinned_version_in_private_subnets(
    inventory: Inventory, stack: str
) -> None:
    inputs = eks(inventory)
    assert inputs["version"] == versions.KUBERNETES_VERSION
    assert inputs["name"] == load_stack_config(stack).cluster.name
    assert inputs["vpcConfig"]["subnetIds"] == inventory.outputs["privateSubnetIds"]
    assert inputs["upgradePolicy"] == {"supportType": "STANDARD"}


def test_endpoint_is_private_and_public_only_for_configured_cidrs(
    inventory: Inventory, stack: str
) -> None:
    vpc = eks(inventory)["vpcConfig"]
    cluster = load_stack_config(stack).cluster
    assert vpc["endpointPrivateAccess"] is True
    assert vpc["endpointPublicAccess"] is cluster.endpoint_public_access
    assert (vpc.get("publicAccessCidrs") or []) == list(cluster.public_access_cidrs)
    assert "0.0.0.0/0" not in (vpc.get("publicAccessCidrs") or [])


def test_secrets_are_envelope_encrypted_with_a_rotated_key(inventory: Inventory) -> None:
    key = inventory.one("aws:kms/key:Key")
    assert key.inputs["enableKeyRotation"] is True
    encryption = eks(inventory)["encryptionConfig"]
    assert encryption["resources"] == ["secrets"]
    assert ":kms:" in encryption["provider"]["keyArn"]
    assert ":key/" in encryption["provider"]["keyArn"]
    (grant_policy,) = [
        r
        for r in inventory.of_type("aws:iam/rolePolicy:RolePolicy")
        if r.name.endswith("-secrets-key-use")
    ]
    grant = json.loads(grant_policy.inputs["policy"])
    assert grant["Statement"][0]["Resource"] == encryption["provider"]["keyArn"], (
        "scoped to this key"
    )


def test_control_plane_logs_are_on_with_a_retention(inventory: Inventory, stack: str) -> None:
    c = load_stack_config(stack)
    assert eks(inventory)["enabledClusterLogTypes"] == list(c.cluster.log_types)
    group = inventory.one("aws:cloudwatch/logGroup:LogGroup").inputs
    assert group["name"] == f"/aws/eks/{c.cluster.name}/cluster"
    assert group["retentionInDays"] == (90 if c.production else 14)


def test_authentication_uses_access_entries_from_the_config_only(
    inventory: Inventory, stack: str
) -> None:
    """Admins (adminPrincipalArns, deployRoleArn) get cluster-admin, the preview role view; the
    creator gets nothing implicit (a second entry for it would be refused)."""
    access = eks(inventory)["accessConfig"]
    assert access["authenticationMode"] == "API"
    assert access["bootstrapClusterCreatorAdminPermissions"] is False
    cluster = load_stack_config(stack).cluster
    entries = inventory.of_type("aws:eks/accessEntry:AccessEntry")
    assert sorted(e.inputs["principalArn"] for e in entries) == sorted(
        cluster.admins + cluster.viewers
    )
    policies = {
        p.inputs["principalArn"]: p.inputs
        for p in inventory.of_type("aws:eks/accessPolicyAssociation:AccessPolicyAssociation")
    }
    assert len(policies) == len(entries)
    for arn, policy in policies.items():
        name = "AmazonEKSViewPolicy" if arn in cluster.viewers else "AmazonEKSClusterAdminPolicy"
        assert policy["policyArn"].endswith(f":cluster-access-policy/{name}"), arn
        assert policy["accessScope"] == {"type": "cluster"}


def test_prod_grants_its_admin_role_and_ci_roles(prod: Inventory) -> None:
    entries = {
        e.name.rsplit("-", 1)[-1]: e.inputs["principalArn"]
        for e in prod.of_type("aws:eks/accessEntry:AccessEntry")
    }
    assert entries == {
        "0": "arn:aws:iam::111122223333:role/platform-admin",
        "deploy": "arn:aws:iam::111122223333:role/gpu-inference-prod-deploy",
        "preview": "arn:aws:iam::111122223333:role/gpu-inference-prod-preview",
    }


def test_managed_addons_are_all_there_at_resolved_versions(inventory: Inventory) -> None:
    addons = {a.inputs["addonName"]: a.inputs for a in inventory.of_type(ADDON)}
    assert sorted(addons) == sorted(versions.EKS_ADDONS)
    assert eks(inventory)["bootstrapSelfManagedAddons"] is False, "managed add-ons own vpc-cni etc."
    for name, addon in addons.items():
        assert addon["addonVersion"].startswith("v"), name
        assert addon["resolveConflictsOnUpdate"] == "OVERWRITE", name


def test_gpu_faults_reach_node_repair_through_the_node_monitoring_agent(
    inventory: Inventory,
) -> None:
    # Node repair alone reacts to the kubelet's Ready condition only; XIDs need the agent, whose
    # DCGM server must run on the tainted GPU nodes.
    (agent,) = [
        a for a in inventory.of_type(ADDON) if a.inputs["addonName"] == "eks-node-monitoring-agent"
    ]
    values = json.loads(agent.inputs["configurationValues"])
    assert values == {"dcgmAgent": {"tolerations": [gpu_spec.toleration()]}}
    # The version the add-on runs at is the one whose schema is checked below.
    assert agent.inputs["addonVersion"].startswith(f"{NODE_MONITORING_SCHEMA_VERSION}-eksbuild.")
    jsonschema.validate(values, node_monitoring_schema())
    for group in inventory.of_type("aws:eks/nodeGroup:NodeGroup"):
        assert group.inputs["nodeRepairConfig"] == {"enabled": True}, group.name


NODE_MONITORING_SCHEMA_VERSION = "v1.7.0"
NODE_MONITORING_SCHEMA = (
    ROOT
    / "rehearsal"
    / "fixtures"
    / f"eks-node-monitoring-agent-{NODE_MONITORING_SCHEMA_VERSION}.schema.json"
)
"""aws/eks-node-monitoring-agent charts/configuration.schema.json at the v1.7.0 tag (commit
c399089d), copied: the keys the add-on's configurationValues may hold (EKS rejects any others)."""


def node_monitoring_schema() -> dict[str, Any]:
    schema: dict[str, Any] = json.loads(NODE_MONITORING_SCHEMA.read_text())
    return schema


@pytest.mark.parametrize(
    "values",
    [
        {"dcgmAgent": {"toleration": [{"operator": "Exists"}]}},  # misspelt key
        {"dcgmServer": {"tolerations": []}},  # no such component
        {"dcgmAgent": {"tolerations": {"key": "nvidia.com/gpu"}}},  # not a list
    ],
)
def test_the_schema_refuses_what_eks_would(values: dict[str, Any]) -> None:
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate(values, node_monitoring_schema())


def test_vpc_cni_enforces_network_policies(inventory: Inventory) -> None:
    (cni,) = [a for a in inventory.of_type(ADDON) if a.inputs["addonName"] == "vpc-cni"]
    assert json.loads(cni.inputs["configurationValues"]) == {"enableNetworkPolicy": "true"}


def test_ebs_csi_driver_gets_its_role_through_pod_identity(inventory: Inventory) -> None:
    (ebs,) = [a for a in inventory.of_type(ADDON) if a.inputs["addonName"] == "aws-ebs-csi-driver"]
    (association,) = ebs.inputs["podIdentityAssociations"]
    assert association["serviceAccount"] == "ebs-csi-controller-sa"
    role = next(
        r for r in inventory.of_type("aws:iam/role:Role") if r.name.endswith("-ebs-csi-role")
    )
    assert association["roleArn"].split("/")[-1].startswith(role.name)
    trust = json.loads(role.inputs["assumeRolePolicy"])["Statement"][0]
    assert (
        trust["Condition"]["StringEquals"]["aws:RequestTag/kubernetes-service-account"]
        == "ebs-csi-controller-sa"
    )


def test_addons_that_run_deployments_wait_for_the_system_nodes(inventory: Inventory) -> None:
    """The rest of the order (DNS before its users, no GPU group in the way): test_ordering.py."""
    node_groups = {
        r.inputs["nodeGroupName"]: r.urn for r in inventory.of_type("aws:eks/nodeGroup:NodeGroup")
    }
    for addon in inventory.of_type(ADDON):
        waits = node_groups["system"] in addon.depends_on
        assert waits == (addon.inputs["addonName"] in {"coredns", "aws-ebs-csi-driver"}), addon.name


def test_kubeconfig_is_secret_and_uses_aws_eks_get_token(inventory: Inventory, stack: str) -> None:
    exported = inventory.outputs["kubeconfig"]
    assert isinstance(exported, Secret)
    kubeconfig = yaml.safe_load(exported.value)
    c = load_stack_config(stack)
    (user,) = kubeconfig["users"]
    exec_ = user["user"]["exec"]
    assert exec_["command"] == "aws"
    assert exec_["args"] == [
        "eks",
        "get-token",
        "--cluster-name",
        c.cluster.name,
        "--region",
        c.region,
        "--output",
        "json",
    ]
    (cluster,) = kubeconfig["clusters"]
    assert cluster["cluster"]["server"].startswith("https://")
    assert cluster["cluster"]["certificate-authority-data"]


def test_one_kubernetes_provider_built_from_the_kubeconfig(inventory: Inventory) -> None:
    (provider,) = inventory.of_type("pulumi:providers:kubernetes")
    assert isinstance(provider.inputs["kubeconfig"], Secret)
    assert provider.inputs["kubeconfig"].value == inventory.outputs["kubeconfig"].value


@pytest.mark.parametrize("path", ["Pulumi.yaml"])
def test_project_runs_infra_with_the_repository_virtualenv(path: str) -> None:
    project = yaml.safe_load((ROOT / path).read_text())
    assert project["name"] == config.PROJECT
    assert project["main"] == "infra/"
    assert project["runtime"]["name"] == "python"
    assert project["runtime"]["options"]["virtualenv"] == ".venv"
