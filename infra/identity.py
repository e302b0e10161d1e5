"""AWS credentials for Kubernetes service accounts, through EKS Pod Identity.

Why Pod Identity rather than IRSA: the role trusts one service principal (`pods.eks.amazonaws.com`)
instead of a per-cluster OIDC provider, so there is no OIDC provider to create, no thumbprint to
track and no account-wide limit of 100 OIDC providers; the trust policy is plain, reviewable JSON
known at preview time; and the binding of role to service account is an EKS API object
(`PodIdentityAssociation`) rather than an annotation that any chart value can get wrong.
cluster-autoscaler, the EBS CSI driver and the AWS Load Balancer Controller all use AWS SDKs that
support it. The cost: the `eks-pod-identity-agent` add-on must run on every node (the cluster
installs it), and an association must exist before the pod starts, so charts depend on this
component. https://docs.aws.amazon.com/eks/latest/userguide/pod-identities.html"""

from __future__ import annotations

import json
from dataclasses import dataclass

import pulumi
import pulumi_aws as aws


@dataclass(frozen=True)
class PodIdentityTarget:
    """What a workload identity needs from the cluster (exposed as `Cluster.pod_identity`)."""

    cluster_name: str
    partition: str
    agent: pulumi.Resource | None
    """The eks-pod-identity-agent add-on: credentials are only served once it runs."""


@dataclass(frozen=True)
class WorkloadIdentityArgs:
    target: PodIdentityTarget
    namespace: str
    service_account: str
    policy_json: pulumi.Input[str] | None = None
    """An inline least-privilege policy (JSON)."""
    managed_policy_arns: tuple[str, ...] = ()
    """AWS managed policies, as `arn:<partition>:iam::aws:policy/...` suffixes after 'policy/'."""
    create_association: bool = True
    """False for EKS add-ons: they take the role through their own podIdentityAssociations."""


def trust_policy(target: PodIdentityTarget, namespace: str, service_account: str) -> str:
    """Trust EKS Pod Identity, for this cluster's namespace/service account only (session tags)."""
    return json.dumps(
        {
            "Version": "2012-10-17",
            "Statement": [
                {
                    "Effect": "Allow",
                    "Principal": {"Service": "pods.eks.amazonaws.com"},
                    "Action": ["sts:AssumeRole", "sts:TagSession"],
                    "Condition": {
                        "StringEquals": {
                            "aws:RequestTag/eks-cluster-name": target.cluster_name,
                            "aws:RequestTag/kubernetes-namespace": namespace,
                            "aws:RequestTag/kubernetes-service-account": service_account,
                        }
                    },
                }
            ],
        },
        sort_keys=True,
    )


class WorkloadIdentity(pulumi.ComponentResource):
    """An IAM role for one Kubernetes service account, and its Pod Identity association."""

    role: aws.iam.Role
    role_arn: pulumi.Output[str]
    association: aws.eks.PodIdentityAssociation | None

    def __init__(
        self, name: str, args: WorkloadIdentityArgs, opts: pulumi.ResourceOptions | None = None
    ) -> None:
        super().__init__("gpu-inference:identity:WorkloadIdentity", name, None, opts)
        child = pulumi.ResourceOptions(parent=self)
        self.role = aws.iam.Role(
            f"{name}-role",
            assume_role_policy=trust_policy(args.target, args.namespace, args.service_account),
            description=(
                f"Pod Identity role of {args.namespace}/{args.service_account} "
                f"in EKS cluster {args.target.cluster_name}"
            ),
            max_session_duration=3600,
            opts=child,
        )
        self.role_arn = self.role.arn
        if args.policy_json is not None:
            aws.iam.RolePolicy(
                f"{name}-policy", role=self.role.id, policy=args.policy_json, opts=child
            )
        for policy in args.managed_policy_arns:
            aws.iam.RolePolicyAttachment(
                f"{name}-{policy.split('/')[-1]}",
                role=self.role.name,
                policy_arn=f"arn:{args.target.partition}:iam::aws:policy/{policy}",
                opts=child,
            )
        self.association = None
        if args.create_association:
            depends = [args.target.agent] if args.target.agent else []
            self.association = aws.eks.PodIdentityAssociation(
                f"{name}-association",
                cluster_name=args.target.cluster_name,
                namespace=args.namespace,
                service_account=args.service_account,
                role_arn=self.role.arn,
                opts=pulumi.ResourceOptions(parent=self, depends_on=depends),
            )
        self.register_outputs({"roleArn": self.role.arn})
