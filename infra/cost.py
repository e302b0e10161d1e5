"""What a stack costs per hour, priced from AWS's own price data when the program runs.

Counted: what is billed by the hour whatever the traffic, each line with how many units the stack
runs at its floor and at its ceiling (every node group at `maxSize`). The floor is what runs with no
load: every node group at `minSize`, plus the GPU nodes that the `hpaMinReplicas` inference pods and
the `gpuHeadroom` placeholders (infra/headroom.py) keep up beyond what the `minSize` nodes hold.
With `servingHours` the schedule scales both to zero outside the windows (infra/schedule.py), and
cluster-autoscaler removes those nodes: the idle floor, every group at `minSize`, is a third bound.

- every node group, system included: instances at spot prices (DescribeSpotPriceHistory, per type
  and zone: spot pools are per zone) or on-demand prices (the Price List);
- the EKS control plane: the per-cluster rate, plus the extended-support rate when the stack opts
  into extended support (`kubernetesSupportType: EXTENDED`; in the ceiling always; in the floor
  once the pinned minor is in extended support, which EKS reports: it charges the surcharge only
  then);
- the NAT gateways this stack creates (none with `existingVpcId`), their Elastic IPs and an
  internet-facing NLB's addresses (AWS bills every public IPv4 address by the hour);
- the inference Service's Network Load Balancer (its hourly charge).

A line's unit rate is a range over the group's instance types (and zones, for spot): the floor takes
the cheapest, the ceiling the dearest, so each is a bound whichever types EKS launches. Every bound
comes twice: with spot nodes at today's spot prices, and with spot nodes at on-demand prices, the
most a spot instance is billed here: EKS's CreateNodegroup takes no maximum price and the launch
templates of infra/nodegroups.py set no InstanceMarketOptions, and without a maximum price EC2's
default is the on-demand price (EC2 user guide, "Spot Instances", "How Spot Instances work").

Not counted, because it depends on traffic or data, not on the hour: see NOT_COUNTED.

Lookups are synchronous invokes in `try` (like infra/preflight.py): a role without
`pricing:GetProducts` or `ec2:DescribeSpotPriceHistory`, or a product the Price List does not know,
leaves that line unpriced with a warning and the totals empty; the cost never stops a preview.
"""

from __future__ import annotations

import dataclasses
import json
import math
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any, Final, Literal

import pulumi
import pulumi_aws as aws

from infra.config import PROJECT, NodeGroupConfig, StackConfig
from infra.kubernetes_support import EXTENDED, EksVersion
from infra.preflight import pods_per_node

PRICE_LIST_ENDPOINTS: Final = {
    "aws": ("us-east-1", "eu-central-1", "ap-south-1"),
    "aws-cn": ("cn-northwest-1",),
}
"""Regions with a Price List Query API endpoint, per partition (AWS Billing user guide, "Using the
AWS Price List Query API": api.pricing.us-east-1, .eu-central-1 and .ap-south-1.amazonaws.com;
the China guide's examples call cn-northwest-1). None is documented for aws-us-gov. The pulumi-aws
`aws.pricing.get_product` takes no region argument, so it needs an explicit provider in one of
these regions ("only available in a us-east-1 or ap-south-1 provider", its docstring)."""

CURRENCY: Final = {"aws": "USD", "aws-us-gov": "USD", "aws-cn": "CNY"}

BILLING_CODES: Final = {
    "us-east-1": "USE1", "us-east-2": "USE2", "us-west-1": "USW1", "us-west-2": "USW2",
    "ca-central-1": "CAN1", "sa-east-1": "SAE1", "eu-west-1": "EU", "eu-west-2": "EUW2",
    "eu-west-3": "EUW3", "eu-central-1": "EUC1", "eu-central-2": "EUC2", "eu-north-1": "EUN1",
    "eu-south-1": "EUS1", "eu-south-2": "EUS2", "ap-south-1": "APS3", "ap-south-2": "APS5",
    "ap-northeast-1": "APN1", "ap-northeast-2": "APN2", "ap-northeast-3": "APN3",
    "ap-southeast-1": "APS1", "ap-southeast-2": "APS2", "ap-southeast-3": "APS4",
    "ap-southeast-4": "APS6", "ap-east-1": "APE1", "me-south-1": "MES1", "me-central-1": "MEC1",
    "il-central-1": "ILC1", "af-south-1": "AFS1", "cn-north-1": "CNN1", "cn-northwest-1": "CNW1",
    "us-gov-west-1": "UGW1", "us-gov-east-1": "UGE1",
}  # fmt: skip
"""The prefix of each region's usage types in the Price List and the bill (AWS Global
Infrastructure, "AWS Region billing codes"). EC2 and ELB usage types of us-east-1 carry none
(`NatGateway-Hours`, `LoadBalancerUsage`), while EKS and VPC ones do there too
(`USE1-AmazonEKS-Hours:perCluster`, `USE1-PublicIPv4:InUseAddress`), as bills show them."""

