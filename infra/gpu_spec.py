"""The one GPU node spec: taint, labels and resource name.

Node group taints and labels, cluster-autoscaler node-template tags, and every toleration and node
affinity
(inference pods, device plugin, DCGM exporter) are derived from the values here, so they cannot
drift apart.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Final

GPU_RESOURCE: Final = "nvidia.com/gpu"
GPUS_PER_POD: Final = 1
"""What each inference pod requests of GPU_RESOURCE (one GPU, or one time-sliced share of it)."""


@dataclass(frozen=True)
class Taint:
    key: str
    value: str
    effect: str  # Kubernetes spelling: NoSchedule, NoExecute, PreferNoSchedule

    @property
    def eks_effect(self) -> str:
        """The EKS API spells effects NO_SCHEDULE, NO_EXECUTE, PREFER_NO_SCHEDULE."""
        return {
            "NoSchedule": "NO_SCHEDULE",
            "NoExecute": "NO_EXECUTE",
            "PreferNoSchedule": "PREFER_NO_SCHEDULE",
        }[self.effect]


GPU_TAINT: Final = Taint(key="nvidia.com/gpu", value="true", effect="NoSchedule")

GPU_PRESENT_LABEL: Final = "nvidia.com/gpu.present"
WORKLOAD_LABEL: Final = "gpu-inference.io/workload"
GPU_NODE_LABELS: Final = {GPU_PRESENT_LABEL: "true", WORKLOAD_LABEL: "gpu-inference"}

AUTOSCALER_TAG_PREFIX: Final = "k8s.io/cluster-autoscaler/node-template"

ACCELERATOR_LABEL: Final = "k8s.amazonaws.com/accelerator"
"""cluster-autoscaler's AWS GPU label: a node carrying it counts as a GPU node, so the autoscaler
waits for the
device plugin to advertise the GPUs instead of treating the fresh node as unable to run the pending
pod and
scaling up a second time; scale-down then judges the node by GPU utilisation."""

CAPACITY_TYPE_LABEL: Final = "eks.amazonaws.com/capacityType"
"""Set by EKS on every node of a managed group: SPOT or ON_DEMAND
(https://docs.aws.amazon.com/eks/latest/userguide/managed-node-groups.html). cluster-autoscaler must
see it on scale-from-zero templates too, or it could balance a spot scale-up onto on-demand groups
(see `infra/autoscaler.py` BALANCING_IGNORED_LABELS)."""

SYSTEM_NODE_LABELS: Final = {"gpu-inference.io/node-role": "system"}
"""The untainted on-demand group for cluster add-ons (autoscaler, Prometheus, controllers). Add-ons
select it
with `system_node_selector()` so they never hold a GPU node up or land on a spot node."""


def gpu_node_labels(accelerator: str) -> dict[str, str]:
    """Labels of a GPU node group: the shared GPU labels plus the autoscaler's accelerator label."""
    return {**GPU_NODE_LABELS, ACCELERATOR_LABEL: accelerator}


def system_node_selector() -> dict[str, str]:
    """nodeSelector for add-ons that belong on the system node group."""
    return dict(SYSTEM_NODE_LABELS)


def toleration() -> dict[str, Any]:
    """The toleration every pod that runs on GPU nodes carries (Kubernetes camelCase)."""
    return {
        "key": GPU_TAINT.key,
        "operator": "Equal",
        "value": GPU_TAINT.value,
        "effect": GPU_TAINT.effect,
    }


def node_affinity() -> dict[str, Any]:
    """Required node affinity to GPU nodes (pods must not land elsewhere)."""
    return {
        "requiredDuringSchedulingIgnoredDuringExecution": {
            "nodeSelectorTerms": [
                {
                    "matchExpressions": [
                        {"key": key, "operator": "In", "values": [value]}
                        for key, value in sorted(GPU_NODE_LABELS.items())
                    ]
                }
            ]
        }
    }


def autoscaler_node_template_tags(
    gpus_per_node: int, accelerator: str | None = None, capacity_type: str | None = None
) -> dict[str, str]:
    """Tags on a node group's Auto Scaling group so cluster-autoscaler can scale it up from zero.

    With no node to look at, the autoscaler learns labels, taints and extended resources from these
    tags:
    https://github.com/kubernetes/autoscaler/blob/master/cluster-autoscaler/cloudprovider/aws/README.md
    The capacity type label repeats what EKS's DescribeNodegroup tells the autoscaler, so the
    template matches the nodes even if that call fails (it is only logged).
    """
    labels = dict(gpu_node_labels(accelerator) if accelerator else GPU_NODE_LABELS)
    if capacity_type:
        labels[CAPACITY_TYPE_LABEL] = capacity_type
    tags = {f"{AUTOSCALER_TAG_PREFIX}/label/{k}": v for k, v in sorted(labels.items())}
    tags[f"{AUTOSCALER_TAG_PREFIX}/taint/{GPU_TAINT.key}"] = f"{GPU_TAINT.value}:{GPU_TAINT.effect}"
    tags[f"{AUTOSCALER_TAG_PREFIX}/resources/{GPU_RESOURCE}"] = str(gpus_per_node)
    return tags
