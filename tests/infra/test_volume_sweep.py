"""The volume sweep at the end of `pulumi destroy`, against botocore's Stubber (requests are checked
against the real EC2 API model), and its place in the deletion order."""

from __future__ import annotations

from collections.abc import Iterator

import boto3
import pytest
from botocore.stub import Stubber

from infra import monitoring, teardown
from rehearsal.mockengine import Inventory

TAG = (monitoring.VOLUME_TAG, "gpu-inference-dev")
FILTERS = {"Filters": [{"Name": f"tag:{TAG[0]}", "Values": [TAG[1]]}]}


@pytest.fixture
def ec2() -> Iterator[tuple[object, Stubber]]:
    client = boto3.client(
        "ec2", region_name="us-west-2", aws_access_key_id="x", aws_secret_access_key="x"
    )
    with Stubber(client) as stubber:
        yield client, stubber
        stubber.assert_no_pending_responses()


def volumes(*states: tuple[str, str]) -> dict:
    return {"Volumes": [{"VolumeId": vid, "State": state} for vid, state in states]}


class Clock:
    def __init__(self) -> None:
        self.now = 0.0
        self.sleeps: list[float] = []

    def __call__(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)
        self.now += seconds


def test_deletes_detached_volumes_and_waits_for_attached_ones(
    ec2: tuple[object, Stubber],
) -> None:
    client, stubber = ec2
    # Prometheus' volume is detached; Alertmanager's still attached to a terminating node.
    stubber.add_response(
        "describe_volumes", volumes(("vol-1", "available"), ("vol-2", "in-use")), FILTERS
    )
    stubber.add_response("delete_volume", {}, {"VolumeId": "vol-1"})
    stubber.add_response(
        "describe_volumes", volumes(("vol-1", "deleting"), ("vol-2", "available")), FILTERS
    )
    stubber.add_response("delete_volume", {}, {"VolumeId": "vol-2"})
    stubber.add_response("describe_volumes", volumes(), FILTERS)
    clock = Clock()
    deleted = teardown.sweep(client, *TAG, timeout_seconds=300, sleep=clock.sleep, clock=clock)
    assert deleted == ["vol-1", "vol-2"]
    assert clock.sleeps == [teardown.POLL_SECONDS, teardown.POLL_SECONDS]


def test_a_volume_deleted_meanwhile_is_not_an_error(ec2: tuple[object, Stubber]) -> None:
    client, stubber = ec2
    stubber.add_response("describe_volumes", volumes(("vol-1", "available")), FILTERS)
    stubber.add_client_error(
        "delete_volume", "InvalidVolume.NotFound", expected_params={"VolumeId": "vol-1"}
    )
    stubber.add_response("describe_volumes", volumes(), FILTERS)
    clock = Clock()
    assert teardown.sweep(client, *TAG, sleep=clock.sleep, clock=clock) == ["vol-1"]


def test_gives_up_naming_what_is_left(ec2: tuple[object, Stubber]) -> None:
    client, stubber = ec2
    for _ in range(3):
        stubber.add_response("describe_volumes", volumes(("vol-9", "in-use")), FILTERS)
    clock = Clock()
    with pytest.raises(teardown.VolumesLeftError, match=r"vol-9 \(in-use\).*aws ec2 delete-volume"):
        teardown.sweep(client, *TAG, timeout_seconds=20, sleep=clock.sleep, clock=clock)


def test_runs_after_every_node_group_and_volume_claim_is_gone(inventory: Inventory) -> None:
    (sweep,) = inventory.of_type("pulumi-python:dynamic/teardown:EbsVolumeSweep")
    assert sweep.inputs["tag_key"] == monitoring.VOLUME_TAG
    (cluster,) = inventory.of_type("aws:eks/cluster:Cluster")
    assert sweep.inputs["tag_value"] == cluster.inputs["name"]
    storage_class = inventory.one("kubernetes:storage.k8s.io/v1:StorageClass").inputs
    assert storage_class["parameters"]["tagSpecification_1"] == (
        f"{monitoring.VOLUME_TAG}={cluster.inputs['name']}"
    )
    later = [
        *inventory.of_type("aws:eks/nodeGroup:NodeGroup"),
        *inventory.of_type("kubernetes:core/v1:PersistentVolumeClaim"),
        *[
            a
            for a in inventory.of_type("aws:eks/addon:Addon")
            if a.inputs["addonName"] == "aws-ebs-csi-driver"
        ],
    ]
    early = [r.name for r in later if sweep.urn not in inventory.dependencies(r)]
    assert not early, f"destroyed after the sweep, so their volumes could outlive it: {early}"
