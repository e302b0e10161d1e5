"""The NVIDIA device plugin and the DCGM exporter, from their upstream charts, on GPU nodes only.

The device plugin advertises `nvidia.com/gpu` to the kubelet (optionally time-sliced into several
schedulable replicas per GPU); the DCGM exporter publishes per-GPU telemetry attributed to the pod
using each GPU, which Prometheus scrapes (infra/scrape.py) and prometheus-adapter turns into the
HPA's GPU utilisation metric. Both tolerate the GPU taint and are pinned to GPU nodes through
infra/gpu_spec.py, the one GPU node spec.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Final

import pulumi
import pulumi_kubernetes as k8s
import yaml

from infra import gpu_spec, scrape, versions
from infra.charts import chart_args
from infra.namespaces import pod_security_namespace

NAMESPACE: Final = "gpu-system"
"""Where the device plugin and the DCGM exporter run."""
DEVICE_PLUGIN_CONFIG_NAME: Final = "default"
MIG_STRATEGY: Final = "none"
"""No MIG partitions: the instance types' GPUs (T4, A10G, L4, L40S, V100) do not support MIG."""
DEVICE_LIST_STRATEGY: Final = "envvar"
"""How the plugin hands GPUs to containers: the NVIDIA_VISIBLE_DEVICES variable (its default)."""
KUBELET_POD_RESOURCES_PATH: Final = "/var/lib/kubelet/pod-resources"
"""Where the kubelet's pod-resources socket lives on EKS AL2023 nodes; dcgm-exporter reads it to map
each GPU to the pod holding it (the chart mounts it read-only)."""


@dataclass(frozen=True)
class GpuStackArgs:
    namespace: str
    """Namespace for both DaemonSets (Pod Security `privileged`: they need host paths and
    SYS_ADMIN)."""
    time_slicing_replicas: int
    """Schedulable `nvidia.com/gpu` per physical GPU; 1 disables time-slicing."""

    def __post_init__(self) -> None:
        if self.time_slicing_replicas < 1:
            raise ValueError(
                f"time_slicing_replicas={self.time_slicing_replicas}: "
                "must be >= 1 (1 = no time-slicing)"
            )


def _gpu_placement() -> dict[str, Any]:
    """Scheduling values shared by both charts: GPU nodes only, tolerating the GPU taint."""
    return {
        "tolerations": [gpu_spec.toleration()],
        "affinity": {"nodeAffinity": gpu_spec.node_affinity()},
    }


def time_slicing_config(replicas: int) -> str:
    """The device plugin's config file (v1 schema) sharing each GPU among `replicas` pods.

    failRequestsGreaterThanOne: a pod asking for 2 replicas would get no more GPU time than one, so
    reject it; renameByDefault false: pods keep requesting plain `nvidia.com/gpu`. See the chart's
    README, "Shared Access to GPUs with CUDA Time-Slicing" (NVIDIA/k8s-device-plugin).
    """
    config = {
        "version": "v1",
        "flags": {"migStrategy": MIG_STRATEGY},
        "sharing": {
            "timeSlicing": {
                "renameByDefault": False,
                "failRequestsGreaterThanOne": True,
                "resources": [{"name": gpu_spec.GPU_RESOURCE, "replicas": replicas}],
            }
        },
    }
    return yaml.safe_dump(config, sort_keys=False)


