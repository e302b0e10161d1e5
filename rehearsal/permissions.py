"""The IAM actions the identity running `pulumi up` and `pulumi destroy` needs, derived from what
the program registers and invokes.

Each AWS resource type and data source the program uses maps to the API actions the AWS provider
(pulumi-aws, bridging terraform-provider-aws) calls to create, read, update, tag and delete it, as
the Service Authorization Reference names them; the few other resources that call AWS (the image
build pushing to ECR, the volume sweep at destroy) map to theirs. `python -m rehearsal.permissions`
runs the program for every stack, and for the optional paths no committed stack takes (an existing
VPC, a Route 53 record), under the mock engine and prints the resulting policy;
tests/infra/test_permissions.py fails when the program uses a type or data source this table does
not know, and when the README's policy is not the derived one, so a new AWS call shows up as a test
failure until it is documented.

What the table does not cover: kubectl-side access (EKS access entries, not IAM) and the AWS Load
Balancer Controller, cluster-autoscaler and EBS CSI driver, which call AWS with their own roles
(infra/identity.py).
"""

from __future__ import annotations

import json
import sys
from collections.abc import Iterable, Mapping
from typing import Any, Final

from rehearsal.mockengine import Inventory, run_stack, stacks

_TAGS_EC2: Final = ("ec2:CreateTags", "ec2:DeleteTags")
_TAGS_EKS: Final = ("eks:TagResource", "eks:UntagResource")

