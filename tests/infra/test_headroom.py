"""Warm GPU headroom on the rendered stacks: what the scheduler and cluster-autoscaler read of the
placeholders, against the inference Deployment they stand in for."""

from __future__ import annotations

import signal
import subprocess
import sys
import time
from collections.abc import Mapping, Sequence
from typing import Any

import pytest

from infra import gpu_spec, headroom, inference, versions
from infra.config import ConfigError
from rehearsal.budget import find, flags, only_container, pod_template
from rehearsal.mockengine import Inventory, Resource, load_stack_config, run_stack

Objects = Sequence[Mapping[str, Any]]


def placeholders(objects: Objects) -> Mapping[str, Any]:
    return find(objects, "Deployment", headroom.APP_NAME)


def server(objects: Objects) -> Mapping[str, Any]:
    return find(objects, "Deployment", inference.APP_NAME)


def priority(objects: Objects, pod: Mapping[str, Any]) -> tuple[int, str]:
    """What the scheduler resolves: the class's value and preemption policy (its defaults when
    the pod names no class: 0, PreemptLowerPriority)."""
    name = pod.get("priorityClassName")
    if name is None:
        return 0, "PreemptLowerPriority"
    if name in ("system-node-critical", "system-cluster-critical"):
        return 2_000_000_000, "PreemptLowerPriority"
    cls = find(objects, "PriorityClass", name)
    return int(cls["value"]), cls.get("preemptionPolicy", "PreemptLowerPriority")


def expendable_cutoff(objects: Objects) -> int:
    container = only_container(find(objects, "Deployment", "cluster-autoscaler"))
    return int(
        flags(container).get("expendable-pods-priority-cutoff", headroom.DEFAULT_EXPENDABLE_CUTOFF)
    )


def test_the_cutoff_was_read_at_the_pinned_autoscaler() -> None:
    """The -10 default and its strict `<` are cluster-autoscaler source, not this program's: a pin
    that moves past the release they were read at must be re-read before the placeholders' priority
    can be trusted to trigger scale-ups."""
    assert versions.CLUSTER_AUTOSCALER.app_version == headroom.EXPENDABLE_READ_AT, (
        f"cluster-autoscaler is pinned at {versions.CLUSTER_AUTOSCALER.app_version}; "
        f"infra/headroom.py read the expendable cutoff at {headroom.EXPENDABLE_READ_AT}: re-read "
        "config/flags/flags.go and core/utils/expendable.go at the new tag"
    )


def test_prod_keeps_one_warm_gpu_and_dev_none(prod: Inventory, dev: Inventory) -> None:
    assert placeholders(prod.cluster_objects())["spec"]["replicas"] == 1
    with pytest.raises(LookupError):
        placeholders(dev.cluster_objects())


def test_placeholders_ask_for_what_the_next_replica_needs(prod: Inventory) -> None:
    objects = prod.cluster_objects()
    real, spare = pod_template(server(objects)), pod_template(placeholders(objects))
    (real_container,) = real["containers"]
    (spare_container,) = spare["containers"]
    # The autoscaler simulates the pending placeholder on each group's template: same taint
    # toleration, node affinity and requests pick the same group, and the replica fits in its place.
    assert spare["tolerations"] == real["tolerations"] == [gpu_spec.toleration()]
    assert spare["affinity"] == real["affinity"]
    assert spare_container["resources"]["requests"] == real_container["resources"]["requests"]
    assert spare_container["resources"]["requests"][gpu_spec.GPU_RESOURCE] == "1"
    assert spare.get("nodeSelector") == real.get("nodeSelector")
    assert [c["topologyKey"] for c in spare["topologySpreadConstraints"]] == [
        c["topologyKey"] for c in real["topologySpreadConstraints"]
    ]
    # The spare node pulls the very image the replica runs.
    assert spare_container["image"] == real_container["image"]
    assert "@sha256:" in spare_container["image"]


