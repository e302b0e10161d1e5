"""The gate's catalogue of metric names agrees with what the real exporters expose."""

from __future__ import annotations

from checks.metric_catalog import SERVICE_HISTOGRAMS, metric_source
from service.metrics import Metrics


def test_histograms_are_the_services_histograms() -> None:
    families = list(Metrics().registry.collect())
    histograms = {f.name for f in families if f.type == "histogram"}
    assert histograms == SERVICE_HISTOGRAMS


def test_every_series_the_service_exposes_is_known() -> None:
    metrics = Metrics()
    metrics.requests.labels("/v1/embeddings", "200").inc()
    metrics.request_duration.labels("/v1/embeddings").observe(0.1)
    sample_names = {
        sample.name
        for family in metrics.registry.collect()
        for sample in family.samples
        if not sample.name.endswith("_created")  # creation timestamps, never queried
    }
    assert sample_names, "the service exposes no series"
    assert {name for name in sample_names if metric_source(name) != "service"} == set()


def test_sources_and_unknown_names() -> None:
    assert metric_source("inference_request_duration_seconds_bucket") == "service"
    assert metric_source("inference_requests_total_bucket") is None  # a counter has no buckets
    assert metric_source("DCGM_FI_DEV_GPU_UTIL") == "dcgm-exporter"
    assert metric_source("kube_horizontalpodautoscaler_spec_max_replicas") == "kube-state-metrics"
    assert metric_source("DCGM_FI_DEV_GPU_UTILIZATION") is None