RESOURCE_ACTIONS: Final[Mapping[str, tuple[str, ...]]] = {
    # Scale-from-zero node-template tags on the node groups' Auto Scaling groups
    # (infra/nodegroups.py).
    "aws:autoscaling/tag:Tag": (
        "autoscaling:CreateOrUpdateTags",
        "autoscaling:DeleteTags",
        "autoscaling:DescribeTags",
    ),
    "aws:cloudwatch/logGroup:LogGroup": (
        "logs:CreateLogGroup",
        "logs:DeleteLogGroup",
        "logs:DescribeLogGroups",
        "logs:PutRetentionPolicy",
        "logs:DeleteRetentionPolicy",
        "logs:ListTagsForResource",
        "logs:TagResource",
        "logs:UntagResource",
    ),
    "aws:ec2/defaultSecurityGroup:DefaultSecurityGroup": (
        "ec2:DescribeSecurityGroups",
        "ec2:AuthorizeSecurityGroupIngress",
        "ec2:AuthorizeSecurityGroupEgress",
        "ec2:RevokeSecurityGroupIngress",
        "ec2:RevokeSecurityGroupEgress",
        *_TAGS_EC2,
    ),
    "aws:ec2/eip:Eip": (
        "ec2:AllocateAddress",
        "ec2:ReleaseAddress",
        "ec2:DescribeAddresses",
        "ec2:DescribeAddressesAttribute",
        "ec2:DisassociateAddress",
        *_TAGS_EC2,
    ),
    "aws:ec2/internetGateway:InternetGateway": (
        "ec2:CreateInternetGateway",
        "ec2:AttachInternetGateway",
        "ec2:DetachInternetGateway",
        "ec2:DeleteInternetGateway",
        "ec2:DescribeInternetGateways",
        *_TAGS_EC2,
    ),
    "aws:ec2/launchTemplate:LaunchTemplate": (
        "ec2:CreateLaunchTemplate",
        "ec2:CreateLaunchTemplateVersion",
        "ec2:ModifyLaunchTemplate",
        "ec2:DeleteLaunchTemplate",
        "ec2:DescribeLaunchTemplates",
        "ec2:DescribeLaunchTemplateVersions",
        *_TAGS_EC2,
    ),
    "aws:ec2/natGateway:NatGateway": (
        "ec2:CreateNatGateway",
        "ec2:DeleteNatGateway",
        "ec2:DescribeNatGateways",
        *_TAGS_EC2,
    ),
    "aws:ec2/route:Route": (
        "ec2:CreateRoute",
        "ec2:ReplaceRoute",
        "ec2:DeleteRoute",
        "ec2:DescribeRouteTables",
    ),
    "aws:ec2/routeTable:RouteTable": (
        "ec2:CreateRouteTable",
        "ec2:DeleteRouteTable",
        "ec2:DescribeRouteTables",
        *_TAGS_EC2,
    ),
    "aws:ec2/routeTableAssociation:RouteTableAssociation": (
        "ec2:AssociateRouteTable",
        "ec2:DisassociateRouteTable",
        "ec2:ReplaceRouteTableAssociation",
        "ec2:DescribeRouteTables",
    ),
    "aws:ec2/subnet:Subnet": (
        "ec2:CreateSubnet",
        "ec2:DeleteSubnet",
        "ec2:DescribeSubnets",
        "ec2:ModifySubnetAttribute",
        *_TAGS_EC2,
    ),
    # The provider also reads the VPC's default security group, main route table and network ACL.
    "aws:ec2/vpc:Vpc": (
        "ec2:CreateVpc",
        "ec2:DeleteVpc",
        "ec2:DescribeVpcs",
        "ec2:DescribeVpcAttribute",
        "ec2:ModifyVpcAttribute",
        "ec2:DescribeSecurityGroups",
        "ec2:DescribeRouteTables",
        "ec2:DescribeNetworkAcls",
        *_TAGS_EC2,
    ),
    # The S3 gateway endpoint (infra/network.py): terraform-provider-aws
    # internal/service/ec2/vpc_endpoint.go reads a gateway endpoint's prefix list after every read.
    "aws:ec2/vpcEndpoint:VpcEndpoint": (
        "ec2:CreateVpcEndpoint",
        "ec2:ModifyVpcEndpoint",
        "ec2:DeleteVpcEndpoints",
        "ec2:DescribeVpcEndpoints",
        "ec2:DescribePrefixLists",
        *_TAGS_EC2,
    ),
    "aws:ecr/lifecyclePolicy:LifecyclePolicy": (
        "ecr:PutLifecyclePolicy",
        "ecr:GetLifecyclePolicy",
        "ecr:DeleteLifecyclePolicy",
    ),
    # KMS encryption: ECR creates a grant on the key for the repository (ECR User Guide,
    # "Encryption at rest": CreateGrant, RetireGrant and DescribeKey for the creator).
    "aws:ecr/repository:Repository": (
        "ecr:CreateRepository",
        "ecr:DeleteRepository",
        "ecr:DescribeRepositories",
        "ecr:PutImageTagMutability",
        "ecr:PutImageScanningConfiguration",
        "ecr:ListTagsForResource",
        "ecr:TagResource",
        "ecr:UntagResource",
        "kms:CreateGrant",
        "kms:RetireGrant",
        "kms:DescribeKey",
    ),
    "aws:eks/accessEntry:AccessEntry": (
        "eks:CreateAccessEntry",
        "eks:DescribeAccessEntry",
        "eks:UpdateAccessEntry",
        "eks:DeleteAccessEntry",
        *_TAGS_EKS,
    ),
    "aws:eks/accessPolicyAssociation:AccessPolicyAssociation": (
        "eks:AssociateAccessPolicy",
        "eks:DisassociateAccessPolicy",
        "eks:ListAssociatedAccessPolicies",
    ),
    # An add-on with a Pod Identity association passes its role (the EBS CSI driver's).
    "aws:eks/addon:Addon": (
        "eks:CreateAddon",
        "eks:DescribeAddon",
        "eks:UpdateAddon",
        "eks:DeleteAddon",
        "iam:PassRole",
        *_TAGS_EKS,
    ),
    # CreateCluster passes the cluster role; the first cluster of an account creates EKS's
    # service-linked role (EKS User Guide, "Using service-linked roles for Amazon EKS"); secrets
    # encryption makes EKS create a grant on the key for the caller.
    "aws:eks/cluster:Cluster": (
        "eks:CreateCluster",
        "eks:DescribeCluster",
        "eks:UpdateClusterConfig",
        "eks:UpdateClusterVersion",
        "eks:DeleteCluster",
        "iam:PassRole",
        "iam:CreateServiceLinkedRole",
        "kms:CreateGrant",
        "kms:DescribeKey",
        *_TAGS_EKS,
    ),
    # CreateNodegroup passes the node role and creates the node group service-linked role
    # (AWSServiceRoleForAmazonEKSNodegroup) on first use; with a launch template EKS checks that
    # the caller may read its versions ("You are not authorized to describe the launch template
    # version" otherwise).
    "aws:eks/nodeGroup:NodeGroup": (
        "eks:CreateNodegroup",
        "eks:DescribeNodegroup",
        "eks:UpdateNodegroupConfig",
        "eks:UpdateNodegroupVersion",
        "eks:DeleteNodegroup",
        "iam:PassRole",
        "iam:CreateServiceLinkedRole",
        "ec2:DescribeLaunchTemplateVersions",
        *_TAGS_EKS,
    ),
    "aws:eks/podIdentityAssociation:PodIdentityAssociation": (
        "eks:CreatePodIdentityAssociation",
        "eks:DescribePodIdentityAssociation",
        "eks:UpdatePodIdentityAssociation",
        "eks:DeletePodIdentityAssociation",
        "iam:PassRole",
        "iam:GetRole",
        *_TAGS_EKS,
    ),
    # Deleting a role first lists and removes what is attached to it.
    "aws:iam/role:Role": (
        "iam:CreateRole",
        "iam:GetRole",
        "iam:UpdateRole",
        "iam:UpdateRoleDescription",
        "iam:UpdateAssumeRolePolicy",
        "iam:DeleteRole",
        "iam:TagRole",
        "iam:UntagRole",
        "iam:ListRolePolicies",
        "iam:ListAttachedRolePolicies",
        "iam:ListInstanceProfilesForRole",
    ),
    "aws:iam/rolePolicy:RolePolicy": (
        "iam:PutRolePolicy",
        "iam:GetRolePolicy",
        "iam:DeleteRolePolicy",
    ),
    "aws:iam/rolePolicyAttachment:RolePolicyAttachment": (
        "iam:AttachRolePolicy",
        "iam:DetachRolePolicy",
        "iam:ListAttachedRolePolicies",
    ),
    "aws:kms/alias:Alias": (
        "kms:CreateAlias",
        "kms:UpdateAlias",
        "kms:DeleteAlias",
        "kms:ListAliases",
    ),
    "aws:kms/key:Key": (
        "kms:CreateKey",
        "kms:DescribeKey",
        "kms:GetKeyPolicy",
        "kms:PutKeyPolicy",
        "kms:GetKeyRotationStatus",
        "kms:EnableKeyRotation",
        "kms:DisableKeyRotation",
        "kms:UpdateKeyDescription",
        "kms:ListResourceTags",
        "kms:TagResource",
        "kms:UntagResource",
        "kms:ScheduleKeyDeletion",
    ),
    "aws:route53/record:Record": (
        "route53:ChangeResourceRecordSets",
        "route53:GetChange",
        "route53:GetHostedZone",
        "route53:ListResourceRecordSets",
    ),
    "aws:vpc/securityGroupIngressRule:SecurityGroupIngressRule": (
        "ec2:AuthorizeSecurityGroupIngress",
        "ec2:RevokeSecurityGroupIngress",
        "ec2:DescribeSecurityGroupRules",
        "ec2:ModifySecurityGroupRules",
        *_TAGS_EC2,
    ),
}
"""Per AWS resource type: the actions of its create, read, update, tag and delete."""

