"""The hourly cost at preview: recomputed here from the price fixture and the stack config."""

from __future__ import annotations

import json
import logging
from collections.abc import Mapping
from types import MappingProxyType
from typing import Any

import pytest

from infra import config, cost
from infra.config import StackConfig
from infra.preflight import pods_per_node
from rehearsal import pricelist
from rehearsal.mockengine import (
    PRICE_LIST_ENDPOINTS,
    Inventory,
    MockAccount,
    calendar_with,
    load_stack_config,
    run_stack,
)

Expected = dict[str, tuple[tuple[int, int, int, int], tuple[float, float], tuple[float, float]]]
"""Line key -> ((floor count at spot placement, floor count at on-demand placement, ceiling count,
count outside servingHours), (rate low, high), (on-demand rate low, high))."""


def _spread(values: list[float]) -> tuple[float, float]:
    return (min(values), max(values))


def _spot_rate(
    group: config.NodeGroupConfig,
    zones: tuple[str, ...],
    factors: Mapping[str, float] = MappingProxyType({}),
) -> tuple[float, float]:
    return _spread(
        [
            round(round(pricelist.SPOT[t] * pricelist.ZONE_FACTOR[z[-1]], 4) * factors.get(t, 1), 4)
            for t in group.instance_types
            for z in zones
        ]
    )


def _on_demand_rate(group: config.NodeGroupConfig) -> tuple[float, float]:
    return _spread([pricelist.ON_DEMAND[t] for t in group.instance_types])


