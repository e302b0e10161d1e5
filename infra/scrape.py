"""Prometheus scrape jobs for the inference pods and the DCGM exporter, as plain data.

monitoring.py renders these jobs into the Prometheus chart's `extraScrapeConfigs`, and the
metrics-chain test (tests/infra/test_metrics_chain.py) runs a real Prometheus on the very same
dicts, with `static_configs` standing in for Kubernetes discovery. Keeping them as data is what
makes that test prove the deployed configuration.

The label collision with the DCGM exporter, and how it is handled
------------------------------------------------------------------
dcgm-exporter attributes each GPU to the pod using it (through the kubelet pod-resources socket) and
exports that workload's identity as the labels `pod`, `namespace` and `container`. The usual
Kubernetes relabelling also attaches the *exporter's own* pod and namespace as target labels `pod`
and `namespace`. With `honor_labels: false` Prometheus then renames the exporter's sample labels to
`exported_pod` and `exported_namespace`; with `honor_labels: true` the sample labels win, but an
idle GPU (no pod attached) then inherits the exporter's `pod` label and looks like a workload.

Choice: the DCGM job never attaches `pod`, `namespace` or `container` as target labels. The
exporter's identity is kept as `exporter_pod`, `exporter_namespace` and `node`, `honor_labels` stays
false (a target can never override `job`/`instance`), and the workload labels pass through
unrenamed. So GPU series carry the same `pod` and `namespace` labels as the service's own series,
one pair of adapter resource overrides serves both, and an idle GPU carries no `pod` at all.
Dashboards and alerts (infra/alerts.py, infra/dashboard.py) rely on this.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Final

from service import contract

INFERENCE_JOB: Final = "inference"
DCGM_JOB: Final = "dcgm-exporter"

DCGM_METRICS_PORT_NAME: Final = "metrics"
"""Container port name in the dcgm-exporter chart's DaemonSet (templates/daemonset.yaml, port
9400)."""
DCGM_APP_NAME: Final = "dcgm-exporter"
"""`app.kubernetes.io/name` of the dcgm-exporter chart's pods (its selectorLabels)."""

# Labels that Kubernetes pod discovery (`kubernetes_sd_configs: role: pod`) sets on every target.
# https://prometheus.io/docs/prometheus/latest/configuration/configuration/#pod
META_NAMESPACE: Final = "__meta_kubernetes_namespace"
META_POD_NAME: Final = "__meta_kubernetes_pod_name"
META_NODE_NAME: Final = "__meta_kubernetes_pod_node_name"
META_POD_PHASE: Final = "__meta_kubernetes_pod_phase"
META_CONTAINER_NAME: Final = "__meta_kubernetes_pod_container_name"
META_PORT_NAME: Final = "__meta_kubernetes_pod_container_port_name"
META_APP_NAME_LABEL: Final = "__meta_kubernetes_pod_label_app_kubernetes_io_name"


@dataclass(frozen=True)
class ScrapeSettings:
    """What the scrape jobs need to know about the cluster (plain strings: known at preview
    time)."""

    inference_namespace: str
    inference_app_name: str
    """`app.kubernetes.io/name` of the inference pods."""
    dcgm_namespace: str
    scrape_interval: str
    """Prometheus duration, e.g. "15s": how fresh the HPA's view of in-flight requests is."""


def _keep(source: str, regex: str) -> dict[str, Any]:
    return {"source_labels": [source], "regex": regex, "action": "keep"}


def _copy(source: str, target: str) -> dict[str, Any]:
    return {"source_labels": [source], "target_label": target, "action": "replace"}


def _drop_finished_pods() -> dict[str, Any]:
    # Completed or failed pods keep their discovery entry for a while; scraping them only produces
    # `up == 0`.
    return {"source_labels": [META_POD_PHASE], "regex": "Succeeded|Failed", "action": "drop"}


def inference_job(settings: ScrapeSettings) -> dict[str, Any]:
    """Scrape every inference pod's metrics listener (contract.METRICS_PORT) directly, one target
    per pod.

    Pods are discovered directly rather than through the Service's endpoints so that a pod which is
    not ready (starting or draining) is still scraped: its in-flight requests are exactly what the
    HPA must see.
    """
    return {
        "job_name": INFERENCE_JOB,
        "honor_labels": False,
        "scrape_interval": settings.scrape_interval,
        "metrics_path": contract.METRICS_PATH,
        "kubernetes_sd_configs": [
            {"role": "pod", "namespaces": {"names": [settings.inference_namespace]}}
        ],
        "relabel_configs": [
            _keep(META_APP_NAME_LABEL, settings.inference_app_name),
            _keep(META_PORT_NAME, contract.METRICS_PORT_NAME),
            _drop_finished_pods(),
            _copy(META_NAMESPACE, "namespace"),
            _copy(META_POD_NAME, "pod"),
            _copy(META_CONTAINER_NAME, "container"),
            _copy(META_NODE_NAME, "node"),
        ],
    }


def dcgm_job(settings: ScrapeSettings) -> dict[str, Any]:
    """Scrape the DCGM exporter on each GPU node; workload `pod`/`namespace` come from the samples
    (see above)."""
    return {
        "job_name": DCGM_JOB,
        "honor_labels": False,
        "scrape_interval": settings.scrape_interval,
        "metrics_path": "/metrics",
        "kubernetes_sd_configs": [
            {"role": "pod", "namespaces": {"names": [settings.dcgm_namespace]}}
        ],
        "relabel_configs": [
            _keep(META_APP_NAME_LABEL, DCGM_APP_NAME),
            _keep(META_PORT_NAME, DCGM_METRICS_PORT_NAME),
            _drop_finished_pods(),
            # Deliberately not `pod`/`namespace`: those belong to the workload the GPU is attributed
            # to.
            _copy(META_NAMESPACE, "exporter_namespace"),
            _copy(META_POD_NAME, "exporter_pod"),
            _copy(META_NODE_NAME, "node"),
        ],
    }


def scrape_jobs(settings: ScrapeSettings) -> list[dict[str, Any]]:
    """The jobs added to the Prometheus chart's default ones (which cover the cluster itself)."""
    return [inference_job(settings), dcgm_job(settings)]