SPOT_PRODUCT: Final = "Linux/UNIX"
"""The spot price history's product description of Linux instances (the EKS AL2023 AMIs)."""

NOT_COUNTED: Final = (
    "data transfer (internet egress, between zones) and NAT gateway per-GB processing",
    "NLB capacity units (per traffic)",
    "EBS volumes (node root volumes, Prometheus and Alertmanager) and ECR image storage",
    "CloudWatch Logs of the control plane, the KMS key (monthly) and Route 53",
    "taxes, Savings Plans, Reserved Instances and other discounts",
)


class PriceError(Exception):
    """A price that could not be read (denied, unknown product, no endpoint)."""


# --- The Price List products a stack is billed for -------------------------------------------


@dataclass(frozen=True)
class Product:
    """A Price List product found by TERM_MATCH filters that select exactly one product (the
    data source fails otherwise: terraform-provider-aws pricing/product_data_source.go)."""

    service_code: str
    filters: tuple[tuple[str, str], ...]


def _ec2_usage(region: str, usage: str) -> str:
    return usage if region == "us-east-1" else f"{BILLING_CODES[region]}-{usage}"


def instance_product(region: str, instance_type: str) -> Product:
    """A Linux instance on shared tenancy, on-demand: the attributes of the pulumi-aws
    `get_product` example (instanceType, operatingSystem, preInstalledSw, licenseModel, tenancy,
    capacitystatus `Used`: not the reserved-capacity variants), with the region as `regionCode`
    (the code every product carries next to `location`, the region's long name) instead of
    `location`."""
    return Product(
        "AmazonEC2",
        (
            ("regionCode", region),
            ("instanceType", instance_type),
            ("operatingSystem", "Linux"),
            ("tenancy", "Shared"),
            ("preInstalledSw", "NA"),
            ("capacitystatus", "Used"),
            ("licenseModel", "No License required"),
        ),
    )


def eks_product(region: str, extended_support: bool) -> Product:
    """The per-cluster hour, or the extended-support surcharge added to it
    (`AmazonEKS-Hours:extendedSupport`, billed next to `AmazonEKS-Hours:perCluster`)."""
    usage = "extendedSupport" if extended_support else "perCluster"
    return Product(
        "AmazonEKS",
        (
            ("regionCode", region),
            ("usagetype", f"{BILLING_CODES[region]}-AmazonEKS-Hours:{usage}"),
        ),
    )


def nat_product(region: str) -> Product:
    """A NAT gateway's hour (its per-GB twin, `NatGateway-Bytes`, is traffic)."""
    return Product(
        "AmazonEC2",
        (
            ("regionCode", region),
            ("productFamily", "NAT Gateway"),
            ("usagetype", _ec2_usage(region, "NatGateway-Hours")),
        ),
    )


def nlb_product(region: str) -> Product:
    """A Network Load Balancer's hour (ALBs share the usage type, hence the family)."""
    return Product(
        "AWSELB",
        (
            ("regionCode", region),
            ("productFamily", "Load Balancer-Network"),
            ("usagetype", _ec2_usage(region, "LoadBalancerUsage")),
        ),
    )


def public_ipv4_product(region: str) -> Product:
    """An in-use public IPv4 address's hour (Amazon VPC pricing, "Public IPv4 address")."""
    return Product(
        "AmazonVPC",
        (
            ("regionCode", region),
            ("usagetype", f"{BILLING_CODES[region]}-PublicIPv4:InUseAddress"),
        ),
    )


