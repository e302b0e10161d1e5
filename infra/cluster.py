"""The EKS control plane and what every later component needs from it.

`Cluster`: cluster IAM role, KMS key for secrets envelope encryption, control-plane logs with a
retention, the cluster at the pinned version with API-mode authentication and access entries, the
add-ons that must exist before nodes join (vpc-cni with network policy enforcement, kube-proxy, the
Pod Identity agent), and one Kubernetes provider built from the cluster. `ClusterAddons`: the
add-ons that need running nodes (coredns, the EBS CSI driver with its Pod Identity role), created
after the system node group alone: a GPU group that cannot start (no quota, no spot capacity) must
not hold up DNS and, through it, everything else on the platform."""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import pulumi
import pulumi_aws as aws
import pulumi_kubernetes as k8s

from infra import gpu_spec
from infra.config import PROJECT, ClusterConfig, ConfigError, StackConfig, iam_principal
from infra.identity import PodIdentityTarget, WorkloadIdentity, WorkloadIdentityArgs

ADMIN_POLICY = "AmazonEKSClusterAdminPolicy"
VIEW_POLICY = "AmazonEKSViewPolicy"
"""Read-only, Secrets excluded: enough for `pulumi preview` (without --refresh) of the Kubernetes
resources. Their dry-run apply is refused (Forbidden) and pulumi-kubernetes then falls back to a
client-side preview (provider/pkg/provider/provider.go Create/Update: `req.GetPreview() &&
apierrors.IsForbidden(awaitErr)`; pulumi/pulumi-kubernetes#2419). Access policies:
https://docs.aws.amazon.com/eks/latest/userguide/access-policy-permissions.html"""
EBS_CSI_SERVICE_ACCOUNT = "ebs-csi-controller-sa"


def kubeconfig(cluster_name: str, endpoint: str, ca_data: str, region: str) -> str:
    """A kubeconfig that authenticates with `aws eks get-token` (no long-lived credentials)."""
    return json.dumps(
        {
            "apiVersion": "v1",
            "kind": "Config",
            "clusters": [
                {
                    "name": cluster_name,
                    "cluster": {"server": endpoint, "certificate-authority-data": ca_data},
                }
            ],
            "contexts": [
                {"name": cluster_name, "context": {"cluster": cluster_name, "user": cluster_name}}
            ],
            "current-context": cluster_name,
            "users": [
                {
                    "name": cluster_name,
                    "user": {
                        "exec": {
                            "apiVersion": "client.authentication.k8s.io/v1beta1",
                            "command": "aws",
                            "args": [
                                "eks",
                                "get-token",
                                "--cluster-name",
                                cluster_name,
                                "--region",
                                region,
                                "--output",
                                "json",
                            ],
                        }
                    },
                }
            ],
        },
        sort_keys=True,
    )


def addon_version(
    addon: str, kubernetes_version: str, parent: pulumi.Resource
) -> pulumi.Output[str]:
    """The version AWS marks default for this add-on on this Kubernetes minor."""
    return aws.eks.get_addon_version_output(
        addon_name=addon,
        kubernetes_version=kubernetes_version,
        most_recent=False,
        opts=pulumi.InvokeOptions(parent=parent),
    ).version


def require_cluster_access(caller_arn: str, cluster: ClusterConfig, stack_file: str) -> str:
    """The access entry the identity running Pulumi will use; refused (at preview, before the
    cluster is created) when it has none, since the cluster's creator gets no access by itself."""
    caller = iam_principal(caller_arn)
    for arn in (*cluster.admins, *cluster.viewers):
        if caller is not None and iam_principal(arn) == caller:
            return arn
    account, kind, name = caller or ("<account>", "role", "<name>")
    raise ConfigError(
        stack_file,
        f"{PROJECT}:adminPrincipalArns",
        list(cluster.admin_principal_arns),
        f"Pulumi runs as {caller_arn}, which would get no access to the cluster: add "
        f"arn:aws:iam::{account}:{kind}/{name} (with its path, if it has one) to "
        "adminPrincipalArns, or run as deployRoleArn or previewRoleArn",
    )


