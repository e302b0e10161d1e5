"""Every metric name the alert rules and the dashboard may use, by the exporter that produces it.

A misspelt metric name is not a PromQL syntax error: the query parses, returns nothing, and the
panel or alert stays silent forever. So the gate checks each name against what the exporters really
expose.
"""

from __future__ import annotations

from service import contract

HISTOGRAM_SUFFIXES = ("_bucket", "_sum", "_count")

# The service's histograms (see the contract's docstrings); Prometheus exposes each as
# _bucket/_sum/_count.
SERVICE_HISTOGRAMS = frozenset(
    {contract.REQUEST_DURATION_SECONDS, contract.BATCH_SIZE, contract.BATCH_TOKENS}
)

# dcgm-exporter's default counters (etc/default-counters.csv in NVIDIA/dcgm-exporter), which the
# chart ships. https://github.com/NVIDIA/dcgm-exporter/blob/main/etc/default-counters.csv
DCGM_DEFAULT_COUNTERS = frozenset(
    {
        "DCGM_FI_DEV_SM_CLOCK",
        "DCGM_FI_DEV_MEM_CLOCK",
        "DCGM_FI_DEV_MEMORY_TEMP",
        "DCGM_FI_DEV_GPU_TEMP",
        "DCGM_FI_DEV_POWER_USAGE",
        "DCGM_FI_DEV_TOTAL_ENERGY_CONSUMPTION",
        "DCGM_FI_DEV_PCIE_TX_THROUGHPUT",
        "DCGM_FI_DEV_PCIE_RX_THROUGHPUT",
        "DCGM_FI_DEV_PCIE_REPLAY_COUNTER",
        "DCGM_FI_DEV_GPU_UTIL",
        "DCGM_FI_DEV_MEM_COPY_UTIL",
        "DCGM_FI_DEV_ENC_UTIL",
        "DCGM_FI_DEV_DEC_UTIL",
        "DCGM_FI_DEV_XID_ERRORS",
        "DCGM_FI_DEV_FB_FREE",
        "DCGM_FI_DEV_FB_USED",
        "DCGM_FI_DEV_NVLINK_BANDWIDTH_TOTAL",
        "DCGM_FI_DEV_VGPU_LICENSE_STATUS",
        "DCGM_FI_DEV_UNCORRECTABLE_REMAPPED_ROWS",
        "DCGM_FI_DEV_CORRECTABLE_REMAPPED_ROWS",
        "DCGM_FI_DEV_ROW_REMAP_FAILURE",
    }
)

# kube-state-metrics v2 series for the objects the alerts and the dashboard watch (Deployments,
# HPAs, Pods, Nodes). https://github.com/kubernetes/kube-state-metrics/tree/main/docs/metrics
KUBE_STATE_METRICS = frozenset(
    {
        "kube_deployment_spec_replicas",
        "kube_deployment_status_replicas",
        "kube_deployment_status_replicas_available",
        "kube_deployment_status_replicas_ready",
        "kube_deployment_status_replicas_unavailable",
        "kube_deployment_status_replicas_updated",
        "kube_horizontalpodautoscaler_spec_max_replicas",
        "kube_horizontalpodautoscaler_spec_min_replicas",
        "kube_horizontalpodautoscaler_spec_target_metric",
        "kube_horizontalpodautoscaler_status_current_replicas",
        "kube_horizontalpodautoscaler_status_desired_replicas",
        "kube_horizontalpodautoscaler_status_condition",
        "kube_pod_info",
        "kube_pod_status_phase",
        "kube_pod_status_ready",
        "kube_pod_container_resource_requests",
        "kube_pod_container_resource_limits",
        "kube_pod_container_status_restarts_total",
        "kube_node_info",
        "kube_node_labels",
        "kube_node_spec_taint",
        "kube_node_status_allocatable",
        "kube_node_status_capacity",
        "kube_node_status_condition",
    }
)


PROMETHEUS_SERIES = frozenset({"ALERTS", "ALERTS_FOR_STATE"})
"""Series Prometheus writes itself for its alerting rules."""


def metric_source(name: str) -> str | None:
    """Which exporter exposes `name` ("service", "dcgm-exporter", "kube-state-metrics",
    "prometheus"), or None."""
    if name in contract.ALL_METRICS:
        return "service"
    for suffix in HISTOGRAM_SUFFIXES:
        if name.endswith(suffix) and name.removesuffix(suffix) in SERVICE_HISTOGRAMS:
            return "service"
    if name in DCGM_DEFAULT_COUNTERS:
        return "dcgm-exporter"
    if name in KUBE_STATE_METRICS:
        return "kube-state-metrics"
    if name in PROMETHEUS_SERIES:
        return "prometheus"
    return None


UNKNOWN_METRIC_HINT = (
    "not a metric of service/contract.py, the DCGM exporter's default counters, "
    "kube-state-metrics or Prometheus' ALERTS "
    "(checks/metric_catalog.py); a misspelt name parses but matches nothing"
)
