"""The last step of `pulumi destroy`: no EBS volume of the cluster may outlive the stack.

The volumes of Prometheus and Alertmanager are created by the EBS CSI driver, not by Pulumi. Their
claims are Pulumi resources and their storage class deletes a volume with its claim, but the driver
deletes it only after the claim is gone and the volume is detached, while `pulumi destroy` goes on
to remove the driver (an EKS add-on), its IAM role and the nodes. Whatever the driver has not
deleted by then would be billed forever. `VolumeSweep` closes that gap: it is created before the
node groups, so the engine deletes it after them (it deletes a resource only once nothing that
depends on it is left: pulumi/pulumi ScheduleDeletes), when every instance is gone and every volume
detached; its delete deletes the detached volumes still carrying the cluster's tag (the storage
class puts it on every volume, infra/monitoring.py) and waits for those still detaching.

A dynamic provider (Python, run by the Pulumi engine on the machine that runs `pulumi destroy`,
with the same AWS credentials), because no AWS resource type deletes volumes Pulumi did not create.
It calls DescribeVolumes and DeleteVolume only; `pulumi up` and `preview` never call AWS through it.
The engine stores the provider by reference to this module, so the program's virtualenv must have
the project installed (`make setup` and the deploy workflow install it editable).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Final

import pulumi
from pulumi.dynamic import CreateResult, ResourceProvider

SWEEP_TIMEOUT_SECONDS: Final = 900
"""Instances of deleted node groups can take minutes to terminate and release their volumes."""
POLL_SECONDS: Final = 10.0


class VolumesLeftError(Exception):
    """Volumes of the cluster that are still there when the sweep gives up."""


def sweep(
    ec2: Any,
    tag_key: str,
    tag_value: str,
    timeout_seconds: float = SWEEP_TIMEOUT_SECONDS,
    sleep: Callable[[float], None] = time.sleep,
    clock: Callable[[], float] = time.monotonic,
) -> list[str]:
    """Deletes every volume tagged `tag_key=tag_value` once it is detached; returns the ids it
    deleted. `ec2` is a boto3 EC2 client. Raises VolumesLeftError naming what is left at the
    timeout."""
    deadline = clock() + timeout_seconds
    deleted: list[str] = []
    while True:
        volumes = [
            volume
            for page in ec2.get_paginator("describe_volumes").paginate(
                Filters=[{"Name": f"tag:{tag_key}", "Values": [tag_value]}]
            )
            for volume in page["Volumes"]
        ]
        if not volumes:
            return deleted
        for volume in volumes:
            # `in-use`: still attached to an instance that is shutting down; `deleting`/`creating`:
            # in transition. Only a detached volume can be deleted.
            if volume["State"] == "available":
                try:
                    ec2.delete_volume(VolumeId=volume["VolumeId"])
                except ec2.exceptions.ClientError as error:
                    if error.response["Error"]["Code"] != "InvalidVolume.NotFound":
                        raise
                deleted.append(volume["VolumeId"])
        if clock() >= deadline:
            left = ", ".join(f"{v['VolumeId']} ({v['State']})" for v in volumes)
            raise VolumesLeftError(
                f"EBS volumes tagged {tag_key}={tag_value} still exist after "
                f"{timeout_seconds:g}s: {left}; delete them with `aws ec2 delete-volume`"
            )
        sleep(POLL_SECONDS)


class _SweepProvider(ResourceProvider):
    def create(self, props: dict[str, Any]) -> CreateResult:
        return CreateResult(f"{props['region']}/{props['tag_key']}={props['tag_value']}", props)

    def delete(self, _id: str, props: dict[str, Any]) -> None:
        import boto3  # on the deployer's machine only, when the stack is destroyed

        ec2 = boto3.client("ec2", region_name=props["region"])
        sweep(ec2, props["tag_key"], props["tag_value"], float(props["timeout_seconds"]))


class _EbsVolumeSweep(pulumi.dynamic.Resource, module="teardown", name="EbsVolumeSweep"):
    """Type `pulumi-python:dynamic/teardown:EbsVolumeSweep`."""


@dataclass(frozen=True)
class VolumeSweepArgs:
    region: str
    tag_key: str
    tag_value: str
    """The tag the storage class puts on every volume of this cluster (its name)."""
    timeout_seconds: int = SWEEP_TIMEOUT_SECONDS


class VolumeSweep(pulumi.ComponentResource):
    """Create it before the node groups and make them depend on it (infra/__main__.py)."""

    def __init__(
        self, name: str, args: VolumeSweepArgs, opts: pulumi.ResourceOptions | None = None
    ) -> None:
        super().__init__("gpu-inference:teardown:VolumeSweep", name, None, opts)
        self.sweep = _EbsVolumeSweep(
            _SweepProvider(),
            f"{name}-ebs",
            {
                "region": args.region,
                "tag_key": args.tag_key,
                "tag_value": args.tag_value,
                "timeout_seconds": args.timeout_seconds,
            },
            opts=pulumi.ResourceOptions(parent=self),
        )
        self.register_outputs({"tag": f"{args.tag_key}={args.tag_value}"})