def check_caller_access(cfg: StackConfig) -> str:
    """Refuses to run (before any resource is registered) as an identity that would create the
    cluster and then fail on every Kubernetes object for lack of access."""
    caller = aws.get_caller_identity().arn
    return require_cluster_access(caller, cfg.cluster, cfg.stack_file)


def _oidc_issuer(identities: Sequence[aws.eks.outputs.ClusterIdentity]) -> str:
    oidcs = identities[0].oidcs if identities else None
    return (oidcs[0].issuer or "") if oidcs else ""


@dataclass(frozen=True)
class ClusterArgs:
    config: StackConfig
    vpc_id: pulumi.Input[str]
    private_subnet_ids: pulumi.Input[list[str]]


class Cluster(pulumi.ComponentResource):
    """The control plane. Attributes are what the other components consume."""

    name: str
    """The EKS cluster name, a plain string so Kubernetes objects can use it at preview time."""
    region: str
    partition: str
    kubernetes_version: str
    vpc_id: pulumi.Output[str]
    private_subnet_ids: pulumi.Output[list[str]]
    eks: aws.eks.Cluster
    arn: pulumi.Output[str]
    endpoint: pulumi.Output[str]
    oidc_issuer: pulumi.Output[str]
    """Kept for tools that still want IRSA; this program uses Pod Identity (`pod_identity`)."""
    node_security_group_id: pulumi.Output[str]
    """The EKS-managed cluster security group, which managed node groups attach to every node."""
    kms_key_arn: pulumi.Output[str]
    kubeconfig: pulumi.Output[str]
    """Secret."""
    provider: k8s.Provider
    pod_identity: PodIdentityTarget
    base_addons: list[aws.eks.Addon]
    """vpc-cni, kube-proxy, the Pod Identity agent and the node monitoring agent (DaemonSets only):
    node groups depend on them."""

    def __init__(
        self, name: str, args: ClusterArgs, opts: pulumi.ResourceOptions | None = None
    ) -> None:
        super().__init__("gpu-inference:cluster:Cluster", name, None, opts)
        cfg = args.config
        cc = cfg.cluster
        child = pulumi.ResourceOptions(parent=self)
        self.name = cc.name
        self.region = cfg.region
        self.partition = cfg.partition
        self.kubernetes_version = cc.kubernetes_version
        self.vpc_id = pulumi.Output.from_input(args.vpc_id)
        self.private_subnet_ids = pulumi.Output.from_input(args.private_subnet_ids)

        role = aws.iam.Role(
            f"{name}-role",
            assume_role_policy=json.dumps(
                {
                    "Version": "2012-10-17",
                    "Statement": [
                        {
                            "Effect": "Allow",
                            "Principal": {"Service": "eks.amazonaws.com"},
                            "Action": ["sts:AssumeRole", "sts:TagSession"],
                        }
                    ],
                }
            ),
            description=f"EKS control plane of {cc.name}",
            opts=child,
        )
        policy = aws.iam.RolePolicyAttachment(
            f"{name}-cluster-policy",
            role=role.name,
            policy_arn=f"arn:{cfg.partition}:iam::aws:policy/AmazonEKSClusterPolicy",
            opts=child,
        )
        key = aws.kms.Key(
            f"{name}-secrets-key",
            description=f"Envelope encryption of Kubernetes secrets in EKS cluster {cc.name}",
            enable_key_rotation=True,
            deletion_window_in_days=30,
            opts=child,
        )
        aws.kms.Alias(
            f"{name}-secrets-key-alias",
            name=f"alias/eks/{cc.name}-secrets",
            target_key_id=key.key_id,
            opts=child,
        )
        # AmazonEKSClusterPolicy does not cover a customer key; scope the grant to this key only.
        key_policy = aws.iam.RolePolicy(
            f"{name}-secrets-key-use",
            role=role.id,
            policy=key.arn.apply(
                lambda arn: json.dumps(
                    {
                        "Version": "2012-10-17",
                        "Statement": [
                            {
                                "Effect": "Allow",
                                "Action": [
                                    "kms:Encrypt",
                                    "kms:Decrypt",
                                    "kms:ListGrants",
                                    "kms:DescribeKey",
                                ],
                                "Resource": arn,
                            }
                        ],
                    }
                )
            ),
            opts=child,
        )
        # EKS would create this group with infinite retention; own it so retention is explicit.
        logs = aws.cloudwatch.LogGroup(
            f"{name}-logs",
            name=f"/aws/eks/{cc.name}/cluster",
            retention_in_days=90 if cfg.production else 14,
            opts=child,
        )
        self.eks = aws.eks.Cluster(
            f"{name}-eks",
            name=cc.name,
            version=cc.kubernetes_version,
            role_arn=role.arn,
            vpc_config=aws.eks.ClusterVpcConfigArgs(
                subnet_ids=self.private_subnet_ids,
                endpoint_private_access=True,
                endpoint_public_access=cc.endpoint_public_access,
                public_access_cidrs=list(cc.public_access_cidrs) or None,
            ),
            access_config=aws.eks.ClusterAccessConfigArgs(
                authentication_mode="API",
                # Every grant is an access entry from the stack config. With the creator's implicit
                # entry, the deploy role (the creator when CI makes the stack) would get a second
                # entry and EKS would refuse it (ResourceInUseException); a stack a person created
                # would leave CI without access. CreateCluster accessConfig:
                # https://docs.aws.amazon.com/eks/latest/APIReference/API_CreateAccessConfigRequest.html
                bootstrap_cluster_creator_admin_permissions=False,
            ),
            # vpc-cni, kube-proxy and coredns come as managed add-ons below, so EKS must not also
            # install self-managed copies that the add-ons would then have to take over.
            bootstrap_self_managed_addons=False,
            encryption_config=aws.eks.ClusterEncryptionConfigArgs(
                provider=aws.eks.ClusterEncryptionConfigProviderArgs(key_arn=key.arn),
                resources=["secrets"],
            ),
            enabled_cluster_log_types=list(cc.log_types),
            upgrade_policy=aws.eks.ClusterUpgradePolicyArgs(support_type=cc.support_type),
            tags={"Name": cc.name},
            opts=pulumi.ResourceOptions(parent=self, depends_on=[policy, key_policy, logs]),
        )
        self.arn = self.eks.arn
        self.endpoint = self.eks.endpoint
        self.kms_key_arn = key.arn
        self.oidc_issuer = self.eks.identities.apply(_oidc_issuer)
        self.node_security_group_id = self.eks.vpc_config.apply(
            lambda v: v.cluster_security_group_id or ""
        )

        # "An access entry includes the ARN of one, and only one, existing IAM principal. An IAM
        # principal can't be included in more than one access entry." A role's ARN may include its
        # path. https://docs.aws.amazon.com/eks/latest/userguide/creating-access-entries.html
        grants = [
            *[(f"admin-{i}", arn, ADMIN_POLICY) for i, arn in enumerate(cc.admin_principal_arns)],
            *[("deploy", arn, ADMIN_POLICY) for arn in filter(None, [cc.deploy_role_arn])],
            *[("preview", arn, VIEW_POLICY) for arn in cc.viewers],
        ]
        access = [
            self._access_entry(f"{name}-{suffix}", principal, policy, cfg.partition)
            for suffix, principal, policy in grants
        ]
        # The private endpoint answers only what the cluster security group admits: nodes, and
        # these networks (a CI runner's subnet, a VPN). EKS docs, "Cluster API server endpoint",
        # accessing a private-only endpoint from a connected network:
        # https://docs.aws.amazon.com/eks/latest/userguide/cluster-endpoint.html
        api_rules = [
            aws.vpc.SecurityGroupIngressRule(
                f"{name}-api-from-{i}",
                security_group_id=self.node_security_group_id,
                cidr_ipv4=cidr,
                ip_protocol="tcp",
                from_port=443,
                to_port=443,
                description=f"Kubernetes API (private endpoint) from {cidr}",
                opts=child,
            )
            for i, cidr in enumerate(cc.private_api_access_cidrs)
        ]

        # Node auto repair (on every group, infra/nodegroups.py) reacts by itself only to the
        # kubelet's Ready condition; GPU faults (NVIDIA XID errors, AcceleratedHardwareReady) are
        # reported by the EKS node monitoring agent (EKS User Guide, "Enable node auto repair and
        # investigate node health issues": "When paired with the node monitoring agent, node auto
        # repair can react to more conditions"). The agent learns of XIDs from DCGM policies
        # (aws/eks-node-monitoring-agent v1.7.0 monitors/nvidia/dcgm), served by the add-on's
        # dcgm-server DaemonSet, which tolerates no taint by default (its chart's values.yaml,
        # `dcgmAgent.tolerations: []`): without the GPU taint's toleration it would never run on a
        # GPU node. The add-on takes the key: "The EKS add-on accepts the subset of chart values in
        # its configuration schema and rejects any others" (EKS User Guide, "Configure the Amazon
        # EKS node monitoring agent"), and that schema (charts/configuration.schema.json at v1.7.0,
        # the default add-on version for 1.35, v1.7.0-eksbuild.1) has `dcgmAgent.tolerations`;
        # tests/infra/test_cluster.py validates these values against a copy of it. The agent's own
        # DaemonSet tolerates every taint. DaemonSets only, like the networking add-ons: ACTIVE
        # before any node, and every node starts watched.
        #
        # Each GPU node then runs two DCGM host engines, on purpose: this nv-hostengine (hostPort
        # 5555; the agent is a DCGM client of localhost:5555, chart README "DCGM host engine") and
        # the one embedded in dcgm-exporter (infra/gpu.py). No port clash: the exporter's pod has
        # its own network namespace (no hostNetwork, no hostPort; tests/infra/test_gpu.py). Both
        # work: what one process holds for the whole machine is DCGM profiling (the DCP fields,
        # DCGM_FI_PROF_*: "the profiling module uses hardware subsystems that cannot be shared
        # between multiple processes", NVIDIA/dcgm-exporter#7; a driver-wide lock, NVIDIA/DCGM#56),
        # which the exporter collects and the agent never asks for: it registers policies (XID,
        # DBE, NVLink, ...), health watches and five non-profiling fields (dcgm_client.go at
        # v1.7.0), and runs active diagnostics only with DCGM_DIAG_LEVEL set
        # (dcgm_activediagnostic.go), which nothing here sets. Pointing the exporter at this engine
        # (`-r <node IP>:5555`) would tie the GPU metrics, and the HPA's GPU signal, to another
        # add-on's DaemonSet and to its DCGM version matching the exporter's.
        node_monitoring = managed_addon(
            name,
            self,
            "eks-node-monitoring-agent",
            {"dcgmAgent": {"tolerations": [gpu_spec.toleration()]}},
            parent=self,
        )
        self.base_addons = [
            managed_addon(name, self, "vpc-cni", {"enableNetworkPolicy": "true"}, parent=self),
            managed_addon(name, self, "kube-proxy", parent=self),
            managed_addon(name, self, "eks-pod-identity-agent", parent=self),
            node_monitoring,
        ]
        self.pod_identity = PodIdentityTarget(
            cluster_name=cc.name, partition=cfg.partition, agent=self.base_addons[2]
        )

        ca_data = self.eks.certificate_authority.apply(lambda ca: ca.data)
        self.kubeconfig = pulumi.Output.secret(
            pulumi.Output.all(self.eks.name, self.eks.endpoint, ca_data).apply(
                lambda a: kubeconfig(a[0], a[1], a[2], cfg.region)
            )
        )
        self.provider = k8s.Provider(
            f"{name}-k8s",
            kubeconfig=self.kubeconfig,
            enable_server_side_apply=True,
            # Every Kubernetes object waits for its provider: none is sent before the identities
            # running Pulumi have their access policies, nor before a runner that reaches the
            # private endpoint is admitted to it.
            opts=pulumi.ResourceOptions(parent=self, depends_on=[*access, *api_rules]),
        )
        self.register_outputs(
            {
                "name": self.name,
                "arn": self.arn,
                "endpoint": self.endpoint,
                "oidcIssuer": self.oidc_issuer,
                "kubeconfig": self.kubeconfig,
            }
        )

    def _access_entry(
        self, name: str, principal: str, policy: str, partition: str
    ) -> aws.eks.AccessPolicyAssociation:
        entry = aws.eks.AccessEntry(
            name,
            cluster_name=self.eks.name,
            principal_arn=principal,
            type="STANDARD",
            opts=pulumi.ResourceOptions(parent=self),
        )
        return aws.eks.AccessPolicyAssociation(
            f"{name}-policy",
            cluster_name=self.eks.name,
            principal_arn=principal,
            policy_arn=f"arn:{partition}:eks::aws:cluster-access-policy/{policy}",
            access_scope=aws.eks.AccessPolicyAssociationAccessScopeArgs(type="cluster"),
            opts=pulumi.ResourceOptions(parent=self, depends_on=[entry]),
        )


