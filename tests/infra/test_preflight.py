"""Account checks at preview: instance type offerings in the stack's zones and GPU vCPU quotas."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from infra import preflight
from infra.config import ConfigError
from rehearsal import synth
from rehearsal.mockengine import (
    DEFAULT_QUOTAS,
    MockAccount,
    instance_type_offerings,
    load_stack_config,
    run_function,
    run_stack,
)

DEV_SYSTEM = {
    "instanceTypes": ["t3.large", "t3a.large"],
    "minSize": 1,
    "desiredSize": 2,
    "maxSize": 3,
    "diskGiB": 50,
}


def refused(stack: str, overrides: dict[str, Any], account: MockAccount | None = None) -> str:
    """The message a refused program stops with; nothing may have been registered before it."""
    with pytest.raises(ConfigError) as caught:
        run_stack(stack, overrides, account)
    assert caught.value.registered_resources == ()  # type: ignore[attr-defined]
    return str(caught.value)


def test_a_misspelt_system_instance_type_fails_the_preview_naming_the_key() -> None:
    # "t3.lrge" passes the config's syntax check: only the account can say it does not exist.
    message = refused("dev", {"systemNodeGroup": {**DEV_SYSTEM, "instanceTypes": ["t3.lrge"]}})
    assert message.startswith(
        "Pulumi.dev.yaml: gpu-inference:systemNodeGroup[system].instanceTypes = 't3.lrge'"
    ), message
    assert "in none of its zones" in message


def test_a_gpu_type_missing_from_a_stack_zone_fails_with_the_zones_it_is_offered_in() -> None:
    # The mock account offers no GPU types in zone d (like a zone without a family in a region).
    message = refused("dev", {"availabilityZones": ["us-west-2a", "us-west-2d"]})
    assert "gpu-inference:gpuNodeGroups[gpu-spot].instanceTypes = 'g6.xlarge'" in message
    assert "not offered in us-west-2d" in message
    assert "offers it in us-west-2a, us-west-2b, us-west-2c of us-west-2" in message


def test_a_gpu_type_the_region_does_not_offer_fails_in_any_group() -> None:
    offerings = {
        zone: types - {"g5.2xlarge"} for zone, types in instance_type_offerings("us-east-1").items()
    }
    message = refused("prod", {}, MockAccount(offerings=offerings))
    assert "gpu-inference:gpuNodeGroups[gpu-spot-2xl].instanceTypes = 'g5.2xlarge'" in message
    assert "in none of its zones" in message


@pytest.mark.parametrize(
    ("code", "quota", "key"),
    [
        # prod keeps one on-demand GPU node (4 vCPUs); a new account's G and VT quota is 0.
        ("L-DB2E81BA", 0.0, "gpu-inference:gpuNodeGroups[gpu-ondemand].minSize = 4"),
        # ... and three m6i/m7i/m6a.xlarge system nodes: 12 vCPUs against a new account's few.
        ("L-1216C47A", 5.0, "gpu-inference:systemNodeGroup[system].minSize = 12"),
    ],
)
def test_a_minimum_above_the_quota_fails_before_anything_is_created(
    code: str, quota: float, key: str
) -> None:
    message = refused("prod", {}, MockAccount(quotas={**DEFAULT_QUOTAS, code: quota}))
    assert key in message
    assert f"({code}) = {quota:g} vCPUs in us-east-1" in message


def report(stack: str, account: MockAccount) -> list[str]:
    cfg = load_stack_config(stack)
    lines: list[str] = []
    run_function(
        lambda: lines.extend(preflight.check(cfg)), {"aws:region": cfg.region}, account=account
    )
    return lines


def test_quotas_are_reported_and_a_maximum_above_the_quota_is_a_warning() -> None:
    lines = report("prod", MockAccount(quotas={**DEFAULT_QUOTAS, "L-3819A6DF": 64.0}))
    spot = [line for line in lines if line.startswith("All G and VT Spot Instance Requests")]
    # Spot groups at maxSize: 8 x 4 + 8 x 8 + 4 x 16 vCPUs.
    assert spot == [
        "All G and VT Spot Instance Requests (L-3819A6DF): 64 vCPUs; "
        "gpu-inference:gpuNodeGroups[gpu-spot-xl], gpu-inference:gpuNodeGroups[gpu-spot-2xl], "
        "gpu-inference:gpuNodeGroups[gpu-spot-4xl] need 0 at minSize, 160 at maxSize",
        "All G and VT Spot Instance Requests (L-3819A6DF) is 64 vCPUs in us-east-1, but "
        "gpu-inference:gpuNodeGroups[gpu-spot-xl], gpu-inference:gpuNodeGroups[gpu-spot-2xl], "
        "gpu-inference:gpuNodeGroups[gpu-spot-4xl] reach 160 vCPUs at maxSize: scale-ups stop at "
        "the quota; request an increase or lower maxSize",
    ]
    assert any(
        line.startswith("Running On-Demand G and VT instances (L-DB2E81BA): 64") for line in lines
    )


def test_an_unreadable_quota_is_reported_not_fatal() -> None:
    lines = report("dev", MockAccount(quotas={}))
    assert len(lines) == 2
    gpu = next(line for line in lines if "(L-3819A6DF)" in line)
    assert gpu.startswith("could not read All G and VT Spot Instance Requests (L-3819A6DF)")
    assert "need 0-8 vCPUs" in gpu
    # The system group: 1-3 nodes of 2 vCPUs (t3.large, t3a.large).
    system = next(line for line in lines if "(L-1216C47A)" in line)
    assert "need 2-6 vCPUs" in system


@pytest.mark.parametrize(
    ("instance_type", "capacity", "code"),
    [
        ("g4dn.xlarge", "SPOT", "L-3819A6DF"),
        ("g6e.2xlarge", "ON_DEMAND", "L-DB2E81BA"),
        ("p4d.24xlarge", "SPOT", "L-7212CCBC"),
        ("p3.2xlarge", "ON_DEMAND", "L-417A185B"),
        ("m6i.xlarge", "ON_DEMAND", "L-1216C47A"),
        ("t3a.large", "SPOT", "L-34B43A08"),
        ("inf2.xlarge", "ON_DEMAND", None),
        ("trn1.2xlarge", "SPOT", None),
    ],
)
def test_each_instance_family_counts_against_its_quota(
    instance_type: str, capacity: str, code: str | None
) -> None:
    kind = preflight.quota_kind(instance_type, capacity)
    assert (kind.code if kind else None) == code


def test_the_offline_render_refuses_like_the_preview(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    overrides = ["--set", "availabilityZones=[us-west-2a, us-west-2d]"]
    assert synth.main(["dev", "--out", str(tmp_path), *overrides]) == 2
    error = capsys.readouterr().err
    assert error.startswith(
        "error: Pulumi.dev.yaml: gpu-inference:gpuNodeGroups[gpu-spot].instanceTypes = 'g6.xlarge'"
    )
    assert not (tmp_path / "inventory.yaml").exists()
