"""The AWS Load Balancer Controller (upstream chart) and its Pod Identity role.

It turns the inference LoadBalancer Service into an NLB with IP targets (pods registered directly,
no node hop, no NodePort), and injects readiness gates so a rollout waits until new pods are healthy
in the NLB before old ones go. https://kubernetes-sigs.github.io/aws-load-balancer-controller/
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Final

import pulumi
import pulumi_kubernetes as k8s

from infra import versions
from infra.charts import chart_path
from infra.identity import PodIdentityTarget, WorkloadIdentity, WorkloadIdentityArgs

NAMESPACE: Final = "kube-system"
SERVICE_ACCOUNT: Final = "aws-load-balancer-controller"
LOAD_BALANCER_CLASS: Final = "service.k8s.aws/nlb"
"""Services with this class are reconciled by the controller (never by the legacy in-tree one)."""
READINESS_GATE_LABEL: Final = {"elbv2.k8s.aws/pod-readiness-gate-inject": "enabled"}
"""Namespace label: the controller's webhook adds target-health readiness gates to its pods."""
CLUSTER_TAG: Final = "elbv2.k8s.aws/cluster"
"""Tag the controller puts on everything it creates; the policy scopes mutations to it."""


def iam_policy(partition: str) -> str:
    """The controller's IAM policy: docs/install/iam_policy.json of
    kubernetes-sigs/aws-load-balancer-controller (v2.12 shape) plus the actions later releases up
    to v2.17 added (IPAM pools, route tables, IP pools, rule priorities).

    Mutations are limited to resources carrying the controller's cluster tag; creation requires the
    request to carry it.
    """
    elb = f"arn:{partition}:elasticloadbalancing:*:*"
    tagged = {"Null": {f"aws:ResourceTag/{CLUSTER_TAG}": "false"}}
    request_tagged = {"Null": {f"aws:RequestTag/{CLUSTER_TAG}": "false"}}
    # Tag changes only on resources carrying the cluster tag, by requests that leave that tag alone.
    retag_guard = {
        "Null": {f"aws:RequestTag/{CLUSTER_TAG}": "true", f"aws:ResourceTag/{CLUSTER_TAG}": "false"}
    }
    load_balancers = [
        f"{elb}:targetgroup/*/*",
        f"{elb}:loadbalancer/net/*/*",
        f"{elb}:loadbalancer/app/*/*",
    ]
    security_groups = f"arn:{partition}:ec2:*:*:security-group/*"
    statements: list[dict[str, Any]] = [
        _allow(
            ["iam:CreateServiceLinkedRole"],
            condition={
                "StringEquals": {"iam:AWSServiceName": "elasticloadbalancing.amazonaws.com"}
            },
        ),
        _allow(
            [
                "ec2:DescribeAccountAttributes",
                "ec2:DescribeAddresses",
                "ec2:DescribeAvailabilityZones",
                "ec2:DescribeInternetGateways",
                "ec2:DescribeVpcs",
                "ec2:DescribeVpcPeeringConnections",
                "ec2:DescribeSubnets",
                "ec2:DescribeSecurityGroups",
                "ec2:DescribeInstances",
                "ec2:DescribeNetworkInterfaces",
                "ec2:DescribeTags",
                "ec2:DescribeRouteTables",
                "ec2:DescribeIpamPools",
                "ec2:GetCoipPoolUsage",
                "ec2:DescribeCoipPools",
                "ec2:GetSecurityGroupsForVpc",
                "elasticloadbalancing:DescribeLoadBalancers",
                "elasticloadbalancing:DescribeLoadBalancerAttributes",
                "elasticloadbalancing:DescribeListeners",
                "elasticloadbalancing:DescribeListenerCertificates",
                "elasticloadbalancing:DescribeSSLPolicies",
                "elasticloadbalancing:DescribeRules",
                "elasticloadbalancing:DescribeTargetGroups",
                "elasticloadbalancing:DescribeTargetGroupAttributes",
                "elasticloadbalancing:DescribeTargetHealth",
                "elasticloadbalancing:DescribeTags",
                "elasticloadbalancing:DescribeTrustStores",
                "elasticloadbalancing:DescribeListenerAttributes",
                "elasticloadbalancing:DescribeCapacityReservation",
            ]
        ),
        _allow(
            [
                "cognito-idp:DescribeUserPoolClient",
                "acm:ListCertificates",
                "acm:DescribeCertificate",
                "iam:ListServerCertificates",
                "iam:GetServerCertificate",
                "waf-regional:GetWebACL",
                "waf-regional:GetWebACLForResource",
                "waf-regional:AssociateWebACL",
                "waf-regional:DisassociateWebACL",
                "wafv2:GetWebACL",
                "wafv2:GetWebACLForResource",
                "wafv2:AssociateWebACL",
                "wafv2:DisassociateWebACL",
                "shield:GetSubscriptionState",
                "shield:DescribeProtection",
                "shield:CreateProtection",
                "shield:DeleteProtection",
            ]
        ),
        _allow(["ec2:AuthorizeSecurityGroupIngress", "ec2:RevokeSecurityGroupIngress"]),
        _allow(["ec2:CreateSecurityGroup"]),
        _allow(
            ["ec2:CreateTags"],
            resource=security_groups,
            condition={
                "StringEquals": {"ec2:CreateAction": "CreateSecurityGroup"},
                **request_tagged,
            },
        ),
        _allow(
            ["ec2:CreateTags", "ec2:DeleteTags"],
            resource=security_groups,
            condition=retag_guard,
        ),
        _allow(
            [
                "ec2:AuthorizeSecurityGroupIngress",
                "ec2:RevokeSecurityGroupIngress",
                "ec2:DeleteSecurityGroup",
            ],
            condition=tagged,
        ),
        _allow(
            ["elasticloadbalancing:CreateLoadBalancer", "elasticloadbalancing:CreateTargetGroup"],
            condition=request_tagged,
        ),
        _allow(
            [
                "elasticloadbalancing:CreateListener",
                "elasticloadbalancing:DeleteListener",
                "elasticloadbalancing:CreateRule",
                "elasticloadbalancing:DeleteRule",
            ]
        ),
        _allow(
            ["elasticloadbalancing:AddTags", "elasticloadbalancing:RemoveTags"],
            resource=load_balancers,
            condition=retag_guard,
        ),
        _allow(
            ["elasticloadbalancing:AddTags", "elasticloadbalancing:RemoveTags"],
            resource=[
                f"{elb}:listener/net/*/*/*",
                f"{elb}:listener/app/*/*/*",
                f"{elb}:listener-rule/net/*/*/*",
                f"{elb}:listener-rule/app/*/*/*",
            ],
        ),
        _allow(
            [
                "elasticloadbalancing:ModifyLoadBalancerAttributes",
                "elasticloadbalancing:SetIpAddressType",
                "elasticloadbalancing:SetSecurityGroups",
                "elasticloadbalancing:SetSubnets",
                "elasticloadbalancing:DeleteLoadBalancer",
                "elasticloadbalancing:ModifyTargetGroup",
                "elasticloadbalancing:ModifyTargetGroupAttributes",
                "elasticloadbalancing:DeleteTargetGroup",
                "elasticloadbalancing:ModifyListenerAttributes",
                "elasticloadbalancing:ModifyCapacityReservation",
                "elasticloadbalancing:ModifyIpPools",
            ],
            condition=tagged,
        ),
        _allow(
            ["elasticloadbalancing:AddTags"],
            resource=load_balancers,
            condition={
                "StringEquals": {
                    "elasticloadbalancing:CreateAction": ["CreateTargetGroup", "CreateLoadBalancer"]
                },
                **request_tagged,
            },
        ),
        _allow(
            ["elasticloadbalancing:RegisterTargets", "elasticloadbalancing:DeregisterTargets"],
            resource=f"{elb}:targetgroup/*/*",
        ),
        _allow(
            [
                "elasticloadbalancing:SetWebAcl",
                "elasticloadbalancing:ModifyListener",
                "elasticloadbalancing:AddListenerCertificates",
                "elasticloadbalancing:RemoveListenerCertificates",
                "elasticloadbalancing:ModifyRule",
                "elasticloadbalancing:SetRulePriorities",
            ]
        ),
    ]
    return json.dumps({"Version": "2012-10-17", "Statement": statements}, sort_keys=True)


