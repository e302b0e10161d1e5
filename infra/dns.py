"""The endpoint's DNS name: a Route 53 record from `endpointHostname` to the NLB's AWS hostname.

Clients must call a name the TLS certificate covers; the NLB's own `*.elb.<region>.amazonaws.com`
name never is. With `route53ZoneId` the program owns that record; without it the operator creates
it from the `loadBalancerHostname` output (README "Using the endpoint").
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Final

import pulumi
import pulumi_aws as aws

RECORD_TTL_SECONDS: Final = 60
"""Short, so clients follow a replaced NLB (a new hostname) within a minute."""


@dataclass(frozen=True)
class EndpointDnsArgs:
    zone_id: str
    """The Route 53 hosted zone that holds `hostname` (validated in infra/config.py)."""
    hostname: str
    """What clients call; not the zone apex (a CNAME cannot live there)."""
    target: pulumi.Input[str]
    """The NLB's DNS name, from the inference Service's status."""


def require_hostname(hostname: str | None) -> str:
    """The NLB hostname for the record. The Kubernetes provider waits for a LoadBalancer Service
    to get its ingress hostname before it reports the Service created, so a missing one means the
    controller never provisioned the NLB."""
    if not hostname:
        raise ValueError(
            "the inference NLB Service has no hostname in its status: the AWS Load Balancer "
            "Controller did not provision the NLB (kubectl describe service, controller logs)"
        )
    return hostname


class EndpointDns(pulumi.ComponentResource):
    record: aws.route53.Record
    fqdn: pulumi.Output[str]

    def __init__(
        self, name: str, args: EndpointDnsArgs, opts: pulumi.ResourceOptions | None = None
    ) -> None:
        super().__init__("gpu-inference:dns:EndpointDns", name, None, opts)
        # A CNAME, not an alias record: an alias needs the NLB's canonical hosted zone id, which
        # the Service status does not carry (only the hostname, and only after the controller has
        # made the NLB), so it is unknown at preview. The cost is one more DNS lookup per
        # resolution and no record at the zone apex (route53ZoneId in Pulumi.yaml says so).
        self.record = aws.route53.Record(
            f"{name}-record",
            zone_id=args.zone_id,
            name=args.hostname,
            type="CNAME",
            ttl=RECORD_TTL_SECONDS,
            records=[args.target],
            opts=pulumi.ResourceOptions(parent=self),
        )
        self.fqdn = self.record.fqdn
        self.register_outputs({"fqdn": self.fqdn})