INVOKE_ACTIONS: Final[Mapping[str, tuple[str, ...]]] = {
    "aws:ec2/getInstanceType:getInstanceType": ("ec2:DescribeInstanceTypes",),
    "aws:ec2/getInstanceTypeOfferings:getInstanceTypeOfferings": (
        "ec2:DescribeInstanceTypeOfferings",
    ),
    "aws:ec2/getSpotPrice:getSpotPrice": ("ec2:DescribeSpotPriceHistory",),
    "aws:ec2/getVpc:getVpc": ("ec2:DescribeVpcs",),
    "aws:ec2/getVpcEndpoint:getVpcEndpoint": ("ec2:DescribeVpcEndpoints",),
    "aws:ecr/getAuthorizationToken:getAuthorizationToken": ("ecr:GetAuthorizationToken",),
    "aws:eks/getAddonVersion:getAddonVersion": ("eks:DescribeAddonVersions",),
    "aws:eks/getClusterVersions:getClusterVersions": ("eks:DescribeClusterVersions",),
    # GetCallerIdentity needs no permission (STS API Reference); getPartition calls nothing.
    "aws:index/getCallerIdentity:getCallerIdentity": (),
    "aws:index/getPartition:getPartition": (),
    "aws:pricing/getProduct:getProduct": ("pricing:GetProducts",),
    "aws:servicequotas/getServiceQuota:getServiceQuota": ("servicequotas:GetServiceQuota",),
}
"""Per data source: the actions it reads with (in preview and up alike)."""