def warm_nodes(
    cfg: StackConfig, on_demand: bool, factors: Mapping[str, float] = MappingProxyType({})
) -> dict[str, int]:
    """GPU nodes above minSize kept up by the hpaMinReplicas pods and the gpuHeadroom
    placeholders, for the configs tested here: the minSize nodes hold what they can, the spot group
    whose node is cheapest per pod (at the fixture's spot prices times `factors`, or at on-demand
    prices for the bound with spot billed on-demand) has room for the rest."""
    gpu = cfg.node_groups.gpu
    holds = {g.name: pods_per_node(cfg, g) for g in gpu}
    missing = cfg.inference.hpa_min_replicas + cfg.capacity.gpu_headroom
    missing -= sum(g.min_size * holds[g.name] for g in gpu)
    if missing <= 0:
        return {}
    zones = cfg.network.availability_zones

    def per_pod(g: config.NodeGroupConfig) -> float:
        rate = _on_demand_rate(g) if on_demand else _spot_rate(g, zones, factors)
        return rate[0] / holds[g.name]

    cheapest = min((g for g in gpu if g.is_spot), key=per_pod)
    nodes = -(-missing // holds[cheapest.name])
    assert nodes <= cheapest.max_size - cheapest.min_size, "a config this helper does not cover"
    return {f"gpuNodeGroups[{cheapest.name}]": nodes}


def expected(
    cfg: StackConfig,
    minor_in_extended_support: bool = False,
    spot_factors: Mapping[str, float] = MappingProxyType({}),
) -> Expected:
    """What the stack is billed for by the hour, written out from the fixture's tables (whose EKS
    calendar has the pinned minor in standard support: tests/infra/test_kubernetes_support.py)."""
    zones = cfg.network.availability_zones
    lines: Expected = {}
    groups = [(f"systemNodeGroup[{cfg.node_groups.system.name}]", cfg.node_groups.system)]
    groups += [(f"gpuNodeGroups[{g.name}]", g) for g in cfg.node_groups.gpu]
    warm = warm_nodes(cfg, on_demand=False, factors=spot_factors)
    warm_od = warm_nodes(cfg, on_demand=True)
    scheduled = cfg.capacity.serving_hours is not None
    for key, group in groups:
        on_demand = _on_demand_rate(group)
        is_spot = group.capacity_type == "SPOT"
        rate = _spot_rate(group, zones, spot_factors) if is_spot else on_demand
        floor = group.min_size + warm.get(key, 0)
        floor_od = group.min_size + warm_od.get(key, 0)
        idle = group.min_size if scheduled else floor
        lines[key] = ((floor, floor_od, group.max_size, idle), rate, on_demand)

    def fixed(key: str, count: int, price: float) -> None:
        lines[key] = ((count, count, count, count), (price, price), (price, price))

    fixed("controlPlane", 1, pricelist.EKS_CLUSTER)
    if cfg.cluster.support_type == "EXTENDED":
        # The surcharge in the ceiling always, in the floor once EKS bills it (the minor is past
        # standard support).
        extended = pricelist.EKS_CLUSTER + pricelist.EKS_EXTENDED_SUPPORT
        low = extended if minor_in_extended_support else pricelist.EKS_CLUSTER
        lines["controlPlane"] = ((1, 1, 1, 1), (low, extended), (low, extended))
    nats = 0 if cfg.network.existing else (len(zones) if cfg.network.nat_per_az else 1)
    if nats:
        fixed("natGateways", nats, pricelist.NAT_GATEWAY)
    addresses = nats + (len(zones) if cfg.inference.internet_facing else 0)
    if addresses:
        fixed("publicIpv4", addresses, pricelist.PUBLIC_IPV4)
    fixed("loadBalancer", 1, pricelist.NLB)
    return lines


def totals(lines: Expected) -> dict[str, dict[str, float]]:
    """floor, ceiling and idleFloor (the floor outside servingHours), at spot prices
    (`withSpot`) and with spot billed on-demand (`allOnDemand`)."""

    def total(bound: str, on_demand: bool) -> float:
        count = {"floor": 1 if on_demand else 0, "ceiling": 2, "idleFloor": 3}[bound]
        high = bound == "ceiling"  # the ceiling takes the dearest rate, the floors the cheapest
        return round(
            sum(
                counts[count] * (od if on_demand else rate)[high]
                for counts, rate, od in lines.values()
            ),
            4,
        )

    return {
        bound: {"withSpot": total(bound, False), "allOnDemand": total(bound, True)}
        for bound in ("floor", "ceiling", "idleFloor")
    }


def flat(lines: Expected) -> dict[str, tuple[float, ...]]:
    """Each line as one flat tuple, for pytest.approx."""
    return {key: (*counts, *rate, *od) for key, (counts, rate, od) in lines.items()}


def reported(inventory: Inventory) -> Expected:
    """The lines of the hourlyCost output (stable) with the spot lines of hourlyCostAtSpotPrices;
    without servingHours the floor holds outside it."""
    lines = inventory.outputs["hourlyCost"]["lines"]
    spot = inventory.outputs["hourlyCostAtSpotPrices"]["spotLines"]
    out: Expected = {}
    for key, line in lines.items():
        floor_od, ceiling = line["count"]
        at_spot = spot.get(key, {"count": line["count"], "rate": line["onDemandRate"]})
        floor = at_spot["count"][0]
        out[key] = (
            (floor, floor_od, ceiling, line.get("idleCount", floor)),
            tuple(at_spot["rate"]),
            tuple(line["onDemandRate"]),
        )
    return out


def bounds_of(inventory: Inventory) -> dict[str, dict[str, float]]:
    """Each bound of the two cost outputs, as totals() gives them."""
    stable, spot = inventory.outputs["hourlyCost"], inventory.outputs["hourlyCostAtSpotPrices"]
    return {
        bound: {"withSpot": spot[bound], "allOnDemand": stable[bound]}
        for bound in ("floor", "ceiling", "idleFloor")
        if bound in stable
    }


def test_every_billed_component_is_counted_at_the_fixture_prices(
    inventory: Inventory, stack: str
) -> None:
    want = expected(load_stack_config(stack))
    got = reported(inventory)
    # A component left out (or one counted twice) fails here before any number is compared.
    assert sorted(got) == sorted(want)
    for key, line in flat(want).items():
        assert flat(got)[key] == pytest.approx(line), key
    outputs = inventory.outputs
    bounds = ("floor", "ceiling", "idleFloor") if outputs["servingHours"] else ("floor", "ceiling")
    assert bounds_of(inventory) == {k: totals(want)[k] for k in bounds}
    assert outputs["hourlyCostFloor"] == totals(want)["floor"]["allOnDemand"]
    assert outputs["hourlyCostCeiling"] == totals(want)["ceiling"]["allOnDemand"]
    assert outputs["hourlyCost"]["currency"] == "USD"
    assert "unpriced" not in outputs["hourlyCost"]


def test_dev_pays_for_its_replica_in_serving_hours_and_the_platform_outside(
    dev: Inventory,
) -> None:
    # One t3a.large system node (the cheaper of its two types), the control plane, one NAT gateway
    # and its address, the internal NLB.
    platform = 0.0752 + 0.10 + 0.045 + 0.005 + 0.0225
    gpu = dev.outputs["hourlyCost"]["lines"]["gpuNodeGroups[gpu-spot]"]
    spot = dev.outputs["hourlyCostAtSpotPrices"]
    # In serving hours the one replica (hpaMinReplicas) keeps a spot GPU node up; outside them
    # servingHours scales it to zero and the group goes back to minSize 0.
    assert (gpu["count"], gpu["idleCount"]) == ([1, 2], 0)
    assert dev.outputs["hourlyCostFloor"] == pytest.approx(platform + gpu["onDemandRate"][0])
    assert spot["floor"] == pytest.approx(
        platform + spot["spotLines"]["gpuNodeGroups[gpu-spot]"]["rate"][0]
    )
    assert dev.outputs["hourlyCostIdleFloor"] == pytest.approx(platform)
    assert spot["idleFloor"] == dev.outputs["hourlyCostIdleFloor"]  # nothing on spot outside
    # Spot is billed at most the on-demand price: the bound with spot billed on-demand.
    assert gpu["onDemandRate"] == [
        pricelist.ON_DEMAND["g4dn.xlarge"],
        pricelist.ON_DEMAND["g5.xlarge"],
    ]


def test_prod_keeps_its_on_demand_gpu_and_three_nat_gateways_in_the_floor(prod: Inventory) -> None:
    lines = prod.outputs["hourlyCost"]["lines"]
    assert lines["gpuNodeGroups[gpu-ondemand]"]["count"] == [1, 4]
    assert lines["natGateways"]["count"] == [3, 3]
    assert lines["publicIpv4"]["count"] == [3, 3]
    # Two replicas and one placeholder: one on the on-demand minSize node, two on new nodes of
    # the spot group that is cheapest per GPU.
    assert lines["gpuNodeGroups[gpu-spot-xl]"]["count"] == [2, 8]
    assert lines["gpuNodeGroups[gpu-spot-2xl]"]["count"] == [0, 8]
    # prod serves around the clock: no idle floor.
    assert "idleFloor" not in prod.outputs["hourlyCost"]
    assert "hourlyCostIdleFloor" not in prod.outputs


def test_each_headroom_gpu_keeps_one_more_spot_node_in_the_floor(prod: Inventory) -> None:
    more = run_stack("prod", {"gpuHeadroom": 2})
    key = "gpuNodeGroups[gpu-spot-xl]"
    node = prod.outputs["hourlyCost"]["lines"][key]["onDemandRate"][0]
    assert more.outputs["hourlyCostFloor"] == pytest.approx(prod.outputs["hourlyCostFloor"] + node)
    assert more.outputs["hourlyCost"]["lines"][key]["count"] == [3, 8]
    spot_node = prod.outputs["hourlyCostAtSpotPrices"]["spotLines"][key]["rate"][0]
    assert more.outputs["hourlyCostAtSpotPrices"]["floor"] == pytest.approx(
        prod.outputs["hourlyCostAtSpotPrices"]["floor"] + spot_node
    )


def test_outside_serving_hours_only_the_minimum_sizes_run() -> None:
    """prod with a schedule: replicas and placeholders sleep, the on-demand minSize node stays."""
    hours = {
        "timezone": "UTC",
        "windows": [{"days": ["mon-fri"], "start": "08:00", "end": "18:00"}],
    }
    overrides = {"servingHours": hours}
    inventory = run_stack("prod", overrides)
    want = expected(load_stack_config("prod", overrides))
    got = flat(reported(inventory))
    assert got.keys() == flat(want).keys()
    for key, line in flat(want).items():
        assert got[key] == pytest.approx(line), key
    lines = inventory.outputs["hourlyCost"]["lines"]
    assert lines["gpuNodeGroups[gpu-ondemand]"]["idleCount"] == 1
    assert lines["gpuNodeGroups[gpu-spot-xl]"]["idleCount"] == 0
    idle = totals(want)["idleFloor"]
    assert bounds_of(inventory)["idleFloor"] == idle
    assert inventory.outputs["hourlyCostIdleFloor"] == idle["allOnDemand"]


def test_a_bigger_group_shows_as_a_higher_ceiling_in_the_preview() -> None:
    """What a pull request's preview shows: the outputs move with the config."""
    cfg = load_stack_config("dev")
    group = cfg.node_groups.gpu[0]
    raised = {
        "name": group.name,
        "capacityType": group.capacity_type,
        "instanceTypes": list(group.instance_types),
        "minSize": 0,
        "desiredSize": 0,
        "maxSize": group.max_size + 1,
        "diskGiB": group.disk_gib,
    }
    bigger = run_stack("dev", {"gpuNodeGroups": [raised], "hpaMaxReplicas": group.max_size + 1})
    before = expected(cfg)["gpuNodeGroups[gpu-spot]"]
    dearest_on_demand = before[2][1]
    assert bigger.outputs["hourlyCostCeiling"] == pytest.approx(
        totals(expected(cfg))["ceiling"]["allOnDemand"] + dearest_on_demand
    )


def test_an_existing_vpc_is_not_billed_to_the_stack_for_nat() -> None:
    overrides = {
        "existingVpcId": "vpc-0123456789abcdef0",
        "existingPrivateSubnetIds": ["subnet-0123456789abcdef0", "subnet-0123456789abcdef1"],
    }
    inventory = run_stack("dev", overrides)
    lines = inventory.outputs["hourlyCost"]["lines"]
    assert "natGateways" not in lines
    assert "publicIpv4" not in lines
    want = flat(expected(load_stack_config("dev", overrides)))
    assert flat(reported(inventory)).keys() == want.keys()
    for key, line in flat(reported(inventory)).items():
        assert line == pytest.approx(want[key]), key


def test_an_internet_facing_nlb_pays_for_an_address_per_zone() -> None:
    overrides = {"internetFacing": True, "apiKeys": {"secure": "encrypted"}}
    inventory = run_stack("dev", overrides)
    line = inventory.outputs["hourlyCost"]["lines"]["publicIpv4"]
    assert line["count"] == [3, 3]  # the NAT gateway's and one in each of the two zones
    assert "internet-facing NLB" in line["what"]


def test_the_preview_message_gives_floor_and_ceiling(caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.INFO):
        inventory = run_stack("dev")
    messages = [r.getMessage() for r in caplog.records if r.getMessage().startswith("Hourly cost")]
    assert len(messages) == 1, [r.getMessage()[:80] for r in caplog.records]
    message = messages[0]
    floor, ceiling = inventory.outputs["hourlyCostFloor"], inventory.outputs["hourlyCostCeiling"]
    assert f"floor {floor:.4f}, ceiling {ceiling:.4f} with spot nodes billed on-demand" in message
    spot = inventory.outputs["hourlyCostAtSpotPrices"]
    assert f"at today's spot prices floor {spot['floor']:.4f}, ceiling {spot['ceiling']:.4f}" in (
        message
    )
    for key in inventory.outputs["hourlyCost"]["lines"]:
        assert f"\n  {key}: " in message, key
    assert "not counted: data transfer" in message


def test_the_price_list_is_read_through_a_provider_in_an_endpoint_region(
    inventory: Inventory, stack: str
) -> None:
    # dev runs in us-west-2, where the Price List Query API has no endpoint: the mock refuses it
    # there, so dev's prices above prove the lookups went through this provider.
    component = inventory.one("gpu-inference:cost:CostEstimate")
    (provider,) = inventory.children(component)
    assert provider.type == "pulumi:providers:aws"
    assert provider.inputs["region"] in cost.PRICE_LIST_ENDPOINTS["aws"]
    assert provider.inputs["region"] in PRICE_LIST_ENDPOINTS


@pytest.mark.parametrize(
    ("region", "partition", "endpoint"),
    [
        ("us-west-2", "aws", "us-east-1"),
        ("eu-west-1", "aws", "eu-central-1"),
        ("il-central-1", "aws", "eu-central-1"),
        ("ap-northeast-1", "aws", "ap-south-1"),
        ("sa-east-1", "aws", "us-east-1"),
        ("cn-north-1", "aws-cn", "cn-northwest-1"),
        ("us-gov-west-1", "aws-us-gov", None),
    ],
)
def test_the_nearest_price_list_endpoint_of_the_partition(
    region: str, partition: str, endpoint: str | None
) -> None:
    assert cost.price_list_region(region, partition) == endpoint


def test_every_region_the_config_allows_has_a_billing_code() -> None:
    assert set(cost.BILLING_CODES) == set(config.REGIONS)
    for region, code in pricelist.BILLING_CODES.items():
        assert cost.BILLING_CODES[region] == code, region


@pytest.mark.parametrize(
    ("denied", "unpriced"),
    [
        # Without the Price List every line but spot-only ones is unpriced: all of them here.
        ("pricing:GetProducts", None),
        ("ec2:DescribeSpotPriceHistory", {"gpuNodeGroups[gpu-spot]"}),
    ],
)
def test_an_unreadable_price_empties_the_totals_but_never_stops_the_preview(
    denied: str, unpriced: set[str] | None
) -> None:
    inventory = run_stack("dev", account=MockAccount(denied=frozenset({denied})))
    summary: dict[str, Any] = inventory.outputs["hourlyCost"]
    assert inventory.outputs["hourlyCostFloor"] is None
    assert summary["floor"] is None
    assert inventory.outputs["hourlyCostAtSpotPrices"]["floor"] is None
    missing = set(summary["unpriced"])
    assert missing == (unpriced or set(summary["lines"]))
    assert all(denied in reason for reason in summary["unpriced"].values())
    # The program went on: the cluster and the workload are there.
    assert inventory.of_type("aws:eks/cluster:Cluster")


@pytest.mark.parametrize("status", ["STANDARD_SUPPORT", "EXTENDED_SUPPORT"])
def test_extended_support_follows_the_key_and_bills_once_the_minor_is_in_it(status: str) -> None:
    """kubernetesSupportType: EXTENDED prices the surcharge: in the ceiling while the pinned minor
    is in standard support, in the floor too once EKS reports it in extended support."""
    overrides = {"kubernetesSupportType": "EXTENDED"}
    cfg = load_stack_config("dev", overrides)
    account = MockAccount(cluster_versions=calendar_with(cfg.cluster.kubernetes_version, status))
    inventory = run_stack("dev", overrides, account=account)
    want = expected(cfg, minor_in_extended_support=status == "EXTENDED_SUPPORT")
    assert flat(reported(inventory))["controlPlane"] == pytest.approx(flat(want)["controlPlane"])
    line = inventory.outputs["hourlyCost"]["lines"]["controlPlane"]
    assert line["what"] == f"EKS control plane (extended support, {cfg.cluster.kubernetes_version})"


def test_a_product_needs_exactly_one_hourly_price() -> None:
    (product,) = pricelist.matching(
        "us-east-1", "AmazonEC2", dict(cost.nat_product("us-east-1").filters)
    )
    document = json.loads(pricelist.document(product))
    assert cost.hourly_price(json.dumps(document), "USD") == pricelist.NAT_GATEWAY
    (offers,) = document["terms"]["OnDemand"].values()
    (term,) = offers.values()
    (rate,) = term["priceDimensions"].values()
    term["priceDimensions"]["second"] = rate
    with pytest.raises(cost.PriceError, match="found 2"):
        cost.hourly_price(json.dumps(document), "USD")


@pytest.mark.parametrize(
    "product",
    [
        cost.instance_product("us-west-2", "g6.xlarge"),
        cost.eks_product("us-east-1", extended_support=False),
        cost.eks_product("us-west-2", extended_support=True),
        cost.nat_product("us-east-1"),
        cost.nat_product("us-west-2"),
        cost.nlb_product("us-east-1"),
        cost.public_ipv4_product("us-west-2"),
    ],
    ids=lambda p: "-".join(v for _, v in p.filters[:2]),
)
def test_each_product_query_selects_one_product_among_its_decoys(product: cost.Product) -> None:
    # The fixture holds the other operating systems, tenancies, capacity states, per-GB twins,
    # ALBs and the Outposts EKS SKU next to each product: a looser filter matches several.
    region = dict(product.filters)["regionCode"]
    assert len(pricelist.matching(region, product.service_code, dict(product.filters))) == 1
    loose = {"regionCode": region}
    assert len(pricelist.matching(region, product.service_code, loose)) > 1


def test_no_launch_template_caps_spot_below_the_on_demand_bound(inventory: Inventory) -> None:
    """allOnDemand is the most a spot node is billed only while no maximum price is set."""
    templates = inventory.of_type("aws:ec2/launchTemplate:LaunchTemplate")
    assert templates
    for template in templates:
        assert "instanceMarketOptions" not in template.inputs, template.name


# --- Stable outputs: what a pull request's preview diffs ----------------------------------------

XL_UP = {"g6.xlarge": 1.3, "g5.xlarge": 1.3}
"""Spot prices of the xlarge types up 30% since the fixture: a new day, the same stack."""


def test_spot_prices_moving_change_only_the_volatile_output(prod: Inventory) -> None:
    """Before, every cost output followed spot prices, so each preview of an unchanged stack showed
    output changes and hid the ones a change makes. Now only hourlyCostAtSpotPrices moves, and the
    warm nodes' placement in the stable bound follows on-demand prices (at these spot prices the
    2xlarge group is the cheapest per pod, which moves the spot floor's node there)."""
    later = run_stack("prod", account=MockAccount(spot_factors=XL_UP))
    volatile = {"hourlyCostAtSpotPrices"}
    for key in set(prod.outputs) - volatile:
        assert later.outputs[key] == prod.outputs[key], key
    assert later.outputs["hourlyCostAtSpotPrices"] != prod.outputs["hourlyCostAtSpotPrices"]
    want = expected(load_stack_config("prod"), spot_factors=XL_UP)
    for key, line in flat(want).items():
        assert flat(reported(later))[key] == pytest.approx(line), key
    spot_lines = later.outputs["hourlyCostAtSpotPrices"]["spotLines"]
    assert spot_lines["gpuNodeGroups[gpu-spot-2xl]"]["count"] == [2, 8]
    assert later.outputs["hourlyCost"]["lines"]["gpuNodeGroups[gpu-spot-xl]"]["count"] == [2, 8]


def test_the_stable_outputs_hold_no_spot_price(inventory: Inventory) -> None:
    stable = json.dumps(inventory.outputs["hourlyCost"])
    for line in inventory.outputs["hourlyCostAtSpotPrices"]["spotLines"].values():
        for price in line["rate"]:
            assert str(price) not in stable
