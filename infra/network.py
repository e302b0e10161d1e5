"""The VPC: a public and a private subnet per AZ, NAT, routes and the subnet tags EKS load balancers
need.

Nodes and pods live in the private subnets (the VPC CNI gives pods VPC addresses, hence large
private subnets). Public subnets hold only the NAT gateways and internet-facing load balancers, and
never assign public IPs to instances. With `existingVpcId` nothing is created and the given subnets
are used."""

from __future__ import annotations

from dataclasses import dataclass

import pulumi
import pulumi_aws as aws

from infra.config import NetworkConfig

ROLE_TAGS = {"public": "kubernetes.io/role/elb", "private": "kubernetes.io/role/internal-elb"}
"""Internet-facing load balancers go to subnets tagged elb, internal ones to internal-elb."""


@dataclass(frozen=True)
class NetworkArgs:
    config: NetworkConfig
    cluster_name: str


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
        else:
            self._build(name, cfg, args.cluster_name)
        self.register_outputs(
            {
                "vpcId": self.vpc_id,
                "privateSubnetIds": self.private_subnet_ids,
                "publicSubnetIds": self.public_subnet_ids,
            }
        )

    def _build(self, name: str, cfg: NetworkConfig, cluster_name: str) -> None:
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
        public, private, nats = [], [], []
        # The private subnets' path to the AWS APIs: their routes (to a NAT) and associations.
        egress: list[aws.ec2.Route | aws.ec2.RouteTableAssociation] = []
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
            egress += [route, rta]
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
