"""The mock account's price data: a Price List catalog and spot prices, shaped as AWS answers them.

`aws.pricing.get_product` is answered the way the provider's data source answers
(terraform-provider-aws `internal/service/pricing/product_data_source.go`): every filter is a
TERM_MATCH on a product attribute, exactly one product must match ("did not return any elements",
"not precise enough" otherwise), and `result` is that product's Price List document as a JSON
string: `product.attributes`, and `terms.OnDemand.<sku>.<term>.priceDimensions.<rate>` with `unit`
and `pricePerUnit`. The catalog holds decoys next to each product the program asks for (other
operating systems, tenancies and capacity states, per-GB twins of hourly products, other load
balancer families, an Outposts EKS SKU), so a filter that is not precise enough fails here as it
would against AWS.

The prices are realistic, not live: on-demand Linux prices of us-east-1 and us-west-2 (equal for
these types) and spot prices in their usual range, the same in every region of the fixture. Tests
recompute costs from these tables; nothing else reads them.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterator, Mapping
from typing import Any, Final

ON_DEMAND: Final = {
    "g4dn.xlarge": 0.526,
    "g4dn.2xlarge": 0.752,
    "g4dn.4xlarge": 1.204,
    "g5.xlarge": 1.006,
    "g5.2xlarge": 1.212,
    "g5.4xlarge": 1.624,
    "g6.xlarge": 0.8048,
    "g6.2xlarge": 0.9776,
    "g6.4xlarge": 1.3232,
    "g6e.xlarge": 1.861,
    "t3.large": 0.0832,
    "t3a.large": 0.0752,
    "m5.large": 0.096,
    "m6i.large": 0.096,
    "m6i.xlarge": 0.192,
    "m7i.xlarge": 0.2016,
    "m6a.xlarge": 0.1728,
}
"""USD per hour, Linux, shared tenancy, no pre-installed software."""

SPOT: Final = {
    "g4dn.xlarge": 0.2204,
    "g5.xlarge": 0.4312,
    "g6.xlarge": 0.3391,
    "g5.2xlarge": 0.5127,
    "g6.2xlarge": 0.4088,
    "g5.4xlarge": 0.7215,
    "g6.4xlarge": 0.5893,
    "g6e.xlarge": 0.7804,
    "t3.large": 0.0311,
    "t3a.large": 0.0287,
    "m5.large": 0.0402,
    "m6i.large": 0.0398,
    "m6i.xlarge": 0.0702,
    "m7i.xlarge": 0.0764,
    "m6a.xlarge": 0.0651,
}
"""USD per hour in zone a of a region; zones differ by ZONE_FACTOR (spot pools are per zone)."""

ZONE_FACTOR: Final = {"a": 1.0, "b": 1.07, "c": 0.94, "d": 1.12}

EKS_CLUSTER: Final = 0.10
EKS_EXTENDED_SUPPORT: Final = 0.50
"""Added to EKS_CLUSTER while the cluster's version is in extended support."""
NAT_GATEWAY: Final = 0.045
NAT_GATEWAY_PER_GB: Final = 0.045
NLB: Final = 0.0225
NLB_CAPACITY_UNIT: Final = 0.006
ALB: Final = 0.0225
PUBLIC_IPV4: Final = 0.005

PRODUCT_DESCRIPTION: Final = "Linux/UNIX"
SPOT_TIMESTAMP: Final = "2026-12-01T08:00:00Z"


def spot_price(instance_type: str, zone: str) -> float | None:
    """The current spot price of a type in a zone (None: no spot pool of it there)."""
    base = SPOT.get(instance_type)
    if base is None:
        return None
    return round(base * ZONE_FACTOR[zone[-1]], 4)


BILLING_CODES: Final = {
    "us-east-1": "USE1",
    "us-west-2": "USW2",
    "eu-west-1": "EU",
    "eu-central-1": "EUC1",
    "ap-south-1": "APS3",
}
"""The regions the catalog has products in, with the prefix AWS puts in their usage types (written
here on their own, not read from infra/cost.py, so a wrong table there fails the tests)."""


