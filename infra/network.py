"""The VPC: a public and a private subnet per AZ, NAT, routes and the subnet tags EKS load balancers
need.

Nodes and pods live in the private subnets (the VPC CNI gives pods VPC addresses, hence large
private subnets). Public subnets hold only the NAT gateways and internet-facing load balancers, and
never assign public IPs to instances. An S3 gateway endpoint on every private route table takes
S3 traffic, ECR's image layers above all, off the NAT gateways. With `existingVpcId` nothing is
created and the given subnets are used; the preview warns when that VPC routes S3 through no
gateway endpoint."""

from __future__ import annotations

from dataclasses import dataclass

import pulumi
import pulumi_aws as aws

from infra.config import ExistingNetwork, NetworkConfig

ROLE_TAGS = {"public": "kubernetes.io/role/elb", "private": "kubernetes.io/role/internal-elb"}
"""Internet-facing load balancers go to subnets tagged elb, internal ones to internal-elb."""


@dataclass(frozen=True)
class NetworkArgs:
    config: NetworkConfig
    cluster_name: str
    region: str


def s3_service_name(region: str) -> str:
    """The S3 gateway endpoint service of a region ("Gateway endpoints for Amazon S3", Amazon VPC
    AWS PrivateLink guide: `com.amazonaws.region.s3`)."""
    return f"com.amazonaws.{region}.s3"