def hourly_price(document: str, currency: str) -> float:
    """The on-demand hourly price in a Price List product document (`terms.OnDemand.<sku>.<term>
    .priceDimensions.<rate>.pricePerUnit`); EC2 writes the unit `Hrs`, EKS `Hours`."""
    terms = json.loads(document).get("terms", {}).get("OnDemand", {})
    rates = [
        dimension
        for offers in terms.values()
        for term in offers.values()
        for dimension in term.get("priceDimensions", {}).values()
        if dimension.get("unit") in ("Hrs", "Hours")
    ]
    if len(rates) != 1:
        raise PriceError(f"expected one hourly on-demand price, found {len(rates)}")
    return float(rates[0]["pricePerUnit"][currency])


# --- Looking prices up -----------------------------------------------------------------------


def price_list_region(region: str, partition: str) -> str | None:
    """The Price List endpoint for a stack: its partition's, the nearest one to its region."""
    endpoints = PRICE_LIST_ENDPOINTS.get(partition)
    if not endpoints:
        return None
    nearest = {
        "ap": "ap-south-1",
        "eu": "eu-central-1",
        "me": "eu-central-1",
        "il": "eu-central-1",
        "af": "eu-central-1",
    }.get(region.split("-", 1)[0])
    return nearest if nearest in endpoints else endpoints[0]


class PriceBook:
    """Prices read once each through the data sources; a failed read raises PriceError with the
    reason, every time it is asked for."""

    def __init__(
        self, region: str, partition: str, price_list: aws.Provider | None, endpoint: str | None
    ) -> None:
        self.region = region
        self.currency = CURRENCY[partition]
        self.partition = partition
        self._price_list = price_list
        self._endpoint = endpoint
        self._cache: dict[Any, Any] = {}

    def _memo(self, key: Any, read: Callable[[], Any]) -> Any:
        if key not in self._cache:
            try:
                self._cache[key] = read()
            # A denied call, an unknown product, no endpoint: reported, never fatal.
            except Exception as error:
                self._cache[key] = error if isinstance(error, PriceError) else PriceError(error)
        value = self._cache[key]
        if isinstance(value, PriceError):
            raise value
        return value

    def spot(self, instance_type: str, zone: str) -> float:
        """The current spot price of a type in a zone (ec2:DescribeSpotPriceHistory)."""

        def read() -> float:
            return float(
                aws.ec2.get_spot_price(
                    instance_type=instance_type,
                    availability_zone=zone,
                    filters=[
                        aws.ec2.GetSpotPriceFilterArgs(
                            name="product-description", values=[SPOT_PRODUCT]
                        )
                    ],
                ).spot_price
            )

        value: float = self._memo(("spot", instance_type, zone), read)
        return value

    def product(self, product: Product) -> float:
        """The hourly on-demand price of a Price List product (pricing:GetProducts)."""

        def read() -> float:
            if self._price_list is None:
                raise PriceError(
                    f"the Price List Query API has no documented endpoint in partition "
                    f"{self.partition}"
                )
            result = aws.pricing.get_product(
                service_code=product.service_code,
                filters=[
                    aws.pricing.GetProductFilterArgs(field=f, value=v) for f, v in product.filters
                ],
                opts=pulumi.InvokeOptions(provider=self._price_list),
            )
            return hourly_price(result.result, self.currency)

        value: float = self._memo(product, read)
        return value

    def on_demand(self, instance_type: str) -> float:
        return self.product(instance_product(self.region, instance_type))


# --- What is counted --------------------------------------------------------------------------


@dataclass(frozen=True)
class Rate:
    """What one unit costs per hour: the cheapest and the dearest it can run at."""

    low: float
    high: float