OTHER_ACTIONS: Final[Mapping[str, tuple[str, ...]]] = {
    # The build pushes the image and reads and writes the layer cache in ECR (ECR User Guide,
    # "Pushing an image": the actions a push needs; a pull of the cache needs the last two).
    "docker-build:index:Image": (
        "ecr:BatchCheckLayerAvailability",
        "ecr:InitiateLayerUpload",
        "ecr:UploadLayerPart",
        "ecr:CompleteLayerUpload",
        "ecr:PutImage",
        "ecr:BatchGetImage",
        "ecr:GetDownloadUrlForLayer",
    ),
    # infra/teardown.py: what its delete calls with the deployer's credentials.
    "pulumi-python:dynamic/teardown:EbsVolumeSweep": ("ec2:DescribeVolumes", "ec2:DeleteVolume"),
}
"""Per resource type of another package that calls AWS with the deployer's credentials."""

NO_AWS_PACKAGES: Final = ("gpu-inference", "kubernetes", "pulumi", "random")
"""Packages whose resources never call AWS as the deployer: the program's components, Kubernetes
objects (authorised by EKS access entries; `aws eks get-token` presigns an STS call that needs no
permission), provider resources and random values."""

VARIANTS: Final[Mapping[str, Mapping[str, Any]]] = {
    # Paths no committed stack takes, so their calls are listed too.
    "dev": {
        "existingVpcId": "vpc-0123456789abcdef0",
        "existingPrivateSubnetIds": ["subnet-0123456789abcdef0", "subnet-0123456789abcdef1"],
        "endpointHostname": "embeddings.example.com",
        "route53ZoneId": "Z0123456789ABCDEFGHIJ",
    },
}
"""Stack and overrides of each extra run."""


class UnknownCallError(Exception):
    """The program uses a resource type or data source the tables above do not map."""


def actions_of(inventories: Iterable[Inventory]) -> set[str]:
    """Every action the registered resources and the invokes need; raises UnknownCallError naming
    every type and invoke not in the tables."""
    actions: set[str] = set()
    unknown: set[str] = set()
    for inventory in inventories:
        for resource in inventory.resources:
            if resource.rendered_by is not None:
                continue  # an object a chart renders: Kubernetes, no AWS call
            type_ = resource.type
            known = RESOURCE_ACTIONS.get(type_) or OTHER_ACTIONS.get(type_)
            if known is not None:
                actions.update(known)
            elif type_.split(":", 1)[0] not in NO_AWS_PACKAGES:
                unknown.add(f"resource type {type_}")
        for token in inventory.invokes:
            if token in INVOKE_ACTIONS:
                actions.update(INVOKE_ACTIONS[token])
            else:
                unknown.add(f"invoke {token}")
    if unknown:
        raise UnknownCallError(
            "the program calls AWS in ways rehearsal/permissions.py does not map to IAM actions: "
            + ", ".join(sorted(unknown))
            + "; add their actions there and update the README's deploy policy "
            "(python -m rehearsal.permissions prints it)"
        )
    return actions


def variant_inventories() -> list[Inventory]:
    """Each variant, as the mock engine records it."""
    return [run_stack(stack, overrides) for stack, overrides in VARIANTS.items()]


def inventories() -> list[Inventory]:
    """Each committed stack and each variant."""
    return [*(run_stack(stack) for stack in stacks()), *variant_inventories()]


def policy(actions: Iterable[str]) -> dict[str, Any]:
    """An IAM policy document allowing the actions (sorted, one statement)."""
    return {
        "Version": "2012-10-17",
        "Statement": [{"Effect": "Allow", "Action": sorted(set(actions)), "Resource": "*"}],
    }


def markdown(actions: Iterable[str]) -> list[str]:
    """The README's list: one line per service, `- `service`: Action, Action, ...`."""
    by_service: dict[str, list[str]] = {}
    for action in sorted(set(actions)):
        service, name = action.split(":", 1)
        by_service.setdefault(service, []).append(name)
    return [f"- `{service}`: {', '.join(names)}" for service, names in by_service.items()]


def parse_markdown(lines: Iterable[str]) -> set[str]:
    """The actions of the README's list (the inverse of `markdown`)."""
    actions: set[str] = set()
    for line in lines:
        service, _, names = line.removeprefix("- `").partition("`: ")
        actions.update(f"{service}:{name.strip()}" for name in names.split(","))
    return actions


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    actions = actions_of(inventories())
    if args == ["--markdown"]:
        print("\n".join(markdown(actions)))
    elif not args:
        print(json.dumps(policy(actions), indent=2))
    else:
        print("usage: python -m rehearsal.permissions [--markdown]", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