def _allow(
    actions: list[str],
    resource: str | list[str] = "*",
    condition: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    statement: dict[str, Any] = {"Effect": "Allow", "Action": actions, "Resource": resource}
    if condition:
        statement["Condition"] = dict(condition)
    return statement


@dataclass(frozen=True)
class LoadBalancerControllerArgs:
    target: PodIdentityTarget
    cluster_name: str
    region: str
    vpc_id: pulumi.Input[str]
    system_node_selector: Mapping[str, str]
    depends_on: tuple[pulumi.Resource, ...] = ()
    """Nodes the controller's pods need."""


def chart_values(args: LoadBalancerControllerArgs) -> dict[str, Any]:
    return {
        "clusterName": args.cluster_name,
        "region": args.region,
        # Given explicitly, so the controller never needs instance metadata (IMDS) to find it.
        "vpcId": args.vpc_id,
        "serviceAccount": {"create": True, "name": SERVICE_ACCOUNT},
        "replicaCount": 2,
        "podDisruptionBudget": {"maxUnavailable": 1},
        "nodeSelector": dict(args.system_node_selector),
        "priorityClassName": "system-cluster-critical",
        # The chart sets none: without requests the controller is BestEffort, the first pod evicted
        # under node pressure, and NLB targets stop following pod changes while it is gone.
        "resources": {
            "requests": {"cpu": "100m", "memory": "128Mi"},
            "limits": {"memory": "512Mi"},
        },
        # Off: the mutating webhook would make every LoadBalancer Service in the cluster an NLB.
        # Ours states its loadBalancerClass explicitly.
        "enableServiceMutatorWebhook": False,
    }


class LoadBalancerController(pulumi.ComponentResource):
    identity: WorkloadIdentity
    release: k8s.helm.v3.Release

    def __init__(
        self,
        name: str,
        args: LoadBalancerControllerArgs,
        opts: pulumi.ResourceOptions | None = None,
    ) -> None:
        super().__init__("gpu-inference:loadbalancer:LoadBalancerController", name, None, opts)
        self.identity = WorkloadIdentity(
            f"{name}-identity",
            WorkloadIdentityArgs(
                target=args.target,
                namespace=NAMESPACE,
                service_account=SERVICE_ACCOUNT,
                policy_json=iam_policy(args.target.partition),
            ),
            opts=pulumi.ResourceOptions(parent=self),
        )
        chart = versions.AWS_LOAD_BALANCER_CONTROLLER
        # helm.v3.Release, not v4.Chart: the chart generates its webhook's CA and serving
        # certificate with genCA at render time, so every preview of a v4.Chart would show a new
        # certificate and every `up` would rotate it. A Release renders once, in the cluster.
        self.release = k8s.helm.v3.Release(
            f"{name}-release",
            k8s.helm.v3.ReleaseArgs(
                name=chart.chart,
                # The vendored archive (infra/charts.py): Helm never reaches a chart repository.
                chart=chart_path(chart),
                namespace=NAMESPACE,
                values=chart_values(args),
                # The Service and the readiness-gate webhook must work before dependents proceed.
                atomic=True,
                timeout=600,
            ),
            opts=pulumi.ResourceOptions(parent=self, depends_on=[self.identity, *args.depends_on]),
        )
        self.register_outputs({"roleArn": self.identity.role_arn})