@dataclass(frozen=True)
class Line:
    key: str
    """The config key (or concern) the line comes from, e.g. `gpuNodeGroups[gpu-spot]`."""
    what: str
    floor_count: int
    """At the floor as billed: the warm pods' nodes placed at today's spot prices."""
    ceiling_count: int
    idle_count: int
    """Outside servingHours (the floor's count when the stack has no schedule)."""
    rate: Rate | None
    """As billed: spot nodes at today's spot prices. None: unpriced (see problem)."""
    on_demand_rate: Rate | None
    """Spot nodes at on-demand prices, the most they are billed; the same as rate otherwise."""
    spot: bool = False
    problem: str | None = None
    warm: tuple[int, int] = (0, 0)
    """GPU nodes above minSize that the warm pods keep up at the floor, placed in the cheapest
    group per pod at today's spot prices, and at on-demand prices (the stable bound's)."""

    def floor(self, on_demand: bool) -> int:
        """The floor's count with the warm nodes placed by on-demand or by spot prices."""
        return self.floor_count - self.warm[0] + self.warm[on_demand]

    def described(self, on_demand: bool) -> str:
        nodes = self.warm[on_demand]
        if not nodes:
            return self.what
        return (
            f"{self.what} (minSize {self.floor_count - self.warm[0]} + {nodes} for the "
            "hpaMinReplicas and gpuHeadroom pods)"
        )


def _priced(
    key: str,
    what: str,
    counts: tuple[int, int],
    price: Callable[[], tuple[Rate, Rate]],
    spot: bool = False,
) -> Line:
    """A line whose rates come from `price()` -> (rate, on-demand rate), unpriced on failure.
    Its floor is `counts[0]` in and outside servingHours."""
    floor, ceiling = counts
    try:
        rate, on_demand = price()
    except PriceError as error:
        return Line(key, what, floor, ceiling, floor, None, None, spot, str(error))
    return Line(key, what, floor, ceiling, floor, rate, on_demand, spot)


def node_group_line(
    key: str, group: NodeGroupConfig, zones: tuple[str, ...], book: PriceBook
) -> Line:
    kind = "spot" if group.is_spot else "on-demand"
    what = f"{kind} {', '.join(group.instance_types)}"

    def price() -> tuple[Rate, Rate]:
        on_demand = [book.on_demand(t) for t in group.instance_types]
        od_rate = Rate(min(on_demand), max(on_demand))
        if not group.is_spot:
            return od_rate, od_rate
        spot = [book.spot(t, z) for t in group.instance_types for z in zones]
        return Rate(min(spot), max(spot)), od_rate

    return _priced(key, what, (group.min_size, group.max_size), price, group.is_spot)


def warm_pods(cfg: StackConfig) -> int:
    """GPU pods that run with no load: the HPA's minimum and the warm-GPU placeholders."""
    return cfg.inference.hpa_min_replicas + cfg.capacity.gpu_headroom


def warm_nodes(
    cfg: StackConfig, group_lines: dict[str, tuple[NodeGroupConfig, Line]], on_demand: bool
) -> dict[str, int]:
    """GPU nodes above `minSize`, by line key, that the warm pods keep up at the floor.

    The `minSize` nodes hold what they can; cluster-autoscaler adds nodes for the rest, in a spot
    group while one has room (the priority expander, infra/autoscaler.py), else in an on-demand
    group. It picks among groups of one priority at random, so the floor, a lower bound, takes the
    cheapest node per pod (at today's spot prices, or at on-demand prices for the bound with spot
    billed on-demand, which then does not move with spot prices; an unpriced group last: the
    totals are empty then anyway), as many nodes as `maxSize` allows, then the next."""
    holds = {key: pods_per_node(cfg, group) for key, (group, _) in group_lines.items()}
    missing = warm_pods(cfg) - sum(g.min_size * holds[k] for k, (g, _) in group_lines.items())

    def order(key: str) -> tuple[bool, float]:
        group, line = group_lines[key]
        rate = line.on_demand_rate if on_demand else line.rate
        per_pod = rate.low / holds[key] if rate is not None else math.inf
        return (not group.is_spot, per_pod)

    added: dict[str, int] = {}
    for key in sorted((k for k in group_lines if holds[k]), key=order):
        if missing <= 0:
            break
        group, _ = group_lines[key]
        nodes = min(math.ceil(missing / holds[key]), group.max_size - group.min_size)
        if nodes:
            added[key] = nodes
            missing -= nodes * holds[key]
    return added


