"""Managed node groups: one on-demand system group for add-ons, and the tainted GPU groups (spot
first).

Every group gets its own launch template (IMDSv2 only, with the hop limit its pods need: see
`imds_hop_limit`; an encrypted gp3 root volume sized for multi-GB CUDA images). GPU groups
carry the labels and taint from `infra/gpu_spec.py`, and the same spec is written as
cluster-autoscaler node-template tags on each group's Auto Scaling group, so the autoscaler can
scale an empty group up from zero. Pulumi ignores `desiredSize` after creation: the autoscaler owns
it."""

from __future__ import annotations

import json
import re
from collections.abc import Sequence
from dataclasses import dataclass

import pulumi
import pulumi_aws as aws

from infra import gpu_spec, versions
from infra.cluster import Cluster
from infra.config import NodeGroupConfig, NodeGroupsConfig

NODE_POLICIES = (
    "AmazonEKSWorkerNodePolicy",
    # Pull-only (no ECR list/describe) is the narrowest managed policy that lets the kubelet pull
    # images.
    "AmazonEC2ContainerRegistryPullOnly",
    # The VPC CNI runs in host networking before any pod could receive Pod Identity credentials.
    "AmazonEKS_CNI_Policy",
)
ROOT_DEVICE = "/dev/xvda"
"""Root device of the AL2023 EKS AMIs."""


def imds_hop_limit(group: NodeGroupConfig) -> int:
    """IMDSv2 PUT response hop limit of a group's nodes: the fewest hops its pods need.

    A pod outside the host network is one hop further from IMDS than the node, so with a limit of 1
    its token request is answered but the answer never reaches it
    (https://docs.aws.amazon.com/AWSEC2/latest/UserGuide/instance-metadata-v2-how-it-works.html).

    System nodes: 2. The EBS CSI driver (Prometheus' and Alertmanager's volumes attach there) reads
    the instance's ENI and block-device counts from IMDS to compute how many volumes the node can
    still attach. Without IMDS it falls back to Kubernetes metadata and assumes one ENI and one
    volume (kubernetes-sigs/aws-ebs-csi-driver docs/install.md, "Metadata": it "must be run in host
    networking mode, or with a hop limit of at least 2"). On instance types whose ENIs and EBS
    volumes share one attachment limit (most Nitro types), the driver subtracts the attached ENIs
    from it (pkg/driver/node.go `getVolumesLimit`); the VPC CNI adds ENIs as pods arrive, so the
    fallback overstates the free slots and a volume then fails to attach instead of its pod being
    scheduled elsewhere. The cost is
    that pods on system nodes could read the node role's credentials; only the platform's own
    add-ons run there (every chart selects the system nodes), and the node role holds only the
    three managed node policies.

    GPU nodes: 1. Nothing there needs instance metadata: the inference pods, the device plugin and
    the DCGM exporter never call AWS, and vpc-cni, kube-proxy and the Pod Identity agent run in the
    host network (one hop). The EBS CSI node pod there (it tolerates every taint) uses its
    Kubernetes fallback, which is harmless because no volume is ever attached to a GPU node. So the
    inference pods, which parse untrusted input, cannot reach the node's credentials."""
    return 1 if group.gpu is not None else 2


def tag_resource_name(key: str) -> str:
    """A readable, stable resource name fragment for a tag key (keys contain '/' and '.')."""
    return re.sub(
        r"[^a-z0-9]+", "-", key.removeprefix(gpu_spec.AUTOSCALER_TAG_PREFIX).lower()
    ).strip("-")


def _asg_name(resources: Sequence[aws.eks.outputs.NodeGroupResource]) -> str:
    """A managed node group has exactly one Auto Scaling group."""
    groups = resources[0].autoscaling_groups if resources else None
    return (groups[0].name or "") if groups else ""


@dataclass(frozen=True)
class NodeGroupsArgs:
    config: NodeGroupsConfig
    cluster: Cluster
    time_slicing_replicas: int = 1
    """Schedulable nvidia.com/gpu per physical GPU (device plugin time-slicing): what an empty
    group's node template must advertise, or cluster-autoscaler plans one pod per new GPU."""


