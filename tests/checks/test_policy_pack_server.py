"""The policy pack as the Pulumi CLI runs it: policy/__main__.py started as its own process serves
the analyzer gRPC protocol on loopback, and answers Analyze requests for real resources of the
program.

This is the path `pulumi preview --policy-pack policy` takes (the CLI is the only part missing
offline): properties travel as a protobuf Struct (numbers become floats) and reach the policies
through the SDK's unknown-checking proxies, not as plain dicts."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import grpc
import pulumi
import pytest
from google.protobuf import empty_pb2, json_format, struct_pb2
from pulumi.runtime import rpc
from pulumi.runtime.proto import analyzer_pb2, analyzer_pb2_grpc
from pulumi_policy.proxy import UNKNOWN_STRING_VALUE

from checks.tools import REPO_ROOT
from policy.policies import NODE_GROUP, POLICIES, StackInfo
from rehearsal.mockengine import UNKNOWN, Inventory, Secret

POLICY_DIR = REPO_ROOT / "policy"


@pytest.fixture(scope="module")
def analyzer() -> Iterator[analyzer_pb2_grpc.AnalyzerStub]:
    env = {
        **os.environ,
        "PULUMI_PROJECT": "gpu-inference",
        "PULUMI_STACK": "dev",
        "PULUMI_DRY_RUN": "true",
        "PULUMI_CONFIG": json.dumps({"gpu-inference:production": "false"}),
    }
    process = subprocess.Popen(
        [sys.executable, "-u", str(Path("__main__.py"))],
        cwd=POLICY_DIR,
        env=env,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert process.stdout is not None
        first_line = process.stdout.readline().strip()  # the SDK prints its port, then serves
        if not first_line.isdigit():
            process.kill()
            pytest.fail(f"policy pack did not start: {first_line!r} {process.communicate()[1]}")
        with grpc.insecure_channel(f"127.0.0.1:{first_line}") as channel:
            grpc.channel_ready_future(channel).result(timeout=30)
            yield analyzer_pb2_grpc.AnalyzerStub(channel)
    finally:
        process.terminate()
        process.wait(timeout=10)


def _wire(value: Any) -> Any:
    """Inputs as the engine sends them to analyzers: secrets wrapped in the secret signature, values
    unknown during preview as the unknown sentinel, text assets in the asset signature."""
    if isinstance(value, pulumi.StringAsset):
        return {rpc._special_sig_key: rpc._special_asset_sig, "text": value.text}
    if isinstance(value, Secret):
        return {rpc._special_sig_key: rpc._special_secret_sig, "value": _wire(value.value)}
    if value == UNKNOWN:
        return UNKNOWN_STRING_VALUE
    if isinstance(value, dict):
        return {k: _wire(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_wire(v) for v in value]
    return value


def _analyze(
    stub: analyzer_pb2_grpc.AnalyzerStub,
    type_: str,
    name: str,
    props: dict[str, Any],
    urn: str | None = None,
) -> list[Any]:
    properties = json_format.ParseDict(_wire(props), struct_pb2.Struct())
    request = analyzer_pb2.AnalyzeRequest(
        type=type_,
        properties=properties,
        urn=urn or f"urn:pulumi:dev::gpu-inference::{type_}::{name}",
        name=name,
    )
    return list(stub.Analyze(request, timeout=30).diagnostics)


def test_pack_lists_every_policy(analyzer: analyzer_pb2_grpc.AnalyzerStub) -> None:
    info = analyzer.GetAnalyzerInfo(empty_pb2.Empty(), timeout=30)
    assert sorted(p.name for p in info.policies) == sorted(p.name for p in POLICIES)


def test_real_resources_pass_and_a_violation_is_mandatory(
    analyzer: analyzer_pb2_grpc.AnalyzerStub,
    stack_inventories: dict[str, tuple[StackInfo, Inventory]],
) -> None:
    _, inventory = stack_inventories["dev"]
    # Every resource the engine registers, chart objects included, with the URN the engine sends.
    for resource in inventory.resources:
        found = _analyze(analyzer, resource.type, resource.name, resource.inputs, resource.urn)
        assert found == [], resource.name

    group = next(r for r in inventory.of_type(NODE_GROUP) if "gpu" in r.name)
    [diagnostic] = _analyze(
        analyzer, NODE_GROUP, group.name, {**group.inputs, "capacityType": "ON_DEMAND"}
    )
    assert diagnostic.policyName == "gpu-node-groups-spot-outside-production"
    assert "non-production stack 'dev'" in diagnostic.message
    assert diagnostic.enforcementLevel == analyzer_pb2.MANDATORY
