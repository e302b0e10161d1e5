"""Prometheus alert rules for the inference service and its GPU nodes.

`alert_rule_groups()` returns a rule file as a dict (`{"groups": [...]}`), the shape Prometheus
loads and the prometheus-community chart takes under `serverFiles`. The monitoring component puts it
into the chart values; `make check` renders it to a file and runs `promtool check rules` and the
unit tests in tests/checks/promtool/.

Series come from three exporters:
- the model server (names from service/contract.py), scraped per pod with `namespace` and `pod`
labels;
- kube-state-metrics (bundled with the Prometheus chart): Deployment, HPA, Pod and Node state;
- the DCGM exporter (default counters): per-GPU utilisation, memory and XID errors.

Standard library + service.contract only: this module is imported by the Pulumi program and by the
checks.
"""

from __future__ import annotations

import re
from typing import Any

from service import contract

_DURATION = re.compile(r"^([0-9]+(ms|s|m|h|d|w|y))+$")
# Kubernetes object names (RFC 1123 labels/subdomains): safe inside a PromQL string without
# escaping.
_K8S_NAME = re.compile(r"^[a-z0-9]([-a-z0-9.]*[a-z0-9])?$")

# kube-state-metrics spells extended resources with underscores (nvidia.com/gpu -> nvidia_com_gpu).
KSM_GPU_RESOURCE = "nvidia_com_gpu"
THROTTLED_STATUS = "429"
"""The `status` label value the server records for requests rejected by the bounded queue."""


