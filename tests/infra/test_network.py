"""The VPC component: subnets per AZ with computed CIDRs, NAT per the stack, EKS subnet tags."""

from __future__ import annotations

import pytest

from infra import config
from infra.network import Network, NetworkArgs, existing_s3_endpoint_warning
from rehearsal.mockengine import (
    Inventory,
    MockAccount,
    load_stack_config,
    run_function,
    stack_config,
)

SUBNET = "aws:ec2/subnet:Subnet"
NAT = "aws:ec2/natGateway:NatGateway"
ROUTE = "aws:ec2/route:Route"
ASSOCIATION = "aws:ec2/routeTableAssociation:RouteTableAssociation"
ENDPOINT = "aws:ec2/vpcEndpoint:VpcEndpoint"
VPC_ID = "vpc-0123456789abcdef0"
EXISTING = {
    "existingVpcId": VPC_ID,
    "existingPrivateSubnetIds": ["subnet-0123456789abcdef0", "subnet-0123456789abcdef1"],
}


def subnets(inventory: Inventory, kind: str) -> list[dict]:
    return [r.inputs for r in inventory.of_type(SUBNET) if f"-{kind}-" in r.name]


def test_one_private_and_one_public_subnet_per_az_with_the_computed_cidrs(
    inventory: Inventory, stack: str
) -> None:
    net = load_stack_config(stack).network
    private, public = subnets(inventory, "private"), subnets(inventory, "public")
    by_zone = {s["availabilityZone"]: s["cidrBlock"] for s in private}
    assert by_zone == dict(zip(net.availability_zones, net.private_subnet_cidrs, strict=True))
    by_zone = {s["availabilityZone"]: s["cidrBlock"] for s in public}
    assert by_zone == dict(zip(net.availability_zones, net.public_subnet_cidrs, strict=True))


def test_subnets_carry_the_load_balancer_role_tags(inventory: Inventory, stack: str) -> None:
    cluster_tag = f"kubernetes.io/cluster/{load_stack_config(stack).cluster.name}"
    for s in subnets(inventory, "private"):
        assert s["tags"]["kubernetes.io/role/internal-elb"] == "1"
        assert "kubernetes.io/role/elb" not in s["tags"]
        assert s["tags"][cluster_tag] == "shared"
    for s in subnets(inventory, "public"):
        assert s["tags"]["kubernetes.io/role/elb"] == "1"
        assert s["tags"][cluster_tag] == "shared"


def test_no_instance_gets_a_public_ip(inventory: Inventory) -> None:
    for s in inventory.of_type(SUBNET):
        assert s.inputs.get("mapPublicIpOnLaunch", False) is False, s.name


def test_dev_has_one_nat_gateway_prod_one_per_az(dev: Inventory, prod: Inventory) -> None:
    assert len(dev.of_type(NAT)) == 1
    assert len(prod.of_type(NAT)) == 3
    nat_subnets = {r.inputs["subnetId"] for r in prod.of_type(NAT)}
    public_ids = {r.name for r in prod.of_type(SUBNET) if "-public-" in r.name}
    assert len(nat_subnets) == 3
    assert len(public_ids) == 3


def test_every_private_route_table_defaults_to_a_nat_gateway(inventory: Inventory) -> None:
    routes = [r for r in inventory.of_type(ROUTE) if "-private-" in r.name]
    assert routes
    assert all(r.inputs.get("natGatewayId", "").startswith("nat-") for r in routes)
    public = [r for r in inventory.of_type(ROUTE) if "-public-" in r.name]
    assert [r.inputs["gatewayId"][:4] for r in public] == ["igw-"]


def test_the_default_security_group_is_emptied(inventory: Inventory) -> None:
    group = inventory.one("aws:ec2/defaultSecurityGroup:DefaultSecurityGroup")
    assert group.inputs.get("ingress", []) == []
    assert group.inputs.get("egress", []) == []