def catalog(region: str) -> Iterator[dict[str, Any]]:
    """Every product of the fixture in a region: service code, attributes, unit and USD price.
    EC2 and ELB usage types carry no prefix in us-east-1; EKS and VPC ones do (USE1-)."""
    if region not in BILLING_CODES:
        return
    code = BILLING_CODES[region]
    ec2 = "" if region == "us-east-1" else f"{code}-"
    for instance_type, price in ON_DEMAND.items():
        base = {
            "regionCode": region,
            "instanceType": instance_type,
            "operatingSystem": "Linux",
            "tenancy": "Shared",
            "preInstalledSw": "NA",
            "capacitystatus": "Used",
            "licenseModel": "No License required",
            "usagetype": f"{ec2}BoxUsage:{instance_type}",
            "operation": "RunInstances",
        }
        yield _product("AmazonEC2", "Compute Instance", base, "Hrs", price)
        for decoy, factor in (
            ({"operatingSystem": "RHEL", "operation": "RunInstances:0010"}, 1.09),
            ({"capacitystatus": "UnusedCapacityReservation"}, 1.0),
            ({"capacitystatus": "AllocatedCapacityReservation"}, 0.0),
            ({"tenancy": "Dedicated", "usagetype": f"{ec2}DedicatedUsage:{instance_type}"}, 1.1),
            ({"preInstalledSw": "SQL Std", "operation": "RunInstances:0004"}, 2.5),
        ):
            yield _product(
                "AmazonEC2", "Compute Instance", {**base, **decoy}, "Hrs", price * factor
            )
    eks = {"regionCode": region, "locationType": "AWS Region"}
    yield _product(
        "AmazonEKS",
        "Compute",
        {**eks, "usagetype": f"{code}-AmazonEKS-Hours:perCluster", "operation": "CreateOperation"},
        "Hours",
        EKS_CLUSTER,
    )
    yield _product(
        "AmazonEKS",
        "Compute",
        {
            **eks,
            "usagetype": f"{code}-AmazonEKS-Hours:extendedSupport",
            "operation": "ExtendedSupport",
        },
        "Hours",
        EKS_EXTENDED_SUPPORT,
    )
    yield _product(
        "AmazonEKS",
        "Compute",
        {
            **eks,
            "locationType": "AWS Outposts",
            "usagetype": f"{code}-AmazonEKS-Local-Outposts-Hours:perCluster",
            "operation": "CreateOperation",
        },
        "Hours",
        EKS_CLUSTER,
    )
    nat = {"regionCode": region, "group": "NGW:NatGateway", "operation": "NatGateway"}
    yield _product(
        "AmazonEC2",
        "NAT Gateway",
        {**nat, "usagetype": f"{ec2}NatGateway-Hours"},
        "Hrs",
        NAT_GATEWAY,
    )
    yield _product(
        "AmazonEC2",
        "NAT Gateway",
        {**nat, "usagetype": f"{ec2}NatGateway-Bytes"},
        "GB",
        NAT_GATEWAY_PER_GB,
    )
    for family, usage, price in (
        ("Load Balancer-Network", "LoadBalancerUsage", NLB),
        ("Load Balancer-Network", "LCUUsage", NLB_CAPACITY_UNIT),
        ("Load Balancer-Application", "LoadBalancerUsage", ALB),
    ):
        yield _product(
            "AWSELB", family, {"regionCode": region, "usagetype": f"{ec2}{usage}"}, "Hrs", price
        )
    for usage in ("InUseAddress", "IdleAddress"):
        yield _product(
            "AmazonVPC",
            "VPC Public IPv4 Address",
            {"regionCode": region, "usagetype": f"{code}-PublicIPv4:{usage}"},
            "Hrs",
            PUBLIC_IPV4,
        )


def _product(
    service_code: str, family: str, attributes: Mapping[str, str], unit: str, usd: float
) -> dict[str, Any]:
    attributes = {**attributes, "servicecode": service_code}
    sku = hashlib.sha256(json.dumps(attributes, sort_keys=True).encode()).hexdigest()[:16].upper()
    return {
        "serviceCode": service_code,
        "productFamily": family,
        "attributes": attributes,
        "sku": sku,
        "unit": unit,
        "usd": usd,
    }


def matching(region: str, service_code: str, filters: Mapping[str, str]) -> list[dict[str, Any]]:
    """The products TERM_MATCH filters select (`productFamily` is a filterable field too)."""
    found = []
    for product in catalog(region):
        fields = {**product["attributes"], "productFamily": product["productFamily"]}
        if product["serviceCode"] == service_code and all(
            fields.get(k) == v for k, v in filters.items()
        ):
            found.append(product)
    return found


def document(product: Mapping[str, Any]) -> str:
    """A product as GetProducts returns it in `PriceList` (one JSON string per product)."""
    sku = product["sku"]
    term = f"{sku}.JRTCKXETXF"
    rate = f"{term}.6YS6EN2CT7"
    return json.dumps(
        {
            "product": {
                "productFamily": product["productFamily"],
                "attributes": product["attributes"],
                "sku": sku,
            },
            "serviceCode": product["serviceCode"],
            "terms": {
                "OnDemand": {
                    sku: {
                        term: {
                            "priceDimensions": {
                                rate: {
                                    "unit": product["unit"],
                                    "endRange": "Inf",
                                    "description": f"{product['attributes'].get('usagetype')}",
                                    "appliesTo": [],
                                    "rateCode": rate,
                                    "beginRange": "0",
                                    "pricePerUnit": {"USD": f"{product['usd']:.10f}"},
                                }
                            },
                            "sku": sku,
                            "effectiveDate": "2026-11-01T00:00:00Z",
                            "offerTermCode": "JRTCKXETXF",
                            "termAttributes": {},
                        }
                    }
                },
            },
            "version": "20261115000000",
            "publicationDate": "2026-11-15T00:00:00Z",
        }
    )