def managed_addon(
    name: str,
    cluster: Cluster,
    addon: str,
    configuration: dict[str, Any] | None = None,
    *,
    parent: pulumi.Resource,
    depends_on: list[pulumi.Resource] | None = None,
    pod_identity: list[aws.eks.AddonPodIdentityAssociationArgs] | None = None,
) -> aws.eks.Addon:
    """An EKS managed add-on at the default version for the cluster's Kubernetes minor."""
    return aws.eks.Addon(
        f"{name}-{addon}",
        cluster_name=cluster.eks.name,
        addon_name=addon,
        addon_version=addon_version(addon, cluster.kubernetes_version, parent),
        configuration_values=json.dumps(configuration, sort_keys=True) if configuration else None,
        # The configuration here is the truth: overwrite drift on create and on update.
        resolve_conflicts_on_create="OVERWRITE",
        resolve_conflicts_on_update="OVERWRITE",
        pod_identity_associations=pod_identity,
        opts=pulumi.ResourceOptions(parent=parent, depends_on=depends_on or []),
    )


@dataclass(frozen=True)
class ClusterAddonsArgs:
    cluster: Cluster
    system_nodes: pulumi.Resource
    """The system node group. These add-ons run Deployments, which only become ACTIVE once nodes
    they may run on exist; they select the system nodes, so no GPU group is waited for."""


