"""The volume sweep at the end of `pulumi destroy`, against botocore's Stubber (requests are checked
against the real EC2 API model), its place in the deletion order, and its state through updates in
Pulumi's own dynamic-provider host."""

from __future__ import annotations

import asyncio
import http.server
import os
import pickle
import subprocess
import sys
import threading
import urllib.parse
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from unittest import mock

import boto3
import grpc
import pytest
from botocore.stub import Stubber
from loopback import stop
from pulumi.dynamic.dynamic import serialize_provider
from pulumi.runtime import rpc
from pulumi.runtime.proto import provider_pb2, provider_pb2_grpc

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


# --- Through Pulumi's own dynamic-provider host ---------------------------------------------------
#
# The engine runs a dynamic resource's provider in `python -m pulumi.dynamic` (the installed
# pulumi's pulumi/dynamic/__main__.py) and talks to it over gRPC: Create stores the outputs it
# answers, Diff and Update get the stored outputs as `olds` and the new inputs as `news`, Update's
# answer replaces the stored outputs, and Delete gets them (pulumi/pulumi provider.proto). These
# tests start that host and play the engine's part; the host's boto3 client calls a loopback EC2
# endpoint (AWS_ENDPOINT_URL_EC2) that records what the sweep asks.

URN = (
    "urn:pulumi:dev::gpu-inference::pulumi-python:dynamic/teardown:EbsVolumeSweep::volume-sweep-ebs"
)
DIFF_NONE, DIFF_SOME = provider_pb2.DiffResponse.DIFF_NONE, provider_pb2.DiffResponse.DIFF_SOME
EMPTY_DESCRIBE = (
    b'<DescribeVolumesResponse xmlns="http://ec2.amazonaws.com/doc/2016-11-15/">'
    b"<requestId>r-1</requestId><volumeSet/></DescribeVolumesResponse>"
)


class _Ec2Endpoint(http.server.BaseHTTPRequestHandler):
    requests: list[tuple[str, dict[str, list[str]]]]

    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers["Content-Length"])).decode()
        self.requests.append((self.headers["Authorization"], urllib.parse.parse_qs(body)))
        self.send_response(200)
        self.send_header("Content-Type", "text/xml")
        self.send_header("Content-Length", str(len(EMPTY_DESCRIBE)))
        self.end_headers()
        self.wfile.write(EMPTY_DESCRIBE)

    def log_message(self, *_: object) -> None:
        pass


@dataclass
class Host:
    stub: Any
    ec2_requests: list[tuple[str, dict[str, list[str]]]]

    def struct(self, props: dict[str, Any]) -> Any:
        return asyncio.run(rpc.serialize_properties(props, {}))

    def create(self, inputs: dict[str, Any]) -> tuple[str, Any]:
        answer = self.stub.Create(
            provider_pb2.CreateRequest(urn=URN, properties=self.struct(inputs))
        )
        return answer.id, answer.properties

    def diff(self, resource_id: str, outputs: Any, inputs: dict[str, Any]) -> Any:
        request = provider_pb2.DiffRequest(
            id=resource_id, urn=URN, olds=outputs, news=self.struct(inputs)
        )
        return self.stub.Diff(request).changes

    def update(self, resource_id: str, outputs: Any, inputs: dict[str, Any]) -> Any:
        request = provider_pb2.UpdateRequest(
            id=resource_id, urn=URN, olds=outputs, news=self.struct(inputs)
        )
        return self.stub.Update(request).properties

    def delete(self, resource_id: str, outputs: Any) -> None:
        self.stub.Delete(provider_pb2.DeleteRequest(id=resource_id, urn=URN, properties=outputs))


@pytest.fixture
def host() -> Iterator[Host]:
    requests: list[tuple[str, dict[str, list[str]]]] = []
    handler = type("Handler", (_Ec2Endpoint,), {"requests": requests})
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    env = {
        **os.environ,
        "AWS_ENDPOINT_URL_EC2": f"http://127.0.0.1:{server.server_address[1]}",
        "AWS_ACCESS_KEY_ID": "AKIDLOOPBACK",
        "AWS_SECRET_ACCESS_KEY": "loopback",
        "PULUMI_PROJECT": "gpu-inference",
    }
    env.pop("AWS_PROFILE", None)
    proc = subprocess.Popen(
        [sys.executable, "-m", "pulumi.dynamic"],
        stdout=subprocess.PIPE,
        env=env,
        cwd=Path(__file__).parents[2],
    )
    try:
        assert proc.stdout is not None
        port = int(proc.stdout.readline())  # the host's first line: its gRPC port
        with grpc.insecure_channel(f"127.0.0.1:{port}") as channel:
            yield Host(provider_pb2_grpc.ResourceProviderStub(channel), requests)
    finally:
        stop(proc)
        server.shutdown()
        server.server_close()


def sweep_inputs(provider: str, **changes: Any) -> dict[str, Any]:
    args = teardown.VolumeSweepArgs("us-west-2", *TAG)
    props = {
        "region": args.region,
        "tag_key": args.tag_key,
        "tag_value": args.tag_value,
        "timeout_seconds": args.timeout_seconds,
    }
    return {**props, **changes, "__provider": provider}


def pickled(protocol: int) -> str:
    """The provider as pulumi.dynamic pickles it, with another pickle protocol (Python 3.14's
    default is 5, 3.11's 4): the same provider, different bytes."""
    with mock.patch.object(pickle, "DEFAULT_PROTOCOL", protocol):
        return serialize_provider(teardown._SweepProvider())


def test_an_updated_sweep_still_deletes_with_its_region_and_tag(host: Host) -> None:
    resource_id, outputs = host.create(sweep_inputs(pickled(4)))
    outputs = host.update(resource_id, outputs, sweep_inputs(pickled(4), timeout_seconds=1200))
    assert rpc.deserialize_properties(outputs)["timeout_seconds"] == 1200

    host.delete(resource_id, outputs)

    ((authorization, query),) = host.ec2_requests
    assert "/us-west-2/ec2/aws4_request" in authorization  # the client's region: the stack's
    assert query["Action"] == ["DescribeVolumes"]
    assert query["Filter.1.Name"] == [f"tag:{TAG[0]}"]
    assert query["Filter.1.Value.1"] == [TAG[1]]


def test_only_the_sweeps_own_keys_make_an_update(host: Host) -> None:
    assert pickled(4) != pickled(5)
    resource_id, outputs = host.create(sweep_inputs(pickled(4)))
    # The engine's fallback for a provider that answers DIFF_UNKNOWN compares the inputs, whose
    # `__provider` differs here: only the provider's own answer keeps this from being an update.
    assert host.diff(resource_id, outputs, sweep_inputs(pickled(5))) == DIFF_NONE
    assert host.diff(resource_id, outputs, sweep_inputs(pickled(4))) == DIFF_NONE
    for change in ({"timeout_seconds": 1200}, {"tag_value": "other"}, {"region": "eu-west-1"}):
        assert host.diff(resource_id, outputs, sweep_inputs(pickled(4), **change)) == DIFF_SOME