def _with_warm_nodes(
    line: Line, group: NodeGroupConfig, warm: tuple[int, int], scheduled: bool
) -> Line:
    """A GPU group's line with the warm pods' nodes in its floor (placed by spot, and by on-demand
    prices); outside servingHours (when the stack has a schedule) the group is back at minSize."""
    return dataclasses.replace(
        line,
        floor_count=line.floor_count + warm[0],
        idle_count=group.min_size if scheduled else line.floor_count + warm[0],
        warm=warm,
    )


def control_plane_line(cfg: StackConfig, book: PriceBook, pinned: EksVersion | None) -> Line:
    """The cluster hour, with the extended-support surcharge when kubernetesSupportType is EXTENDED
    (the cluster's upgradePolicy: EKS bills it once the minor leaves standard support, which the
    pinned minor's row of EKS's calendar says, as infra/kubernetes_support.py read it)."""
    version = cfg.cluster.kubernetes_version
    extended_support = cfg.cluster.support_type == "EXTENDED"
    what = (
        f"EKS control plane ({'extended' if extended_support else 'standard'} support, {version})"
    )

    def price() -> tuple[Rate, Rate]:
        cluster = book.product(eks_product(cfg.region, extended_support=False))
        if not extended_support:
            rate = Rate(cluster, cluster)
            return rate, rate
        surcharge = book.product(eks_product(cfg.region, extended_support=True))
        if pinned is None:
            raise PriceError(
                f"EKS's version calendar was unreadable, so whether Kubernetes {version} is "
                "billed the extended-support surcharge is unknown"
            )
        low = cluster + (surcharge if pinned.status == EXTENDED else 0.0)
        rate = Rate(low, cluster + surcharge)
        return rate, rate

    return _priced("controlPlane", what, (1, 1), price)


def _fixed(key: str, what: str, count: int, product: Product, book: PriceBook) -> Line:
    def price() -> tuple[Rate, Rate]:
        unit = book.product(product)
        return Rate(unit, unit), Rate(unit, unit)

    return _priced(key, what, (count, count), price)


def nat_gateway_count(cfg: StackConfig) -> int:
    """The NAT gateways this stack creates (infra/network.py): none in an existing VPC."""
    net = cfg.network
    if net.existing is not None:
        return 0
    return len(net.availability_zones) if net.nat_per_az else 1


def lines(cfg: StackConfig, book: PriceBook, pinned: EksVersion | None) -> Iterator[Line]:
    """Every line the stack is billed for by the hour, in a stable order."""
    zones = cfg.network.availability_zones
    groups = cfg.node_groups
    yield node_group_line(f"systemNodeGroup[{groups.system.name}]", groups.system, zones, book)
    gpu_lines = {
        key: (group, node_group_line(key, group, zones, book))
        for key, group in ((f"gpuNodeGroups[{g.name}]", g) for g in groups.gpu)
    }
    at_spot = warm_nodes(cfg, gpu_lines, on_demand=False)
    at_on_demand = warm_nodes(cfg, gpu_lines, on_demand=True)
    scheduled = cfg.capacity.serving_hours is not None
    for key, (group, line) in gpu_lines.items():
        warm = (at_spot.get(key, 0), at_on_demand.get(key, 0))
        yield _with_warm_nodes(line, group, warm, scheduled) if any(warm) else line
    yield control_plane_line(cfg, book, pinned)
    nats = nat_gateway_count(cfg)
    if nats:
        mode = "one per zone" if cfg.network.nat_per_az else "single"
        yield _fixed("natGateways", f"NAT gateways ({mode})", nats, nat_product(cfg.region), book)
    # An internet-facing NLB has a public address in each zone it serves (one subnet per zone).
    nlb_addresses = len(zones) if cfg.inference.internet_facing else 0
    addresses = nats + nlb_addresses
    if addresses:
        holders = [
            h for h, n in (("NAT gateways", nats), ("internet-facing NLB", nlb_addresses)) if n
        ]
        yield _fixed(
            "publicIpv4",
            f"public IPv4 addresses ({', '.join(holders)})",
            addresses,
            public_ipv4_product(cfg.region),
            book,
        )
    scheme = "internet-facing" if cfg.inference.internet_facing else "internal"
    yield _fixed(
        "loadBalancer", f"Network Load Balancer ({scheme})", 1, nlb_product(cfg.region), book
    )


