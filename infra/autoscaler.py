"""cluster-autoscaler from its upstream chart, with a least-privilege Pod Identity role.

It discovers the managed node groups by the tags EKS puts on their Auto Scaling groups, prefers spot
GPU groups through the priority expander (on-demand groups are the fallback when spot capacity is
short), balances similar groups across AZs, and runs on the system nodes.
https://github.com/kubernetes/autoscaler/blob/master/cluster-autoscaler/cloudprovider/aws/README.md
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

import pulumi
import pulumi_kubernetes as k8s

from infra import gpu_spec, versions
from infra.charts import chart_args
from infra.cluster import Cluster
from infra.config import AutoscalerConfig, NodeGroupConfig
from infra.identity import WorkloadIdentity, WorkloadIdentityArgs

NAMESPACE = "kube-system"
SERVICE_ACCOUNT = "cluster-autoscaler"
SPOT_PRIORITY = 50
ON_DEMAND_PRIORITY = 10
FALLBACK_PRIORITY = 1
"""Every other group (the system group): considered only when no GPU group fits the pending pods."""
SCAN_INTERVAL = "5s"
"""How often the autoscaler looks for pending pods: its default is 10 s (config.DefaultScanInterval,
cluster-autoscaler/config/const.go at cluster-autoscaler-1.34.1 and 1.35.0), half of it on average
added to every scale-up (README "Scale-up time budget"). Halving it costs no AWS calls: the AWS
provider re-reads the Auto Scaling groups at most once a minute whatever the loop does
(`refreshInterval`, cloudprovider/aws/aws_manager.go), the rest is the informers' cache."""

# Labels that differ between otherwise identical groups and must not stop balancing across them
# (https://github.com/kubernetes/autoscaler/blob/master/cluster-autoscaler/FAQ.md,
# "balance-similar").
#
# `eks.amazonaws.com/capacityType` is deliberately NOT here: it is what keeps spot first. After the
# priority expander picks a spot group, `balanceScaleUps` (cluster-autoscaler-1.35.0,
# core/scaleup/orchestrator/orchestrator.go) splits the new nodes across every group the comparator
# calls similar, whatever their priority. The AWS comparator (processors/nodegroupset/
# aws_nodegroups.go, compare_nodegroups.go `compareLabels`) calls two groups similar only if every
# label outside the ignored set is on both with one value. Nodes of a managed group carry
# capacityType SPOT or ON_DEMAND, and so does a scale-from-zero template
# (cloudprovider/aws/aws_wrapper.go `getManagedNodegroupInfo`, and our node-template tag), so a spot
# group is never balanced with an on-demand one: on-demand GPUs start only when the expander falls
# back to them. tests/infra/test_spot_first.py applies that comparator to our labels. (1.35.0
# ignores topology.k8s.aws/zone-id by itself; nothing else in this list moved since 1.34.1.)
BALANCING_IGNORED_LABELS = (
    "eks.amazonaws.com/nodegroup",
    "eks.amazonaws.com/nodegroup-image",
    "eks.amazonaws.com/sourceLaunchTemplateId",
    "eks.amazonaws.com/sourceLaunchTemplateVersion",
    "k8s.amazonaws.com/eniConfig",
    "topology.ebs.csi.aws.com/zone",
)


def asg_pattern(group_name: str) -> str:
    """Managed node group ASGs are named eks-<nodegroup>-<uuid>; match exactly one group."""
    # Group names are validated DNS labels: nothing in them needs escaping in RE2.
    return f"^eks-{group_name}-[0-9a-f]{{8}}(-[0-9a-f]{{4}}){{3}}-[0-9a-f]{{12}}$"


def expander_priorities(groups: tuple[NodeGroupConfig, ...]) -> dict[str, list[str]]:
    """Priority expander config: higher wins. Spot GPU groups first, on-demand GPU groups next."""
    priorities: dict[str, list[str]] = {}
    for group in groups:
        level = SPOT_PRIORITY if group.is_spot else ON_DEMAND_PRIORITY
        priorities.setdefault(str(level), []).append(asg_pattern(group.name))
    priorities[str(FALLBACK_PRIORITY)] = [".*"]
    return priorities