class ClusterAddons(pulumi.ComponentResource):
    """coredns and the EBS CSI driver (Prometheus' volume), on the system nodes.

    Order: system nodes -> coredns -> EBS CSI driver. `aws.eks.Addon` returns from create only once
    EKS reports the add-on ACTIVE (terraform-provider-aws internal/service/eks `waitAddonCreated`:
    pending CREATING/DEGRADED, target ACTIVE), so whatever depends on `coredns` starts with cluster
    DNS answering. With `bootstrapSelfManagedAddons=False` there is no other DNS in the cluster
    (https://docs.aws.amazon.com/eks/latest/userguide/eks-add-ons.html)."""

    ebs_csi_identity: WorkloadIdentity
    coredns: aws.eks.Addon
    """Depend on this to start after cluster DNS works (anything that calls a Service or an AWS
    endpoint by name: cluster-autoscaler, the LB controller, the EBS CSI controller, monitoring)."""
    addons: list[aws.eks.Addon]

    def __init__(
        self, name: str, args: ClusterAddonsArgs, opts: pulumi.ResourceOptions | None = None
    ) -> None:
        super().__init__("gpu-inference:cluster:ClusterAddons", name, None, opts)
        cluster = args.cluster
        system = gpu_spec.system_node_selector()
        self.ebs_csi_identity = WorkloadIdentity(
            f"{name}-ebs-csi",
            WorkloadIdentityArgs(
                target=cluster.pod_identity,
                namespace="kube-system",
                service_account=EBS_CSI_SERVICE_ACCOUNT,
                managed_policy_arns=("service-role/AmazonEBSCSIDriverPolicy",),
                create_association=False,
            ),
            opts=pulumi.ResourceOptions(parent=self),
        )
        self.coredns = managed_addon(
            name,
            cluster,
            "coredns",
            {"nodeSelector": system},
            depends_on=[args.system_nodes],
            parent=self,
        )
        ebs_csi = managed_addon(
            name,
            cluster,
            "aws-ebs-csi-driver",
            {"controller": {"nodeSelector": system}},
            # The controller calls the EC2 API by name from its first start: DNS first.
            depends_on=[args.system_nodes, self.coredns, self.ebs_csi_identity],
            pod_identity=[
                aws.eks.AddonPodIdentityAssociationArgs(
                    role_arn=self.ebs_csi_identity.role_arn,
                    service_account=EBS_CSI_SERVICE_ACCOUNT,
                )
            ],
            parent=self,
        )
        self.addons = [self.coredns, ebs_csi]
        self.register_outputs({"addons": [a.addon_name for a in self.addons]})
