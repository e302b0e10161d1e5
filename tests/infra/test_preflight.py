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
    assert len(lines) == 4
    gpu = next(line for line in lines if "(L-3819A6DF)" in line)
    assert gpu.startswith("could not read All G and VT Spot Instance Requests (L-3819A6DF)")
    assert "need 0-8 vCPUs" in gpu
    # The system group: 1-3 nodes of 2 vCPUs (t3.large, t3a.large).
    system = next(line for line in lines if "(L-1216C47A)" in line)
    assert "need 2-6 vCPUs" in system
    # Nor is the first replica's node, which the unread quota may or may not allow.
    assert lines[-1].startswith("could not prove that the GPU quotas leave room for the 1")


# --- GPU nodes for the first replicas -------------------------------------------------------------

SPOT, ON_DEMAND = "L-3819A6DF", "L-DB2E81BA"


def quotas(**codes: float) -> MockAccount:
    return MockAccount(quotas={**DEFAULT_QUOTAS, **codes})


def test_a_spot_quota_without_room_for_the_first_replica_stops_the_preview() -> None:
    # dev: one spot group of g6/g5/g4dn.xlarge (4 vCPUs) at minSize 0, no on-demand group. Before,
    # the preview only warned about the maximum and `up` timed out on the Deployment.
    message = refused("dev", {}, quotas(**{SPOT: 3.0}))
    assert message.startswith("Pulumi.dev.yaml: gpu-inference:hpaMinReplicas = 1 is not allowed")
    assert "L-3819A6DF (All G and VT Spot Instance Requests) = 3 vCPUs in us-west-2" in message
    assert "need 4 vCPUs of new nodes for 1 pod(s)" in message
    assert "no ON_DEMAND GPU group to fall back on" in message


def test_a_spot_quota_of_one_node_starts_the_first_replica() -> None:
    lines = report("dev", quotas(**{SPOT: 4.0}))
    (line,) = [line for line in lines if line.startswith("hpaMinReplicas")]
    assert line.startswith(
        "hpaMinReplicas = 1: the GPU groups' minSize nodes hold 0 inference pods, new nodes must "
        "hold 1 more; L-3819A6DF (All G and VT Spot Instance Requests) = 4 vCPUs"
    )
    assert not any("on-demand nodes" in line for line in lines)


def test_the_on_demand_fallback_starts_what_the_spot_quota_cannot() -> None:
    # prod: hpaMinReplicas 2; the on-demand group's one minSize node holds one pod, the other needs
    # a new node: no spot quota, but room for one more on-demand node.
    lines = report("prod", quotas(**{SPOT: 0.0, ON_DEMAND: 8.0}))
    assert any(
        line.startswith("the spot GPU quota leaves room for 0 of the 1 inference pods")
        and "the rest start on on-demand nodes" in line
        for line in lines
    ), lines


def test_neither_spot_nor_the_on_demand_fallback_stops_the_preview() -> None:
    # The on-demand quota holds the minSize node and nothing more.
    message = refused("prod", {}, quotas(**{SPOT: 0.0, ON_DEMAND: 4.0}))
    assert message.startswith("Pulumi.prod.yaml: gpu-inference:hpaMinReplicas = 2 is not allowed")
    assert "1 fit on the groups' minSize nodes, 1 more need new nodes" in message
    assert "L-3819A6DF (All G and VT Spot Instance Requests) = 0 vCPUs in us-east-1" in message
    on_demand = "L-DB2E81BA (Running On-Demand G and VT instances) = 4 vCPUs in us-east-1"
    assert f"{on_demand}, 4 of them kept by minSize" in message


def test_spot_room_needs_no_on_demand_room() -> None:
    lines = report("prod", quotas(**{SPOT: 16.0, ON_DEMAND: 4.0}))
    assert any(line.startswith("hpaMinReplicas = 2") for line in lines)
    assert not any("on-demand nodes" in line for line in lines)


def test_headroom_the_quota_cannot_hold_is_a_warning_not_a_stop() -> None:
    """prod: 2 replicas and 1 placeholder, 1 pod per 4-vCPU node; the on-demand minSize node holds
    one replica. A spot quota of one node starts the other replica, and leaves the placeholder
    Pending: before, nothing said so (the check counted hpaMinReplicas only)."""
    lines = report("prod", quotas(**{SPOT: 4.0, ON_DEMAND: 4.0}))
    (line,) = [line for line in lines if line.startswith("gpuHeadroom = 1: ")]
    assert "3 GPU pods; the GPU groups' minSize nodes hold 1, new nodes must hold 2 more" in line
    (warning,) = [line for line in lines if "does not fit the GPU quotas" in line]
    assert warning.startswith("gpuHeadroom = 1 does not fit the GPU quotas")
    assert "room for 1 of the 2 pods that need new nodes, so 1 placeholder(s) stay Pending" in (
        warning
    )
    assert "GPUHeadroomPending" in warning
    assert "L-3819A6DF (All G and VT Spot Instance Requests) = 4 vCPUs in us-east-1" in warning


def test_headroom_on_the_on_demand_fallback_is_named() -> None:
    lines = report("prod", quotas(**{SPOT: 4.0, ON_DEMAND: 8.0}))
    assert any(
        line.startswith("the spot GPU quota leaves room for 1 of the 2 pods")
        and "warm placeholders run on on-demand nodes" in line
        for line in lines
    ), lines


def test_headroom_that_fits_is_reported_without_a_warning() -> None:
    lines = report("prod", quotas(**{SPOT: 16.0}))
    assert any(line.startswith("gpuHeadroom = 1: with hpaMinReplicas = 2") for line in lines)
    assert not any("placeholder" in line for line in lines)
    assert not any(line.startswith("gpuHeadroom") for line in report("dev", quotas()))


TIME_SLICED = {"timeSlicingReplicas": 2, "hpaMinReplicas": 2, "hpaMaxReplicas": 4}


def test_time_sliced_pods_share_a_node_as_far_as_their_requests_allow() -> None:
    # Two pods per GPU, and 1 CPU / 6Gi each fit a g6.xlarge (4 vCPUs, 16 GiB, less overhead): two
    # replicas on one node, 4 vCPUs of quota.
    small = {**TIME_SLICED, "podCpuRequest": "1", "podMemoryRequest": "6Gi"}
    cfg = load_stack_config("dev", small)
    lines: list[str] = []
    run_function(
        lambda: lines.extend(preflight.check(cfg)),
        {"aws:region": cfg.region},
        account=quotas(**{SPOT: 4.0}),
    )
    assert any("4 vCPUs and 2 pod(s) per node" in line for line in lines), lines
    # dev's own requests (2 CPUs, 8Gi) leave room for one pod per node whatever the GPU sharing.
    message = refused("dev", TIME_SLICED, quotas(**{SPOT: 4.0}))
    assert "need 8 vCPUs of new nodes for 2 pod(s)" in message


def test_fewest_vcpus_mixes_node_sizes() -> None:
    cfg = load_stack_config("prod")
    rooms = preflight.gpu_rooms(cfg, lambda t: preflight.GPU_INSTANCE_TYPES[t].vcpus)
    spot = [r for r in rooms if r.kind.code == SPOT]
    # One pod per node everywhere: the xlarge group (8 nodes of 4 vCPUs) first, then 2xlarge.
    fewest = preflight.fewest_vcpus(spot, 10)
    assert fewest[1] == 4
    assert fewest[8] == 32
    assert fewest[10] == 32 + 2 * 8


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