class NodeGroups(pulumi.ComponentResource):
    node_role: aws.iam.Role
    system: aws.eks.NodeGroup
    gpu: dict[str, aws.eks.NodeGroup]
    """GPU node groups by their config name."""
    gpu_configs: tuple[NodeGroupConfig, ...]
    launch_templates: dict[str, aws.ec2.LaunchTemplate]

    def __init__(
        self, name: str, args: NodeGroupsArgs, opts: pulumi.ResourceOptions | None = None
    ) -> None:
        super().__init__("gpu-inference:nodegroups:NodeGroups", name, None, opts)
        cluster = args.cluster
        self._time_slicing_replicas = args.time_slicing_replicas
        child = pulumi.ResourceOptions(parent=self)
        self.node_role = aws.iam.Role(
            f"{name}-node-role",
            assume_role_policy=json.dumps(
                {
                    "Version": "2012-10-17",
                    "Statement": [
                        {
                            "Effect": "Allow",
                            "Principal": {"Service": "ec2.amazonaws.com"},
                            "Action": "sts:AssumeRole",
                        }
                    ],
                }
            ),
            description=f"Worker nodes of EKS cluster {cluster.name}",
            opts=child,
        )
        attachments = [
            aws.iam.RolePolicyAttachment(
                f"{name}-node-{policy}",
                role=self.node_role.name,
                policy_arn=f"arn:{cluster.partition}:iam::aws:policy/{policy}",
                opts=child,
            )
            for policy in NODE_POLICIES
        ]
        self._depends = [*attachments, *cluster.base_addons]
        self.launch_templates = {}
        self.gpu_configs = args.config.gpu
        self.system = self._group(
            name, cluster, args.config.system, args.config.ami_release_version
        )
        self.gpu = {}
        for group in args.config.gpu:
            node_group = self._group(name, cluster, group, args.config.ami_release_version)
            self.gpu[group.name] = node_group
            self._autoscaler_tags(name, group, node_group)
        self.register_outputs(
            {
                "nodeRoleArn": self.node_role.arn,
                "systemNodeGroup": self.system.node_group_name,
                "gpuNodeGroups": [g.node_group_name for g in self.gpu.values()],
            }
        )

    def _launch_template(
        self, name: str, cluster: Cluster, group: NodeGroupConfig
    ) -> aws.ec2.LaunchTemplate:
        tags = {"Name": f"{cluster.name}-{group.name}", "eks-node-group": group.name}
        template = aws.ec2.LaunchTemplate(
            f"{name}-{group.name}-lt",
            description=f"Nodes of {cluster.name}/{group.name}",
            update_default_version=True,
            metadata_options=aws.ec2.LaunchTemplateMetadataOptionsArgs(
                http_endpoint="enabled",
                http_tokens="required",
                # Workloads get their own roles through Pod Identity; IMDS only where pods need it.
                http_put_response_hop_limit=imds_hop_limit(group),
                instance_metadata_tags="disabled",
            ),
            block_device_mappings=[
                aws.ec2.LaunchTemplateBlockDeviceMappingArgs(
                    device_name=ROOT_DEVICE,
                    ebs=aws.ec2.LaunchTemplateBlockDeviceMappingEbsArgs(
                        volume_size=group.disk_gib,
                        volume_type="gp3",
                        encrypted="true",
                        delete_on_termination="true",
                    ),
                )
            ],
            tag_specifications=[
                aws.ec2.LaunchTemplateTagSpecificationArgs(resource_type=kind, tags=tags)
                for kind in ("instance", "volume")
            ],
            opts=pulumi.ResourceOptions(parent=self),
        )
        self.launch_templates[group.name] = template
        return template

    def _group(
        self, name: str, cluster: Cluster, group: NodeGroupConfig, release: str | None
    ) -> aws.eks.NodeGroup:
        template = self._launch_template(name, cluster, group)
        if group.gpu is not None:
            labels = gpu_spec.gpu_node_labels(group.accelerator)
            taints = [
                aws.eks.NodeGroupTaintArgs(
                    key=gpu_spec.GPU_TAINT.key,
                    value=gpu_spec.GPU_TAINT.value,
                    effect=gpu_spec.GPU_TAINT.eks_effect,
                )
            ]
            ami_type = versions.GPU_AMI_TYPE
        else:
            labels, taints, ami_type = (
                dict(gpu_spec.SYSTEM_NODE_LABELS),
                [],
                versions.SYSTEM_AMI_TYPE,
            )
        return aws.eks.NodeGroup(
            f"{name}-{group.name}",
            cluster_name=cluster.eks.name,
            node_group_name=group.name,
            node_role_arn=self.node_role.arn,
            subnet_ids=cluster.private_subnet_ids,
            version=cluster.kubernetes_version,
            release_version=release,
            ami_type=ami_type,
            capacity_type=group.capacity_type,
            instance_types=list(group.instance_types),
            scaling_config=aws.eks.NodeGroupScalingConfigArgs(
                min_size=group.min_size, desired_size=group.desired_size, max_size=group.max_size
            ),
            update_config=aws.eks.NodeGroupUpdateConfigArgs(max_unavailable=1),
            labels=labels,
            taints=taints,
            launch_template=aws.eks.NodeGroupLaunchTemplateArgs(
                id=template.id, version=template.latest_version.apply(str)
            ),
            # EKS replaces nodes whose kubelet or GPU (NVIDIA XID errors) reports unhealthy.
            node_repair_config=aws.eks.NodeGroupNodeRepairConfigArgs(enabled=True),
            tags={"Name": f"{cluster.name}-{group.name}"},
            opts=pulumi.ResourceOptions(
                parent=self,
                depends_on=self._depends,
                # cluster-autoscaler owns the desired size once the group exists.
                ignore_changes=["scalingConfig.desiredSize"],
            ),
        )

    def _autoscaler_tags(
        self, name: str, group: NodeGroupConfig, node_group: aws.eks.NodeGroup
    ) -> None:
        """Node-template tags on the group's ASG: what a node of this empty group looks like."""
        assert group.gpu is not None
        asg_name = node_group.resources.apply(_asg_name)
        tags = gpu_spec.autoscaler_node_template_tags(
            group.gpu.gpus * self._time_slicing_replicas, group.accelerator, group.capacity_type
        )
        for key, value in tags.items():
            aws.autoscaling.Tag(
                f"{name}-{group.name}-asg-{tag_resource_name(key)}",
                autoscaling_group_name=asg_name,
                tag=aws.autoscaling.TagTagArgs(key=key, value=value, propagate_at_launch=False),
                opts=pulumi.ResourceOptions(parent=self),
            )