def alert_rule_groups(
    *,
    namespace: str = "inference",
    deployment: str = "embeddings",
    hpa: str = "embeddings",
    not_ready_for: str = "15m",
    unavailable_for: str = "5m",
    wake_allowance: str = "20m",
    hpa_at_max_for: str = "15m",
    max_throttled_ratio: float = 0.05,
    throttled_for: str = "10m",
    p95_latency_seconds: float = 1.0,
    latency_for: str = "10m",
    gpu_pending_for: str = "10m",
    headroom_namespace: str = "gpu-headroom",
    headroom_deployment: str = "embeddings-headroom",
    headroom_pending_for: str = "15m",
    gpu_memory_used_ratio: float = 0.95,
    gpu_memory_for: str = "10m",
    rate_window: str = "5m",
) -> dict[str, Any]:
    """The alert rule file for one deployment of the inference service.

    Durations are Prometheus durations ("15m"); ratios are fractions in (0, 1]. `not_ready_for` is
    long by default because a new pod waits for a spot GPU node, pulls a multi-GB image and loads
    the model. The warm-GPU placeholders (infra/headroom.py) live in `headroom_namespace`. A
    Deployment at zero replicas (servingHours, infra/schedule.py) pages nobody, and
    for `wake_allowance` after it is scaled up from zero neither does its first cold start: a wake
    waits for a GPU node like any first pod (README "Scale-up time budget").
    """
    for key, value in (
        ("namespace", namespace),
        ("deployment", deployment),
        ("hpa", hpa),
        ("headroom_namespace", headroom_namespace),
        ("headroom_deployment", headroom_deployment),
    ):
        _require(bool(_K8S_NAME.match(value)), key, value, "a Kubernetes object name ([a-z0-9.-])")
    durations = {
        "not_ready_for": not_ready_for,
        "unavailable_for": unavailable_for,
        "wake_allowance": wake_allowance,
        "hpa_at_max_for": hpa_at_max_for,
        "throttled_for": throttled_for,
        "latency_for": latency_for,
        "gpu_pending_for": gpu_pending_for,
        "headroom_pending_for": headroom_pending_for,
        "gpu_memory_for": gpu_memory_for,
        "rate_window": rate_window,
    }
    for key, value in durations.items():
        _require(bool(_DURATION.match(value)), key, value, 'a Prometheus duration such as "15m"')
    for key, ratio in (
        ("max_throttled_ratio", max_throttled_ratio),
        ("gpu_memory_used_ratio", gpu_memory_used_ratio),
    ):
        _require(0 < ratio <= 1, key, ratio, "a fraction in (0, 1]")
    _require(p95_latency_seconds > 0, "p95_latency_seconds", p95_latency_seconds, "> 0 seconds")

    ns = f'namespace="{namespace}"'
    deploy = f'{ns}, deployment="{deployment}"'
    hpa_sel = f'{ns}, horizontalpodautoscaler="{hpa}"'
    # Probes hit /health and /ready every few seconds and the model list is cheap: only the routes
    # that queue model work count for throttling and latency.
    api = f"{ns}, {contract.inference_routes_selector()}"
    w = rate_window

    service_rules = [
        _alert(
            "InferencePodsNotReady",
            f"kube_deployment_spec_replicas{{{deploy}}}\n"
            f"  - kube_deployment_status_replicas_available{{{deploy}}}\n> 0",
            not_ready_for,
            "warning",
            "{{ $value }} inference pod(s) of {{ $labels.namespace }}/{{ $labels.deployment }} "
            "not ready",
            f"Wanted replicas have not been available for {not_ready_for}: pods are waiting for a "
            "GPU "
            "node, pulling the image, loading the model, or crash-looping. Check `kubectl -n "
            f"{namespace} get pods` and the pod events.",
        ),
        _alert(
            "InferenceUnavailable",
            f"kube_deployment_status_replicas_available{{{deploy}}} == 0\n"
            # Wanted for the whole allowance: not at zero (asleep), nor just woken from it.
            "and on (namespace, deployment)\n"
            f"min_over_time(kube_deployment_spec_replicas{{{deploy}}}[{wake_allowance}]) > 0",
            unavailable_for,
            "critical",
            "No ready inference pod in {{ $labels.namespace }}/{{ $labels.deployment }}",
            f"Every request fails: no pod has passed its readiness probe for {unavailable_for} "
            f"(after {wake_allowance} of wanted replicas: a wake from zero is a cold start).",
        ),
        _alert(
            "InferenceHPAAtMaxReplicas",
            f"kube_horizontalpodautoscaler_status_current_replicas{{{hpa_sel}}}\n"
            ">= on (namespace, horizontalpodautoscaler)\n"
            f"kube_horizontalpodautoscaler_spec_max_replicas{{{hpa_sel}}}",
            hpa_at_max_for,
            "warning",
            "HPA {{ $labels.namespace }}/{{ $labels.horizontalpodautoscaler }} at max replicas",
            f"The autoscaler has wanted more pods than its maximum for {hpa_at_max_for}; latency "
            "and "
            "429s rise from here. Raise the HPA maximum and the GPU node groups' max size, or add "
            "capacity.",
        ),
        _alert(
            "InferenceHighThrottleRate",
            f"sum by (namespace) (rate({contract.REQUESTS_TOTAL}{{{api}, "
            f'status="{THROTTLED_STATUS}"}}'
            f"[{w}]))\n"
            f"  / sum by (namespace) (rate({contract.REQUESTS_TOTAL}{{{api}}}[{w}]))\n"
            f"> {max_throttled_ratio:g}",
            throttled_for,
            "warning",
            "{{ $value | humanizePercentage }} of requests in {{ $labels.namespace }} rejected "
            "with 429",
            "The pods hold all the work they can finish within their admission target "
            "(maxQueueMs): the service needs more replicas than it has (check the HPA and GPU "
            f"capacity alerts). Threshold: {max_throttled_ratio:.0%} for {throttled_for}.",
        ),
        _alert(
            "InferenceHighLatencyP95",
            "histogram_quantile(0.95,\n"
            f"  sum by (namespace, le) (rate({contract.REQUEST_DURATION_SECONDS}_bucket{{{api}}}"
            f"[{w}]))\n"
            f") > {p95_latency_seconds:g}",
            latency_for,
            "warning",
            "p95 latency in {{ $labels.namespace }} is {{ $value | humanizeDuration }}",
            f"The 95th percentile of API request time has been above {p95_latency_seconds:g}s for "
            f"{latency_for}: requests wait in the queue (scale out) or batches are too large.",
        ),
    ]
    gpu_rules = [
        _alert(
            "InferenceGPUCapacityUnavailable",
            # Pods that wait for a GPU: not the servingHours scaler's Jobs (system nodes), whose
            # pending pod at night, with no GPU node left, is no GPU shortage.
            "sum by (namespace) (\n"
            f'  kube_pod_status_phase{{{ns}, phase="Pending"}} == 1\n'
            "  and on (namespace, pod)\n"
            f'  kube_pod_container_resource_requests{{{ns}, resource="{KSM_GPU_RESOURCE}"}}\n'
            ") > 0\n"
            "and on ()\n"
            f'(\n  (sum(kube_node_status_allocatable{{resource="{KSM_GPU_RESOURCE}"}}) or '
            "vector(0))\n"
            f'  - (sum(kube_pod_container_resource_requests{{resource="{KSM_GPU_RESOURCE}"}}\n'
            '        * on (namespace, pod) group_left () (kube_pod_status_phase{phase="Running"} '
            "== 1))"
            "\n     or vector(0))\n) <= 0",
            gpu_pending_for,
            "critical",
            "Inference pods in {{ $labels.namespace }} pending with no free GPU",
            f"Pods have been pending for {gpu_pending_for} and every GPU in the cluster is taken: "
            "cluster-autoscaler cannot add GPU nodes (spot capacity shortage in every offered type "
            "and zone, node group at max size, or an EC2 quota). Check the cluster-autoscaler logs "
            "and the node groups' Auto Scaling activity.",
        ),
        _alert(
            "GPUXidError",
            "DCGM_FI_DEV_XID_ERRORS > 0",
            "0m",
            "critical",
            "XID {{ $value }} on GPU {{ $labels.gpu }} of {{ $labels.Hostname }}",
            "The driver reported an XID error (the value is the XID code; e.g. 48 double-bit ECC, "
            "79 "
            "GPU fell off the bus). Pods on this GPU may return errors: cordon and drain the node "
            "so "
            "the node group replaces it.",
        ),
        _alert(
            "GPUMemoryNearlyFull",
            "DCGM_FI_DEV_FB_USED / (DCGM_FI_DEV_FB_USED + DCGM_FI_DEV_FB_FREE)\n"
            f"> {gpu_memory_used_ratio:g}",
            gpu_memory_for,
            "warning",
            "GPU {{ $labels.gpu }} of {{ $labels.Hostname }} memory {{ $value | humanizePercentage "
            "}}"
            " used",
            f"Frame buffer use has stayed above {gpu_memory_used_ratio:.0%} for {gpu_memory_for}: "
            "the "
            "next large batch may fail with CUDA out of memory. Lower the batch token budget or "
            "use a "
            "GPU with more memory.",
        ),
        _alert(
            "GPUHeadroomPending",
            # Wanted placeholders only: at zero (servingHours at night) there is nothing to keep.
            "sum by (namespace) (\n"
            f'  kube_pod_status_phase{{namespace="{headroom_namespace}", phase="Pending"}} == 1\n'
            ") > 0\n"
            "and on (namespace)\n"
            f'kube_deployment_spec_replicas{{namespace="{headroom_namespace}", '
            f'deployment="{headroom_deployment}"}} > 0',
            headroom_pending_for,
            "warning",
            "{{ $value }} warm-GPU placeholder(s) in {{ $labels.namespace }} pending",
            f"Placeholders of gpuHeadroom have been pending for {headroom_pending_for}: the GPU "
            "capacity they should keep warm is not there, so the next replica waits for a new node "
            '(README "Scale-up time budget", without headroom), while the cost floor still '
            "counts it. cluster-autoscaler cannot add their nodes: a GPU quota (the preview warns "
            "when gpuHeadroom does not fit), spot capacity, or the groups' maxSize. Check `kubectl "
            f"-n {headroom_namespace} get events` and the cluster-autoscaler logs.",
        ),
    ]
    return {
        "groups": [
            {"name": "inference-service", "rules": service_rules},
            {"name": "inference-gpu", "rules": gpu_rules},
        ]
    }


def _alert(
    name: str, expr: str, for_: str, severity: str, summary: str, description: str
) -> dict[str, Any]:
    rule: dict[str, Any] = {"alert": name, "expr": expr}
    if for_ != "0m":
        rule["for"] = for_
    rule["labels"] = {"severity": severity}
    rule["annotations"] = {"summary": summary, "description": description}
    return rule


def _require(ok: bool, key: str, value: object, allowed: str) -> None:
    if not ok:
        raise ValueError(f"alert_rule_groups: {key}={value!r} is invalid; expected {allowed}")
