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
from pulumi.dynamic import CreateResult, DiffResult, ResourceProvider, UpdateResult

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


STATE_KEYS: Final = ("region", "tag_key", "tag_value", "timeout_seconds")
"""What the sweep's delete reads: the resource's whole state, kept through every update."""


def _state(props: dict[str, Any]) -> dict[str, Any]:
    return {key: props[key] for key in STATE_KEYS}


class _SweepProvider(ResourceProvider):
    """The engine runs these in Pulumi's Python dynamic-provider host (pulumi/dynamic/__main__.py
    of the installed pulumi, 3.272): it stores as the resource's outputs what `create` or
    `update` returns, plus `__provider` (this object, pickled). Its `Update` stores only
    `__provider` when `update` returns no outputs (ResourceProvider's default), and `delete`
    receives those outputs: without `update` below, the first update of the sweep would leave
    `delete` without its region and tag, and every `pulumi destroy` after it would fail."""

    def create(self, props: dict[str, Any]) -> CreateResult:
        return CreateResult(
            f"{props['region']}/{props['tag_key']}={props['tag_value']}", _state(props)
        )

    def diff(self, _id: str, olds: dict[str, Any], news: dict[str, Any]) -> DiffResult:
        # `olds` are the stored outputs, `news` the new inputs (pulumi/pulumi provider.proto,
        # DiffRequest). Only the sweep's own keys count: `__provider` is a pickle of this object,
        # which differs with the Python version (3.14 pickles with another default protocol) and
        # the dill release while the sweep stays the same; the engine's own fallback for a
        # provider that does not diff compares every input, `__provider` included
        # (pkg/resource/deploy/step_generator.go, diffResource), and would update for it. The
        # pickle refers to this class by module, so the code that deletes is always the
        # installed one, whichever pickle the state holds. A changed key is an in-place update:
        # the sweep owns nothing until it runs, so there is nothing to replace.
        changed = [key for key in STATE_KEYS if olds.get(key) != news.get(key)]
        return DiffResult(changes=bool(changed), replaces=[], delete_before_replace=False)

    def update(self, _id: str, _olds: dict[str, Any], news: dict[str, Any]) -> UpdateResult:
        return UpdateResult(_state(news))

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