# --- Totals and what the preview shows ----------------------------------------------------------


@dataclass(frozen=True)
class Bound:
    with_spot: float | None
    """Spot nodes at today's spot prices. None when a line is unpriced."""
    all_on_demand: float | None
    """Spot nodes at on-demand prices."""


Bounds = Literal["floor", "ceiling", "idle"]


def _total(items: tuple[Line, ...], bound: Bounds, on_demand: bool) -> float | None:
    total = 0.0
    for line in items:
        rate = line.on_demand_rate if on_demand else line.rate
        if rate is None:
            return None
        if bound == "ceiling":
            total += line.ceiling_count * rate.high
        else:
            total += (line.idle_count if bound == "idle" else line.floor(on_demand)) * rate.low
    return round(total, 4)


def bound(items: tuple[Line, ...], which: Bounds) -> Bound:
    """The hourly cost at the floor, the ceiling or the idle floor (outside servingHours)."""
    return Bound(_total(items, which, False), _total(items, which, True))


def bounds(items: tuple[Line, ...]) -> tuple[Bound, Bound]:
    """(floor, ceiling) of the hourly cost."""
    return bound(items, "floor"), bound(items, "ceiling")


def _range(low: float, high: float) -> str:
    return f"{low:.4f}" if low == high else f"{low:.4f}-{high:.4f}"


def _amount(value: float | None) -> str:
    return "unpriced" if value is None else f"{value:.4f}"


def report(items: tuple[Line, ...], currency: str, sources: str, scheduled: bool) -> str:
    """The preview's message: the bounds (the idle floor too with a schedule), the stable ones (the
    stack outputs) first, then every line as billed at today's spot prices, then what is left
    out. Spot prices live here rather than in the outputs, which would change with them."""
    floor, ceiling = bounds(items)
    head = (
        f"Hourly cost, {currency} ({sources}): floor {_amount(floor.all_on_demand)}, ceiling "
        f"{_amount(ceiling.all_on_demand)} with spot nodes billed on-demand (the stack "
        f"outputs); at today's spot prices floor {_amount(floor.with_spot)}, ceiling "
        f"{_amount(ceiling.with_spot)}"
    )
    if scheduled:
        idle = bound(items, "idle")
        head += (
            f"; outside servingHours floor {_amount(idle.all_on_demand)} "
            f"({_amount(idle.with_spot)} at spot prices)"
        )
    out = [head]
    for line in items:
        low, high = line.floor_count, line.ceiling_count
        counts = f"{low}" if low == high else f"{low}-{high}"
        what = line.described(on_demand=False)
        if line.rate is None or line.on_demand_rate is None:
            out.append(f"  {line.key}: {what}: {counts} x unpriced ({line.problem})")
            continue
        unit = _range(line.rate.low, line.rate.high)
        if line.spot:
            unit += f" (on-demand {_range(line.on_demand_rate.low, line.on_demand_rate.high)})"
        cost = _range(line.floor_count * line.rate.low, line.ceiling_count * line.rate.high)
        asleep = line.idle_count != line.floor_count
        outside = f"; outside servingHours {line.idle_count}" * asleep
        out.append(f"  {line.key}: {what}: {counts} x {unit} = {cost}{outside}")
    out.append(f"  not counted: {'; '.join(NOT_COUNTED)}")
    return "\n".join(out)


def _rate(rate: Rate | None) -> list[float] | None:
    return None if rate is None else [rate.low, rate.high]


