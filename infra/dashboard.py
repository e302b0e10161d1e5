"""The Grafana dashboard of the inference service, generated from the names in service/contract.py.

`dashboard()` returns the dashboard as a dict; the monitoring component deploys it as a ConfigMap
labelled for the Grafana sidecar, and `python -m infra.dashboard` writes the committed export
(dashboards/gpu-inference.json) that teams import by hand. A test keeps the two equal, and `make
check` parses every expression with promtool and checks every metric name against the exporters.

Panels read three exporters: the model server (series carry `namespace` and `pod`), the DCGM
exporter (whose samples carry the workload's `namespace` and `pod`, see infra/scrape.py) and
kube-state-metrics (HPA and node state; spot capacity needs the node label
`eks.amazonaws.com/capacityType` in its `metricLabelsAllowlist`).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from infra import gpu_spec
from service import contract

EXPORT_PATH = Path(__file__).resolve().parent.parent / "dashboards" / "gpu-inference.json"
DATASOURCE = {"type": "prometheus", "uid": "${datasource}"}
_RATE = "[$__rate_interval]"
_WIDTH = 24  # Grafana's grid is 24 columns wide.
_NS = 'namespace="$namespace"'
# Probes hit /health and /ready every few seconds; traffic panels show the API only, and latency
# and 429s the routes that queue model work (as the alerts read them).
_API = f'{_NS}, route=~"{contract.OPENAI_BASE_PATH}/.*"'
_INFERENCE = f"{_NS}, {contract.inference_routes_selector()}"
KSM_GPU_RESOURCE = "nvidia_com_gpu"
ALERTS_SERIES = "ALERTS"
"""Prometheus' own series of its alerting rules (labels: alertname, alertstate, the rule's
labels)."""
CAPACITY_TYPE_LABEL = "label_eks_amazonaws_com_capacity_type"
"""kube-state-metrics' name for the node label eks.amazonaws.com/capacityType (SPOT or
ON_DEMAND)."""


def dashboard(
    *,
    namespace: str = "inference",
    hpa: str = "embeddings",
    uid: str = "gpu-inference",
    title: str = "GPU inference",
) -> dict[str, Any]:
    """The dashboard; `namespace` is the default of its namespace variable, `hpa` the HPA it
    follows."""
    hpa_sel = f'{_NS}, horizontalpodautoscaler="{hpa}"'
    rows: list[tuple[str, list[dict[str, Any]]]] = [
        ("Traffic", _traffic_panels()),
        ("Batching", _batching_panels()),
        ("Autoscaling", _autoscaling_panels(hpa_sel)),
        ("GPU", _gpu_panels()),
    ]
    return {
        "uid": uid,
        "title": title,
        "description": "Embeddings on spot GPU nodes: traffic, batching, autoscaling, GPUs.",
        "tags": ["gpu-inference", "embeddings", "gpu"],
        "editable": True,
        "graphTooltip": 1,
        "refresh": "30s",
        "schemaVersion": 39,
        "time": {"from": "now-6h", "to": "now"},
        "timezone": "browser",
        "annotations": {"list": [_alerts_annotation()]},
        "links": [],
        "templating": {"list": _variables(namespace)},
        "panels": _layout(rows),
    }


def _alerts_annotation() -> dict[str, Any]:
    """The alerts of infra/alerts.py as red regions on every panel, from Prometheus' own `ALERTS`
    series: the namespace's alerts and the cluster's GPU alerts (no namespace label). Opened from
    a page, the dashboard shows when the alert started next to what the traffic and the GPUs did.

    Grafana's Prometheus annotation support reads `target.expr` and the top-level `titleFormat`,
    `textFormat` and `tagKeys` (PrometheusAnnotationSupport in grafana/grafana's prometheus
    package, annotations.ts)."""
    return {
        "name": "Firing alerts",
        "datasource": DATASOURCE,
        "enable": True,
        "hide": False,
        "iconColor": "red",
        "target": {
            "expr": f'{ALERTS_SERIES}{{alertstate="firing", namespace=~"$namespace|"}}',
            "interval": "1m",
            "refId": "Anno",
        },
        "titleFormat": "{{alertname}}",
        "textFormat": "{{severity}}: {{namespace}}{{deployment}}{{Hostname}}",
        "tagKeys": "severity",
    }


def _variables(namespace: str) -> list[dict[str, Any]]:
    return [
        {
            "name": "datasource",
            "label": "Data source",
            "type": "datasource",
            "query": "prometheus",
            "current": {},
            "hide": 0,
        },
        {
            "name": "namespace",
            "label": "Namespace",
            "type": "query",
            "datasource": DATASOURCE,
            "query": {
                "query": f"label_values({contract.READY}, namespace)",
                "refId": "namespace",
            },
            "definition": f"label_values({contract.READY}, namespace)",
            "current": {"text": namespace, "value": namespace},
            "refresh": 2,
            "sort": 1,
            "hide": 0,
        },
    ]


def _traffic_panels() -> list[dict[str, Any]]:
    requests = contract.REQUESTS_TOTAL
    duration = f"{contract.REQUEST_DURATION_SECONDS}_bucket"
    return [
        _panel(
            "Requests per second",
            "API requests by route and HTTP status.",
            "reqps",
            [
                _target(
                    f"sum by (route, status) (rate({requests}{{{_API}}}{_RATE}))",
                    "{{route}} {{status}}",
                )
            ],
        ),
        _panel(
            "Latency p50 / p95",
            "Time from request received to response sent, queueing included, of the routes that "
            "embed.",
            "s",
            [
                _target(
                    f"histogram_quantile({q}, sum by (le) "
                    f"(rate({duration}{{{_INFERENCE}}}{_RATE})))",
                    f"p{round(q * 100)}",
                )
                for q in (0.5, 0.95)
            ],
        ),
        _panel(
            "Rejected with 429",
            "Requests refused because the pod held all the work it can finish within its "
            "admission target (maxQueueMs), or shed when that late: the service needs "
            "more replicas.",
            "reqps",
            [
                _target(
                    f'sum(rate({requests}{{{_INFERENCE}, status="429"}}{_RATE}))',
                    "429/s",
                ),
                _target(
                    f'sum(rate({requests}{{{_INFERENCE}, status="429"}}{_RATE}))'
                    f" / sum(rate({requests}{{{_INFERENCE}}}{_RATE}))",
                    "share of requests",
                ),
            ],
        ),
        _panel(
            "Refused by the HTTP layer",
            "Requests and connections cut off before any route, by reason (malformed, heads too "
            "large or too slow, bodies too slow, connections past the limit): abuse or a broken "
            "client, never load.",
            "reqps",
            [
                _target(
                    f"sum by (reason) (rate({contract.HTTP_REJECTIONS_TOTAL}{{{_NS}}}{_RATE}))",
                    "{{reason}}",
                )
            ],
        ),
        _panel(
            "Open connections per pod",
            "HTTP connections on the API port, idle keep-alive ones included (the server's "
            "connection limit applies to this).",
            "short",
            [_target(f"sum by (pod) ({contract.CONNECTIONS_OPEN}{{{_NS}}})", "{{pod}}")],
        ),
    ]


def _batching_panels() -> list[dict[str, Any]]:
    batch = contract.BATCH_SIZE
    return [
        _panel(
            "In-flight requests per pod",
            "Requests accepted and not yet answered: the HPA's primary signal.",
            "short",
            [_target(f"sum by (pod) ({contract.REQUESTS_IN_FLIGHT}{{{_NS}}})", "{{pod}}")],
        ),
        _panel(
            "Queue depth per pod",
            "Inputs and tokens waiting for the next forward pass.",
            "short",
            [
                _target(f"sum by (pod) ({contract.QUEUE_ITEMS}{{{_NS}}})", "{{pod}} inputs"),
                _target(f"sum by (pod) ({contract.QUEUE_TOKENS}{{{_NS}}})", "{{pod}} tokens"),
            ],
        ),
        _panel(
            "Queued work per pod",
            "Seconds of GPU work queued, from the measured speed: admission keeps it near the "
            "target (maxQueueMs) under overload.",
            "s",
            [_target(f"sum by (pod) ({contract.QUEUE_SECONDS}{{{_NS}}})", "{{pod}}")],
        ),
        _panel(
            "Batch size",
            "Inputs per forward pass: mean and p95. Small batches under load mean the queue is "
            "empty.",
            "short",
            [
                _target(
                    f"sum(rate({batch}_sum{{{_NS}}}{_RATE})) / "
                    f"sum(rate({batch}_count{{{_NS}}}{_RATE}))",
                    "mean",
                ),
                _target(
                    f"histogram_quantile(0.95, sum by (le) (rate({batch}_bucket{{{_NS}}}{_RATE})))",
                    "p95",
                ),
            ],
        ),
        _panel(
            "Tokens per second",
            "Tokens embedded, per pod and in total; truncated inputs are counted separately.",
            "short",
            [
                _target(f"sum by (pod) (rate({contract.TOKENS_TOTAL}{{{_NS}}}{_RATE}))", "{{pod}}"),
                _target(f"sum(rate({contract.TOKENS_TOTAL}{{{_NS}}}{_RATE}))", "total"),
                _target(
                    f"sum(rate({contract.TRUNCATED_INPUTS_TOTAL}{{{_NS}}}{_RATE}))",
                    "truncated inputs/s",
                ),
            ],
        ),
    ]


def _autoscaling_panels(hpa_sel: str) -> list[dict[str, Any]]:
    gpu_taint = f'key="{gpu_spec.GPU_TAINT.key}", effect="{gpu_spec.GPU_TAINT.effect}"'
    return [
        _panel(
            "Replicas vs HPA",
            "Current and desired replicas against the HPA's bounds, and pods ready to serve.",
            "short",
            [
                _target(f"kube_horizontalpodautoscaler_status_{kind}_replicas{{{hpa_sel}}}", kind)
                for kind in ("current", "desired")
            ]
            + [
                _target(f"kube_horizontalpodautoscaler_spec_{bound}_replicas{{{hpa_sel}}}", bound)
                for bound in ("min", "max")
            ]
            + [_target(f"sum({contract.READY}{{{_NS}}})", "ready")],
        ),
        _panel(
            "In-flight per pod vs HPA target",
            "The HPA adds pods while the average exceeds its target.",
            "short",
            [
                _target(f"avg({contract.REQUESTS_IN_FLIGHT}{{{_NS}}})", "average per pod"),
                _target(
                    f"kube_horizontalpodautoscaler_spec_target_metric{{{hpa_sel}, "
                    f'metric_name="{contract.REQUESTS_IN_FLIGHT}"}}',
                    "target",
                ),
            ],
        ),
        _panel(
            "GPU nodes (spot vs on-demand)",
            "Nodes carrying the GPU taint, by EC2 capacity type, and GPUs the cluster can "
            "schedule.",
            "short",
            [
                _target(
                    f"count by ({CAPACITY_TYPE_LABEL}) (kube_node_labels"
                    f" and on (node) kube_node_spec_taint{{{gpu_taint}}})",
                    f"{{{{{CAPACITY_TYPE_LABEL}}}}}",
                ),
                _target(f"count(kube_node_spec_taint{{{gpu_taint}}})", "GPU nodes"),
                _target(
                    f'sum(kube_node_status_allocatable{{resource="{KSM_GPU_RESOURCE}"}})',
                    "allocatable GPUs",
                ),
            ],
        ),
    ]


def _gpu_panels() -> list[dict[str, Any]]:
    on_pod = f'{_NS}, pod!=""'
    return [
        _panel(
            "GPU utilisation per pod",
            "DCGM_FI_DEV_GPU_UTIL of the GPU each pod holds (DCGM attributes GPUs to pods).",
            "percent",
            [_target(f"avg by (pod) (DCGM_FI_DEV_GPU_UTIL{{{on_pod}}})", "{{pod}}")],
        ),
        _panel(
            "GPU memory per pod",
            "Frame buffer used by each pod's GPU; PyTorch's caching allocator keeps what it once "
            "used.",
            "mbytes",
            [_target(f"sum by (pod) (DCGM_FI_DEV_FB_USED{{{on_pod}}})", "{{pod}} used")],
        ),
        _panel(
            "GPU memory used (share)",
            "Used / (used + free) per pod's GPU; the GPUMemoryNearlyFull alert fires above 95%.",
            "percentunit",
            [
                _target(
                    f"sum by (pod) (DCGM_FI_DEV_FB_USED{{{on_pod}}})"
                    f" / (sum by (pod) (DCGM_FI_DEV_FB_USED{{{on_pod}}})"
                    f" + sum by (pod) (DCGM_FI_DEV_FB_FREE{{{on_pod}}}))",
                    "{{pod}}",
                )
            ],
        ),
    ]


def _target(expr: str, legend: str) -> dict[str, Any]:
    return {"datasource": DATASOURCE, "expr": expr, "legendFormat": legend, "range": True}


def _panel(
    title: str, description: str, unit: str, targets: list[dict[str, Any]]
) -> dict[str, Any]:
    return {
        "type": "timeseries",
        "title": title,
        "description": description,
        "datasource": DATASOURCE,
        "fieldConfig": {"defaults": {"unit": unit, "min": 0}, "overrides": []},
        "options": {
            "legend": {"displayMode": "list", "placement": "bottom", "showLegend": True},
            "tooltip": {"mode": "multi", "sort": "desc"},
        },
        "targets": [{**t, "refId": chr(ord("A") + i)} for i, t in enumerate(targets)],
    }


def _layout(rows: list[tuple[str, list[dict[str, Any]]]]) -> list[dict[str, Any]]:
    """Give every panel an id and a grid position: a row header, then up to three panels per
    line."""
    panels: list[dict[str, Any]] = []
    y = 0
    for row_title, row_panels in rows:
        panels.append(
            {
                "type": "row",
                "title": row_title,
                "collapsed": False,
                "gridPos": {"h": 1, "w": _WIDTH, "x": 0, "y": y},
                "panels": [],
            }
        )
        y += 1
        per_line = 3 if len(row_panels) != 4 else 4
        width = _WIDTH // per_line
        for i, panel in enumerate(row_panels):
            line, column = divmod(i, per_line)
            panel["gridPos"] = {"h": 8, "w": width, "x": column * width, "y": y + line * 8}
            panels.append(panel)
        y += 8 * ((len(row_panels) + per_line - 1) // per_line)
    for panel_id, panel in enumerate(panels, start=1):
        panel["id"] = panel_id
    return panels


def render(board: dict[str, Any]) -> str:
    """The committed export's exact text: stable key order, two-space indent, trailing newline."""
    return json.dumps(board, indent=2, ensure_ascii=False) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Write the Grafana dashboard JSON export.")
    parser.add_argument(
        "--out", type=Path, default=EXPORT_PATH, help="file to write ('-' for stdout)"
    )
    args = parser.parse_args(argv)
    text = render(dashboard())
    if str(args.out) == "-":
        sys.stdout.write(text)
    else:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
