"""The endpoint's DNS name: which URL the stack exports, and the Route 53 record that makes the name
resolve to the NLB (only where the stack owns the zone)."""

from __future__ import annotations

import functools
from typing import Any

import pytest

from infra import dns
from rehearsal.mockengine import Inventory, run_stack
from service import contract

RECORD = "aws:route53/record:Record"
COMPONENT = "gpu-inference:dns:EndpointDns"
HOSTNAME = "embeddings.example.com"
ZONE = "Z0123456789ABCDEFGHIJ"
PROD_PUBLIC_TLS = {
    "internetFacing": True,
    "clientCidrs": ["203.0.113.0/24"],
    "apiKeys": {"secure": "encrypted"},
    "tlsCertificateArn": (
        "arn:aws:acm:us-east-1:111122223333:certificate/0f1e2d3c-4b5a-6978-8a9b-0c1d2e3f4a5b"
    ),
    "endpointHostname": HOSTNAME,
}


@functools.cache
def prod(zone: bool) -> Inventory:
    return run_stack("prod", {**PROD_PUBLIC_TLS, **({"route53ZoneId": ZONE} if zone else {})})


def nlb_hostname(inventory: Inventory) -> str:
    (service,) = [
        s
        for s in inventory.of_type("kubernetes:core/v1:Service")
        if s.inputs["spec"].get("type") == "LoadBalancer"
    ]
    # The mock engine answers the Service with the status the controller would write.
    host: str = inventory.outputs["loadBalancerHostname"]
    assert host.endswith(".elb.us-east-1.amazonaws.com"), host
    assert service.name.endswith("-inference-nlb")
    return host


def test_with_a_zone_the_name_points_at_the_nlb() -> None:
    inv = prod(zone=True)
    record = inv.one(RECORD)
    assert record.name == "gpu-inference-prod-endpoint-dns-record"
    inputs: dict[str, Any] = record.inputs
    assert inputs["zoneId"] == ZONE
    assert inputs["name"] == HOSTNAME
    assert inputs["type"] == "CNAME"
    assert inputs["ttl"] == dns.RECORD_TTL_SECONDS == 60
    assert inputs["records"] == [nlb_hostname(inv)]
    assert not inputs.get("allowOverwrite"), "never take over a record someone else made"
    component = inv.one(COMPONENT)
    assert record.parent == component.urn


def test_without_a_zone_no_record_and_the_nlb_hostname_is_exported() -> None:
    inv = prod(zone=False)
    assert inv.of_type(RECORD) == []
    assert inv.of_type(COMPONENT) == []
    # What the operator's own record must point at.
    assert nlb_hostname(inv)


@pytest.mark.parametrize("zone", [True, False], ids=["managed-record", "own-record"])
def test_outputs_use_the_endpoint_hostname_over_https(zone: bool) -> None:
    outputs = prod(zone).outputs
    assert outputs["endpointUrl"] == f"https://{HOSTNAME}"
    assert outputs["openaiBaseUrl"] == f"https://{HOSTNAME}{contract.OPENAI_BASE_PATH}"


def test_plain_http_stacks_use_the_endpoint_hostname_too() -> None:
    inv = run_stack("dev", {"endpointHostname": HOSTNAME, "route53ZoneId": ZONE})
    assert inv.outputs["endpointUrl"] == f"http://{HOSTNAME}"
    assert inv.one(RECORD).inputs["records"] == [inv.outputs["loadBalancerHostname"]]


def test_no_record_and_the_nlb_name_without_an_endpoint_hostname() -> None:
    inv = run_stack("dev")
    assert inv.of_type(RECORD) == []
    host = inv.outputs["loadBalancerHostname"]
    assert host.endswith(".elb.us-west-2.amazonaws.com")
    assert inv.outputs["endpointUrl"] == f"http://{host}"


def test_a_missing_nlb_hostname_fails_with_what_to_check() -> None:
    assert dns.require_hostname("nlb.example") == "nlb.example"
    for missing in (None, ""):
        with pytest.raises(ValueError, match="did not provision the NLB"):
            dns.require_hostname(missing)