def summary(items: tuple[Line, ...], currency: str, scheduled: bool) -> dict[str, Any]:
    """The `hourlyCost` stack output: what a pull request's preview should diff. Spot nodes count
    at the on-demand price (the most they are billed), so it moves with the config and AWS's list
    prices, never with spot prices; with a schedule, `idleFloor` and each line's `idleCount` say
    what runs outside servingHours."""
    floor, ceiling = bounds(items)
    out: dict[str, Any] = {
        "currency": currency,
        "floor": floor.all_on_demand,
        "ceiling": ceiling.all_on_demand,
    }
    if scheduled:
        out["idleFloor"] = bound(items, "idle").all_on_demand
    lines: dict[str, Any] = {}
    for line in items:
        entry: dict[str, Any] = {
            "what": line.described(on_demand=True),
            "count": [line.floor(on_demand=True), line.ceiling_count],
        }
        if scheduled:
            entry["idleCount"] = line.idle_count
        entry["onDemandRate"] = _rate(line.on_demand_rate)
        lines[line.key] = entry
    out["lines"] = lines
    out["notCounted"] = list(NOT_COUNTED)
    unpriced = {line.key: line.problem for line in items if line.problem is not None}
    if unpriced:
        out["unpriced"] = unpriced
    return out


def at_spot_prices(items: tuple[Line, ...], currency: str, scheduled: bool) -> dict[str, Any]:
    """The `hourlyCostAtSpotPrices` stack output: the bounds as billed today, and the spot lines'
    counts and rates. Volatile by nature: it changes between previews of an unchanged stack."""
    floor, ceiling = bounds(items)
    out: dict[str, Any] = {
        "currency": currency,
        "floor": floor.with_spot,
        "ceiling": ceiling.with_spot,
    }
    if scheduled:
        out["idleFloor"] = bound(items, "idle").with_spot
    out["spotLines"] = {
        line.key: {"count": [line.floor_count, line.ceiling_count], "rate": _rate(line.rate)}
        for line in items
        if line.spot
    }
    return out


# --- The component ----------------------------------------------------------------------------


@dataclass(frozen=True)
class CostEstimateArgs:
    config: StackConfig
    eks_version: EksVersion | None
    """The pinned Kubernetes minor's row of EKS's calendar (infra/kubernetes_support.py read it;
    None: unreadable): whether EKS bills the extended-support surcharge now."""


class CostEstimate(pulumi.ComponentResource):
    """Prices the stack when the program runs and shows it in the preview.

    Its only child is the AWS provider the Price List needs (an explicit provider in an endpoint
    region; it creates nothing in AWS). Spot prices come from the stack's region (the default
    provider)."""

    summary: dict[str, Any]
    """Stable: spot nodes at on-demand prices (the `hourlyCost` output)."""
    spot_summary: dict[str, Any]
    """Volatile: at today's spot prices (the `hourlyCostAtSpotPrices` output)."""
    floor: Bound
    ceiling: Bound
    idle_floor: Bound | None
    """Outside servingHours; None without a schedule (the floor holds around the clock)."""
    message: str
    """What the preview shows (README "Cost at preview" is rehearsal/costdoc.py's render of it)."""

    def __init__(
        self, name: str, args: CostEstimateArgs, opts: pulumi.ResourceOptions | None = None
    ) -> None:
        super().__init__("gpu-inference:cost:CostEstimate", name, None, opts)
        cfg = args.config
        endpoint = price_list_region(cfg.region, cfg.partition)
        provider = (
            aws.Provider(
                f"{name}-price-list", region=endpoint, opts=pulumi.ResourceOptions(parent=self)
            )
            if endpoint is not None
            else None
        )
        book = PriceBook(cfg.region, cfg.partition, provider, endpoint)
        items = tuple(lines(cfg, book, args.eks_version))
        scheduled = cfg.capacity.serving_hours is not None
        self.floor, self.ceiling = bounds(items)
        self.idle_floor = bound(items, "idle") if scheduled else None
        self.summary = summary(items, book.currency, scheduled)
        self.spot_summary = at_spot_prices(items, book.currency, scheduled)
        sources = f"Price List via {endpoint or 'no endpoint'}, spot prices of {cfg.region}"
        self.message = report(items, book.currency, sources, scheduled)
        pulumi.log.info(self.message, resource=self)
        for line in items:
            if line.problem is not None:
                pulumi.log.warn(
                    f"{PROJECT} cost: {line.key} is unpriced, so the hourly totals are empty: "
                    f"{line.problem} (the preview needs pricing:GetProducts, "
                    f"ec2:DescribeSpotPriceHistory and eks:DescribeClusterVersions)",
                    resource=self,
                )
        self.register_outputs({"hourlyCost": self.summary})