def test_a_replica_preempts_a_placeholder_and_nothing_else_does_worse(prod: Inventory) -> None:
    objects = prod.cluster_objects()
    spare_priority, spare_policy = priority(objects, pod_template(placeholders(objects)))
    real_priority, real_policy = priority(objects, pod_template(server(objects)))
    assert real_priority > spare_priority
    assert real_policy == "PreemptLowerPriority"
    # Placeholders only take free capacity.
    assert spare_policy == "Never"
    # Pending placeholders still make cluster-autoscaler add nodes (not expendable: priority <
    # cutoff is).
    assert spare_priority >= expendable_cutoff(objects)
    # Below every real workload of the cluster: any other pod may take their capacity.
    others = [
        o
        for o in objects
        if o["kind"] in ("Deployment", "StatefulSet", "DaemonSet")
        and o["metadata"]["name"] != headroom.APP_NAME
    ]
    assert others
    for workload in others:
        value, _ = priority(objects, pod_template(workload))
        assert value > spare_priority, workload["metadata"]["name"]


def test_placeholder_only_waits_locked_down(prod: Inventory) -> None:
    objects = prod.cluster_objects()
    spare = pod_template(placeholders(objects))
    (container,) = spare["containers"]
    assert container["command"] == list(headroom.WAIT_COMMAND)
    assert "ports" not in container
    assert "args" not in container
    assert spare["automountServiceAccountToken"] is False
    assert spare["securityContext"]["runAsNonRoot"] is True
    context = container["securityContext"]
    assert context["readOnlyRootFilesystem"] is True
    assert context["allowPrivilegeEscalation"] is False
    assert context["capabilities"] == {"drop": ["ALL"]}
    policy = find(objects, "NetworkPolicy", headroom.APP_NAME)
    assert policy["spec"]["podSelector"]["matchLabels"] == headroom.SELECTOR
    assert sorted(policy["spec"]["policyTypes"]) == ["Egress", "Ingress"]
    assert "ingress" not in policy["spec"]
    assert "egress" not in policy["spec"]
    namespace = find(objects, "Namespace", headroom.NAMESPACE)
    assert namespace["metadata"]["labels"]["pod-security.kubernetes.io/enforce"] == "restricted"


def test_wait_command_exits_at_once_on_sigterm() -> None:
    """Preemption sends SIGTERM: the GPU is free as soon as the command exits."""
    program = [sys.executable, *headroom.WAIT_COMMAND[1:]]
    process = subprocess.Popen(program)
    try:
        time.sleep(0.5)  # let the interpreter install its handler (not a timing assertion)
        assert process.poll() is None, "the placeholder command must keep running"
        process.send_signal(signal.SIGTERM)
        assert process.wait(timeout=30) == 0
    finally:
        if process.poll() is None:
            process.kill()


def test_placeholder_count_follows_the_schedule_when_there_is_one(prod: Inventory) -> None:
    """Without servingHours Pulumi owns the count; with it, the schedule does (ignoreChanges)."""
    assert placeholder_resource(prod).ignore_changes == ()
    hours = {
        "timezone": "UTC",
        "windows": [{"days": ["mon-fri"], "start": "08:00", "end": "18:00"}],
    }
    scheduled = placeholder_resource(run_stack("prod", {"servingHours": hours}))
    assert scheduled.ignore_changes == ("spec.replicas",)
    # Zero at creation: the schedule's converge Job sets the current window's count
    # (tests/infra/test_schedule.py).
    assert scheduled.inputs["spec"]["replicas"] == 0


def placeholder_resource(inventory: Inventory) -> Resource:
    (found,) = [
        r
        for r in inventory.k8s_resources()
        if r.type == "kubernetes:apps/v1:Deployment"
        and r.inputs["metadata"]["name"] == headroom.APP_NAME
    ]
    return found


def test_headroom_beyond_the_gpu_groups_is_refused() -> None:
    with pytest.raises(ConfigError) as error:
        load_stack_config("dev", {"gpuHeadroom": 2})
    assert "gpu-inference:gpuHeadroom = 2" in str(error.value)
    assert "at most 1" in str(error.value)