class Network(pulumi.ComponentResource):
    vpc_id: pulumi.Output[str]
    vpc_cidr: pulumi.Output[str]
    private_subnet_ids: pulumi.Output[list[str]]
    public_subnet_ids: pulumi.Output[list[str]]

    def __init__(
        self, name: str, args: NetworkArgs, opts: pulumi.ResourceOptions | None = None
    ) -> None:
        super().__init__("gpu-inference:network:Network", name, None, opts)
        cfg = args.config
        if cfg.existing is not None:
            existing = cfg.existing
            self.vpc_id = pulumi.Output.from_input(existing.vpc_id)
            self.vpc_cidr = aws.ec2.get_vpc_output(
                id=existing.vpc_id, opts=pulumi.InvokeOptions(parent=self)
            ).cidr_block
            self.private_subnet_ids = pulumi.Output.from_input(list(existing.private_subnet_ids))
            self.public_subnet_ids = pulumi.Output.from_input(list(existing.public_subnet_ids))
            warning = existing_s3_endpoint_warning(existing, args.region)
            if warning is not None:
                pulumi.log.warn(warning, resource=self)
        else:
            self._build(name, cfg, args.cluster_name, args.region)
        self.register_outputs(
            {
                "vpcId": self.vpc_id,
                "privateSubnetIds": self.private_subnet_ids,
                "publicSubnetIds": self.public_subnet_ids,
            }
        )

    def _build(self, name: str, cfg: NetworkConfig, cluster_name: str, region: str) -> None:
        child = pulumi.ResourceOptions(parent=self)
        vpc = aws.ec2.Vpc(
            f"{name}-vpc",
            cidr_block=cfg.vpc_cidr,
            enable_dns_hostnames=True,
            enable_dns_support=True,
            tags={"Name": f"{cluster_name}-vpc"},
            opts=child,
        )
        # The default security group admits all traffic between its members; strip it so nothing can
        # use it.
        aws.ec2.DefaultSecurityGroup(
            f"{name}-default-sg",
            vpc_id=vpc.id,
            ingress=[],
            egress=[],
            tags={"Name": f"{cluster_name}-default-unused"},
            opts=child,
        )
        igw = aws.ec2.InternetGateway(
            f"{name}-igw", vpc_id=vpc.id, tags={"Name": f"{cluster_name}-igw"}, opts=child
        )
        public_rt = aws.ec2.RouteTable(
            f"{name}-public-rt", vpc_id=vpc.id, tags={"Name": f"{cluster_name}-public"}, opts=child
        )
        public_route = aws.ec2.Route(
            f"{name}-public-default-route",
            route_table_id=public_rt.id,
            destination_cidr_block="0.0.0.0/0",
            gateway_id=igw.id,
            opts=child,
        )
        public, private, nats, private_tables = [], [], [], []
        # The private subnets' path to the AWS APIs: their routes (to a NAT), associations and the
        # S3 gateway endpoint.
        egress: list[aws.ec2.Route | aws.ec2.RouteTableAssociation | aws.ec2.VpcEndpoint] = []
        for i, zone in enumerate(cfg.availability_zones):
            pub, pub_rta = self._subnet(
                name, vpc, zone, cfg.public_subnet_cidrs[i], "public", cluster_name, public_rt
            )
            public.append(pub)
            if cfg.nat_per_az or i == 0:
                eip = aws.ec2.Eip(
                    f"{name}-nat-{zone}-eip",
                    domain="vpc",
                    tags={"Name": f"{cluster_name}-nat-{zone}"},
                    opts=child,
                )
                nats.append(
                    aws.ec2.NatGateway(
                        f"{name}-nat-{zone}",
                        allocation_id=eip.id,
                        subnet_id=pub.id,
                        tags={"Name": f"{cluster_name}-nat-{zone}"},
                        # A NAT gateway forwards through its subnet's route to the gateway.
                        opts=pulumi.ResourceOptions(
                            parent=self, depends_on=[igw, public_route, pub_rta]
                        ),
                    )
                )
        for i, zone in enumerate(cfg.availability_zones):
            rt = aws.ec2.RouteTable(
                f"{name}-private-{zone}-rt",
                vpc_id=vpc.id,
                tags={"Name": f"{cluster_name}-private-{zone}"},
                opts=child,
            )
            route = aws.ec2.Route(
                f"{name}-private-{zone}-default-route",
                route_table_id=rt.id,
                destination_cidr_block="0.0.0.0/0",
                nat_gateway_id=nats[i if cfg.nat_per_az else 0].id,
                opts=child,
            )
            subnet, rta = self._subnet(
                name, vpc, zone, cfg.private_subnet_cidrs[i], "private", cluster_name, rt
            )
            private.append(subnet)
            private_tables.append(rt)
            egress += [route, rta]
        egress.append(self._s3_gateway(name, vpc, private_tables, cluster_name, region))
        self.vpc_id = vpc.id
        self.vpc_cidr = vpc.cidr_block
        # The subnet ids carry the egress path as dependencies, so everything placed in them (the
        # cluster, nodes, and all that runs there) is created after it and destroyed before it.
        # Without this the routes and NAT gateways, which nothing else references, go first in
        # `pulumi destroy`: the LB controller and the EBS CSI driver then cannot reach the ELB and
        # EC2 APIs to delete the NLB and the volumes, and those are left behind.
        ids = [s.id for s in private]
        self.private_subnet_ids = pulumi.Output.all(*ids, *[r.id for r in egress]).apply(
            lambda values: list(values[: len(ids)])
        )
        self.public_subnet_ids = pulumi.Output.all(*[s.id for s in public])

    def _s3_gateway(
        self,
        name: str,
        vpc: aws.ec2.Vpc,
        route_tables: list[aws.ec2.RouteTable],
        cluster_name: str,
        region: str,
    ) -> aws.ec2.VpcEndpoint:
        """S3 in the stack's region reached through a gateway endpoint, not the NAT gateways.

        ECR keeps image layers in S3: a pull asks ECR for the manifest, then downloads every layer
        from S3 (Amazon ECR user guide, "Amazon ECR interface VPC endpoints (AWS PrivateLink)",
        "Create the Amazon S3 gateway endpoint"). Through NAT each GPU node's cold pull of the
        ~5.6 GB server image is billed per GB processed; a gateway endpoint has no hourly or
        per-GB charge, and its route (the S3 prefix list) is more specific than the default route
        to the NAT, so every private subnet uses it without other changes.

        No endpoint policy (the default allows all): the endpoint carries all traffic from these
        subnets to S3 buckets of this region, not only ECR's layer bucket
        (`arn:aws:s3:::prod-<region>-starport-layer-bucket/*`, the minimum the ECR guide names).
        registry.k8s.io, where the cluster-autoscaler and prometheus-adapter images come from,
        sends AWS clients to per-region S3 buckets for layers (`prod-registry-k8s-io-<region>`,
        kubernetes/registry.k8s.io cmd/archeio/app/buckets.go), and Amazon Linux 2023 package
        repositories are S3 buckets too. A request the policy denies does not fall back to the
        NAT route; it fails. A policy naming only ECR's bucket would break those pulls, and
        restrict little: the NAT path still reaches every bucket outside the region."""
        return aws.ec2.VpcEndpoint(
            f"{name}-s3",
            vpc_id=vpc.id,
            service_name=s3_service_name(region),
            vpc_endpoint_type="Gateway",
            route_table_ids=[rt.id for rt in route_tables],
            tags={"Name": f"{cluster_name}-s3"},
            opts=pulumi.ResourceOptions(parent=self),
        )

    def _subnet(
        self,
        name: str,
        vpc: aws.ec2.Vpc,
        zone: str,
        cidr: str,
        tier: str,
        cluster_name: str,
        route_table: aws.ec2.RouteTable,
    ) -> tuple[aws.ec2.Subnet, aws.ec2.RouteTableAssociation]:
        """A subnet with the tag the AWS Load Balancer Controller uses to pick it for its tier."""
        child = pulumi.ResourceOptions(parent=self)
        subnet = aws.ec2.Subnet(
            f"{name}-{tier}-{zone}",
            vpc_id=vpc.id,
            availability_zone=zone,
            cidr_block=cidr,
            map_public_ip_on_launch=False,
            tags={
                "Name": f"{cluster_name}-{tier}-{zone}",
                ROLE_TAGS[tier]: "1",
                f"kubernetes.io/cluster/{cluster_name}": "shared",
            },
            opts=child,
        )
        association = aws.ec2.RouteTableAssociation(
            f"{name}-{tier}-{zone}-rta",
            subnet_id=subnet.id,
            route_table_id=route_table.id,
            opts=child,
        )
        return subnet, association