def test_an_existing_vpc_creates_nothing() -> None:
    values, _ = stack_config("dev", EXISTING)
    net = config.parse(values, "dev").network
    seen: dict[str, object] = {}

    def program() -> None:
        network = Network("net", NetworkArgs(config=net, cluster_name="c", region="us-west-2"))
        network.private_subnet_ids.apply(lambda ids: seen.setdefault("private", ids))
        network.vpc_cidr.apply(lambda cidr: seen.setdefault("cidr", cidr))

    inventory = run_function(program)
    assert [r.type for r in inventory.resources] == ["gpu-inference:network:Network"]
    assert seen == {
        "private": ["subnet-0123456789abcdef0", "subnet-0123456789abcdef1"],
        "cidr": "10.0.0.0/16",
    }


@pytest.mark.parametrize("resource_type", [SUBNET, NAT, ROUTE, "aws:ec2/vpc:Vpc"])
def test_network_resources_are_children_of_the_component(
    inventory: Inventory, resource_type: str
) -> None:
    component = inventory.one("gpu-inference:network:Network")
    for r in inventory.of_type(resource_type):
        assert r.parent == component.urn, r.name
        assert r.name.startswith(f"{component.name}-"), r.name


def test_s3_goes_through_a_gateway_endpoint_on_every_private_route_table(
    inventory: Inventory, stack: str
) -> None:
    cfg = load_stack_config(stack)
    (endpoint,) = inventory.of_type(ENDPOINT)
    assert endpoint.inputs["serviceName"] == f"com.amazonaws.{cfg.region}.s3"
    assert endpoint.inputs["vpcEndpointType"] == "Gateway"
    # No policy: the default (full access) keeps every same-region S3 pull working.
    assert "policy" not in endpoint.inputs
    private_subnets = {
        s.urn
        for s in inventory.of_type(SUBNET)
        if "kubernetes.io/role/internal-elb" in s.inputs["tags"]
    }
    private_tables = {
        a.inputs["routeTableId"]
        for a in inventory.of_type(ASSOCIATION)
        if set(a.depends_on) & private_subnets
    }
    assert len(private_tables) == (len(cfg.network.availability_zones))
    assert set(endpoint.inputs["routeTableIds"]) == private_tables
    public_tables = {
        a.inputs["routeTableId"] for a in inventory.of_type(ASSOCIATION)
    } - private_tables
    assert public_tables
    assert not public_tables & set(endpoint.inputs["routeTableIds"])


def test_gpu_nodes_start_after_the_s3_endpoint_exists(inventory: Inventory) -> None:
    """The first image pull of the first GPU node already skips the NAT gateways."""
    (endpoint,) = inventory.of_type(ENDPOINT)
    for group in inventory.of_type("aws:eks/nodeGroup:NodeGroup"):
        assert endpoint.urn in inventory.dependencies(group), group.name


@pytest.mark.parametrize(
    ("account", "warning"),
    [
        (MockAccount(), "has no S3 gateway endpoint"),
        (MockAccount(s3_gateway_vpcs=frozenset({VPC_ID})), None),
        (
            MockAccount(denied=frozenset({"ec2:DescribeVpcEndpoints"})),
            "grant ec2:DescribeVpcEndpoints",
        ),
    ],
)
def test_an_existing_vpc_gets_a_warning_without_an_s3_gateway_endpoint(
    account: MockAccount, warning: str | None
) -> None:
    values, _ = stack_config("dev", EXISTING)
    existing = config.parse(values, "dev").network.existing
    assert existing is not None
    found: list[str | None] = []
    inventory = run_function(
        lambda: found.append(existing_s3_endpoint_warning(existing, "us-west-2")), account=account
    )
    assert not inventory.of_type(ENDPOINT)
    (message,) = found
    if warning is None:
        assert message is None
    else:
        assert message is not None
        assert warning in message
        assert existing.vpc_id in message