def iam_policy(cluster_name: str, cluster_arn: str) -> str:
    """Reads are unscoped (AWS offers no resource scoping for Describe*); writes only on ASGs tagged
    as owned by this cluster; DescribeNodegroup only on this cluster's node groups (for labels and
    taints of groups that are scaled to zero)."""
    nodegroups = cluster_arn.replace(":cluster/", ":nodegroup/") + "/*/*"
    return json.dumps(
        {
            "Version": "2012-10-17",
            "Statement": [
                {
                    "Sid": "Discover",
                    "Effect": "Allow",
                    "Action": [
                        "autoscaling:DescribeAutoScalingGroups",
                        "autoscaling:DescribeAutoScalingInstances",
                        "autoscaling:DescribeLaunchConfigurations",
                        "autoscaling:DescribeScalingActivities",
                        "autoscaling:DescribeTags",
                        "ec2:DescribeImages",
                        "ec2:DescribeInstanceTypes",
                        "ec2:DescribeLaunchTemplateVersions",
                        "ec2:GetInstanceTypesFromInstanceRequirements",
                    ],
                    "Resource": "*",
                },
                {
                    "Sid": "ScaleOwnGroups",
                    "Effect": "Allow",
                    "Action": [
                        "autoscaling:SetDesiredCapacity",
                        "autoscaling:TerminateInstanceInAutoScalingGroup",
                    ],
                    "Resource": "*",
                    "Condition": {
                        "StringEquals": {
                            f"aws:ResourceTag/k8s.io/cluster-autoscaler/{cluster_name}": "owned",
                            "aws:ResourceTag/k8s.io/cluster-autoscaler/enabled": "true",
                        }
                    },
                },
                {
                    "Sid": "ReadOwnNodeGroups",
                    "Effect": "Allow",
                    "Action": ["eks:DescribeNodegroup"],
                    "Resource": nodegroups,
                },
            ],
        },
        sort_keys=True,
    )


@dataclass(frozen=True)
class ClusterAutoscalerArgs:
    cluster: Cluster
    config: AutoscalerConfig
    gpu_groups: tuple[NodeGroupConfig, ...]
    depends_on: tuple[pulumi.Resource, ...] = ()
    """The node groups (the chart's pods need the system nodes)."""


class ClusterAutoscaler(pulumi.ComponentResource):
    identity: WorkloadIdentity
    chart: k8s.helm.v4.Chart
    values: dict[str, Any]

    def __init__(
        self, name: str, args: ClusterAutoscalerArgs, opts: pulumi.ResourceOptions | None = None
    ) -> None:
        super().__init__("gpu-inference:autoscaler:ClusterAutoscaler", name, None, opts)
        cluster = args.cluster
        self.identity = WorkloadIdentity(
            f"{name}-identity",
            WorkloadIdentityArgs(
                target=cluster.pod_identity,
                namespace=NAMESPACE,
                service_account=SERVICE_ACCOUNT,
                policy_json=cluster.arn.apply(lambda arn: iam_policy(cluster.name, arn)),
            ),
            opts=pulumi.ResourceOptions(parent=self),
        )
        self.values = chart_values(cluster.name, cluster.region, args.config, args.gpu_groups)
        self.chart = k8s.helm.v4.Chart(
            f"{name}-chart",
            chart_args(versions.CLUSTER_AUTOSCALER, NAMESPACE, self.values),
            opts=pulumi.ResourceOptions(
                parent=self,
                provider=cluster.provider,
                # Credentials are injected at pod creation: the association must exist first.
                depends_on=[self.identity, *args.depends_on],
            ),
        )
        self.register_outputs({"roleArn": self.identity.role_arn})


def chart_values(
    cluster_name: str,
    region: str,
    config: AutoscalerConfig,
    gpu_groups: tuple[NodeGroupConfig, ...],
) -> dict[str, Any]:
    extra_args: dict[str, Any] = {
        "expander": "priority",
        "scan-interval": SCAN_INTERVAL,
        "balance-similar-node-groups": "true",
        # Inference pods use an emptyDir for scratch; that must not pin a GPU node forever.
        "skip-nodes-with-local-storage": "false",
        # DaemonSets (device plugin, DCGM exporter) run on every node and say nothing about its use.
        "ignore-daemonsets-utilization": "true",
        "scale-down-unneeded-time": config.scale_down_unneeded_time,
        "max-node-provision-time": config.max_node_provision_time,
        "logtostderr": "true",
        "stderrthreshold": "info",
        "v": "2",
    }
    # The chart strips everything after '_' from a key, which is how one flag is passed several
    # times.
    for i, label in enumerate(BALANCING_IGNORED_LABELS):
        extra_args[f"balancing-ignore-label_{i}"] = label
    return {
        "cloudProvider": "aws",
        "awsRegion": region,
        "autoDiscovery": {"clusterName": cluster_name},
        "fullnameOverride": "cluster-autoscaler",
        "rbac": {"serviceAccount": {"create": True, "name": SERVICE_ACCOUNT}},
        "expanderPriorities": expander_priorities(gpu_groups),
        "extraArgs": extra_args,
        "nodeSelector": gpu_spec.system_node_selector(),
        "priorityClassName": "system-cluster-critical",
        "replicaCount": 1,
        "resources": {
            "requests": {"cpu": "100m", "memory": "300Mi"},
            "limits": {"memory": "600Mi"},
        },
        "podDisruptionBudget": {"maxUnavailable": 1},
        "securityContext": {"runAsNonRoot": True, "runAsUser": 65534, "fsGroup": 65534},
        "containerSecurityContext": {
            "allowPrivilegeEscalation": False,
            "readOnlyRootFilesystem": True,
            "capabilities": {"drop": ["ALL"]},
            "seccompProfile": {"type": "RuntimeDefault"},
        },
    }