def existing_s3_endpoint_warning(existing: ExistingNetwork, region: str) -> str | None:
    """A warning when an existing VPC has no S3 gateway endpoint (None when it has one).

    The program adds no endpoint to a VPC it does not own: the routes of that VPC's route tables
    are its owners' (a route table cannot hold two endpoint routes to the same service: Amazon VPC,
    "Gateway endpoints", considerations), and `pulumi destroy` of this stack must not change a
    shared VPC's routing.
    It only reads what is there (`ec2:DescribeVpcEndpoints`) and says what the missing endpoint
    costs. A failed lookup is reported, never fatal. The provider's data source fails with "no
    matching EC2 VPC Endpoint found" when none matches (terraform-provider-aws
    `vpc_endpoint_data_source.go` through `tfresource.SingularDataSourceFindError`), and with
    "multiple ... matched" when several do."""
    try:
        aws.ec2.get_vpc_endpoint(
            vpc_id=existing.vpc_id,
            service_name=s3_service_name(region),
            vpc_endpoint_type="Gateway",
        )
    except Exception as error:
        reason = str(error).lower()
        if "multiple" in reason and "matched" in reason:
            return None  # More than one: the VPC routes S3 through gateway endpoints already.
        if "no matching" not in reason:
            return (
                f"could not read the S3 gateway endpoints of existingVpcId {existing.vpc_id}: "
                f"{error} (grant ec2:DescribeVpcEndpoints to see this checked)"
            )
        return (
            f"existingVpcId {existing.vpc_id} has no S3 gateway endpoint: every image layer a GPU "
            f"node pulls from ECR (stored in S3) goes through its NAT gateways, billed per GB "
            f"processed. Add a gateway endpoint for {s3_service_name(region)} on the route tables "
            f'of existingPrivateSubnetIds (README, "Image pulls off the NAT path").'
        )
    # One exists; which of the VPC's route tables it is on is its owners' to decide.
    return None
