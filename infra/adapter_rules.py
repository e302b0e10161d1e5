"""prometheus-adapter rules generated from service/contract.py, and the adapter's query expansion.

The HPA asks the custom metrics API for `pods/*/<metric>` in the inference namespace;
prometheus-adapter answers by expanding a rule's `metricsQuery` template for the pods the HPA
selects and querying Prometheus. The rules are generated here from the contract's metric names, so a
renamed collector cannot silently starve the HPA, and `expand_metrics_query` reproduces the
adapter's expansion so tests can run the exact query against a real Prometheus.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Final, Literal

from infra import scrape
from service import contract

DCGM_GPU_UTIL: Final = "DCGM_FI_DEV_GPU_UTIL"
"""DCGM field exported by dcgm-exporter's default counters: GPU utilisation in percent (0-100)."""
GPU_UTILIZATION_METRIC: Final = "inference_gpu_utilization_percent"
"""Custom-metrics API name of the per-pod GPU utilisation (DCGM series attributed to the workload
pod)."""

RELIST_INTERVAL: Final = "30s"
"""How often the adapter re-discovers series. The chart's default (1m) delays a new pod's first HPA
sample; 30 s is two default scrape intervals, short enough for scale-up, long enough not to load
Prometheus."""

NAMESPACE_LABEL: Final = "namespace"
POD_LABEL: Final = "pod"

Source = Literal["service", "dcgm"]


@dataclass(frozen=True)
class PodMetricRule:
    """One per-pod custom metric: a Prometheus series, how it is aggregated per pod, its API
    name."""

    series: str
    api_name: str
    aggregation: Literal["sum", "avg", "max"]
    job: str
    source: Source

    def to_adapter_rule(self) -> dict[str, Any]:
        """The rule in prometheus-adapter's config format (docs/config.md in
        kubernetes-sigs/prometheus-adapter)."""
        job = f'job="{self.job}"'
        return {
            "seriesQuery": f'{self.series}{{{NAMESPACE_LABEL}!="",{POD_LABEL}!="",{job}}}',
            "resources": {
                "overrides": {
                    NAMESPACE_LABEL: {"resource": "namespace"},
                    POD_LABEL: {"resource": "pod"},
                }
            },
            "name": {"matches": f"^{self.series}$", "as": self.api_name},
            # The job matcher keeps a second scrape of the same series (e.g. by annotation) from
            # being counted twice by `sum`.
            "metricsQuery": (
                f"{self.aggregation}(<<.Series>>{{<<.LabelMatchers>>,{job}}}) by (<<.GroupBy>>)"
            ),
        }


def pod_metric_rules() -> tuple[PodMetricRule, ...]:
    """Every per-pod metric the adapter serves: the contract's HPA metrics and GPU utilisation."""
    service_rules = tuple(
        # A pod runs one server process, so `sum` over its series is the pod's value.
        PodMetricRule(
            series=name,
            api_name=name,
            aggregation="sum",
            job=scrape.INFERENCE_JOB,
            source="service",
        )
        for name in contract.HPA_PODS_METRICS
    )
    # With GPU time-slicing several pods share one GPU and each sees the whole GPU's utilisation;
    # with a GPU per pod there is one series. `avg` is right for both.
    gpu_rule = PodMetricRule(
        series=DCGM_GPU_UTIL,
        api_name=GPU_UTILIZATION_METRIC,
        aggregation="avg",
        job=scrape.DCGM_JOB,
        source="dcgm",
    )
    return (*service_rules, gpu_rule)


def rule_for(api_name: str) -> PodMetricRule:
    """The rule serving a custom-metrics API name; KeyError names what exists."""
    rules = {rule.api_name: rule for rule in pod_metric_rules()}
    if api_name not in rules:
        raise KeyError(f"no adapter rule serves {api_name!r}; rules serve {sorted(rules)}")
    return rules[api_name]


def adapter_rules() -> dict[str, Any]:
    """The chart's `rules` value: only our rules (the chart's defaults would expose every cAdvisor
    series)."""
    return {"default": False, "custom": [rule.to_adapter_rule() for rule in pod_metric_rules()]}


def _go_quote(value: str) -> str:
    # The adapter formats matchers with Go's %q; for the label values Kubernetes allows (DNS names,
    # `|`) JSON string escaping is identical.
    return json.dumps(value)


def expand_metrics_query(rule: dict[str, Any], namespace: str, pods: Sequence[str]) -> str:
    """Expand `metricsQuery` for a `pods/*` request exactly as prometheus-adapter does.

    Mirrors `metricsQuery.Build` in pkg/naming/metrics_query.go
    (kubernetes-sigs/prometheus-adapter): the namespace matcher comes first, then the resource
    label, an equality for one pod and a regex alternation (`pod=~"a|b"`) for several; `GroupBy` is
    the resource label. `Series` is the series name from discovery. The HPA's metric selector is
    empty here, so it adds no matchers.
    """
    if not pods:
        raise ValueError("the adapter never builds a query for zero pods")
    overrides = rule["resources"]["overrides"]
    by_resource = {override["resource"]: label for label, override in overrides.items()}
    namespace_label, pod_label = by_resource["namespace"], by_resource["pod"]
    # Discovery hands the template the series' metric name; for our rules it is the seriesQuery's
    # selector name.
    series = rule["seriesQuery"].split("{", 1)[0]
    matchers = [f"{namespace_label}={_go_quote(namespace)}"]
    if len(pods) == 1:
        matchers.append(f"{pod_label}={_go_quote(pods[0])}")
    else:
        matchers.append(f"{pod_label}=~{_go_quote('|'.join(pods))}")
    query: str = rule["metricsQuery"]
    return (
        query.replace("<<.Series>>", series)
        .replace("<<.LabelMatchers>>", ",".join(matchers))
        .replace("<<.GroupBy>>", pod_label)
    )