def device_plugin_values(args: GpuStackArgs) -> dict[str, Any]:
    values: dict[str, Any] = {
        **_gpu_placement(),
        "priorityClassName": "system-node-critical",
        # GPU feature discovery would also deploy node-feature-discovery cluster-wide; the node
        # groups already carry the labels the program schedules on (gpu_spec.GPU_NODE_LABELS).
        "gfd": {"enabled": False},
        # The chart sets none: a BestEffort plugin is the first pod the kubelet evicts under
        # memory pressure, and the node's GPUs disappear from the scheduler until it returns.
        "resources": {
            "requests": {"cpu": "50m", "memory": "64Mi"},
            "limits": {"memory": "256Mi"},
        },
    }
    if args.time_slicing_replicas > 1:
        values["config"] = {
            "map": {DEVICE_PLUGIN_CONFIG_NAME: time_slicing_config(args.time_slicing_replicas)},
            "default": DEVICE_PLUGIN_CONFIG_NAME,
        }
        # With a config map the chart cannot see which MIG and device-list strategies the config
        # uses, so it assumes MIG or volume mounts and adds CAP_SYS_ADMIN to the plugin instead of
        # dropping every capability (templates/_helpers.tpl `requiresCapSysAdmin` at v0.18.2).
        # Naming both here keeps the plugin unprivileged. They become the MIG_STRATEGY and
        # DEVICE_LIST_STRATEGY flags, which win over the config file (api/config/v1/flags.go
        # `updateFromCLIFlag`: a flag that is set replaces the file's value), so they equal what
        # time_slicing_config says and the plugin's defaults (cmd/nvidia-device-plugin/main.go).
        values["migStrategy"] = MIG_STRATEGY
        values["deviceListStrategy"] = DEVICE_LIST_STRATEGY
    return values


DCGM_EXPORTER_DELETED_DEFAULTS: Final = ("resources.limits.cpu",)
"""The chart's values.yaml sets limits.cpu 200m and Helm merges it into ours: the exporter would be
CPU-throttled while it collects every GPU's fields. Its CPU request is guaranteed; the limit
goes."""


def dcgm_exporter_values(args: GpuStackArgs) -> dict[str, Any]:
    """The exporter runs its own embedded DCGM host engine (the chart's arguments, no `-r`), next
    to the node monitoring agent's: infra/cluster.py says why both work."""
    env = []
    if args.time_slicing_replicas > 1:
        # Shared GPUs appear to the kubelet as replicas ("<uuid>::<n>"); without this the exporter
        # cannot map them back to pods and every sample loses its pod label.
        env.append({"name": "KUBERNETES_VIRTUAL_GPUS", "value": "true"})
    return {
        **_gpu_placement(),
        "priorityClassName": "system-node-critical",
        "kubeletPath": KUBELET_POD_RESOURCES_PATH,
        # No Prometheus Operator here: the ServiceMonitor CRD does not exist, Prometheus scrapes the
        # pods with scrape.dcgm_job (whose relabelling relies on the chart's `metrics` port name).
        "serviceMonitor": {"enabled": False},
        "service": {"enable": True, "port": 9400},
        "extraEnv": env,
        "resources": {
            "requests": {"cpu": "100m", "memory": "256Mi"},
            "limits": {"memory": "512Mi"},
        },
    }


class GpuStack(pulumi.ComponentResource):
    """Device plugin + DCGM exporter in their own privileged namespace."""

    def __init__(
        self, name: str, args: GpuStackArgs, opts: pulumi.ResourceOptions | None = None
    ) -> None:
        super().__init__("gpu-inference:gpu:GpuStack", name, None, opts)
        child = pulumi.ResourceOptions(parent=self)
        # Host paths (kubelet device-plugins and pod-resources sockets) and SYS_ADMIN for DCGM
        # profiling are only allowed at `privileged`; nothing else runs in this namespace.
        self.namespace = pod_security_namespace(
            f"{name}-namespace", args.namespace, "privileged", opts=child
        )
        in_namespace = pulumi.ResourceOptions(parent=self, depends_on=[self.namespace])
        self.device_plugin = k8s.helm.v4.Chart(
            f"{name}-device-plugin",
            chart_args(versions.NVIDIA_DEVICE_PLUGIN, args.namespace, device_plugin_values(args)),
            opts=in_namespace,
        )
        self.dcgm_exporter = k8s.helm.v4.Chart(
            f"{name}-dcgm-exporter",
            chart_args(
                versions.DCGM_EXPORTER,
                args.namespace,
                dcgm_exporter_values(args),
                delete=DCGM_EXPORTER_DELETED_DEFAULTS,
            ),
            opts=in_namespace,
        )
        self.namespace_name = args.namespace
        self.register_outputs(
            {
                "namespace": self.namespace.metadata.name,
                "dcgmScrapeApp": scrape.DCGM_APP_NAME,
            }
        )
