"""Prometheus collectors, named once in service/contract.py (infra builds adapter rules and HPA
metrics from the same names). Each Metrics owns its registry: two apps in one process never collide.
"""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.exposition import choose_encoder

from service import contract

# Requests range from one short input (milliseconds) to 2048 long ones (tens of seconds on a CPU).
_DURATION_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0)
_BATCH_SIZE_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024)
_BATCH_TOKEN_BUCKETS = (16, 64, 256, 1024, 4096, 8192, 16384, 32768, 65536, 131072)

DEVICE_ERROR_KINDS = ("out_of_memory", "device_failed")
HTTP_REJECTION_REASONS = (
    "malformed",
    "headers_too_large",
    "too_many_headers",
    "header_timeout",
    "body_timeout",
    "connection_limit",
    "evicted",
    "shutdown",
)
CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"


class Metrics:
    """All service metrics; also the batcher's observer (service.batcher.BatchObserver)."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        r = self.registry
        # prometheus_client adds the _total suffix of counters itself: give it the bare name so the
        # exposed name is exactly the contract's.
        self.requests = Counter(
            contract.REQUESTS_TOTAL.removesuffix("_total"),
            "HTTP requests by route and status code.",
            ["route", "status"],
            registry=r,
        )
        self.request_duration = Histogram(
            contract.REQUEST_DURATION_SECONDS,
            "HTTP request duration by route.",
            ["route"],
            buckets=_DURATION_BUCKETS,
            registry=r,
        )
        self.in_flight = Gauge(
            contract.REQUESTS_IN_FLIGHT,
            "API requests accepted and not yet answered (the HPA signal).",
            registry=r,
        )
        self.queue_items = Gauge(
            contract.QUEUE_ITEMS, "Inputs waiting in the batcher queue.", registry=r
        )
        self.queue_tokens = Gauge(
            contract.QUEUE_TOKENS, "Tokens waiting in the batcher queue.", registry=r
        )
        self.queue_seconds = Gauge(
            contract.QUEUE_SECONDS,
            "Estimated seconds of device work queued (queued tokens x measured seconds per token).",
            registry=r,
        )
        self.batch_size = Histogram(
            contract.BATCH_SIZE,
            "Inputs per forward pass.",
            buckets=_BATCH_SIZE_BUCKETS,
            registry=r,
        )
        self.batch_tokens = Histogram(
            contract.BATCH_TOKENS,
            "Padded tokens per forward pass.",
            buckets=_BATCH_TOKEN_BUCKETS,
            registry=r,
        )
        self.tokens = Counter(
            contract.TOKENS_TOTAL.removesuffix("_total"), "Tokens embedded.", registry=r
        )
        self.truncated = Counter(
            contract.TRUNCATED_INPUTS_TOTAL.removesuffix("_total"),
            "Inputs cut to the model's maximum length.",
            registry=r,
        )
        self.model_load_seconds = Gauge(
            contract.MODEL_LOAD_SECONDS,
            "Seconds spent loading and warming up the model.",
            registry=r,
        )
        self.ready = Gauge(contract.READY, "1 when /ready answers 200.", registry=r)
        self.device_errors = Counter(
            contract.DEVICE_ERRORS_TOTAL.removesuffix("_total"),
            "Forward passes that failed on the device, by kind: out_of_memory (retried in "
            "smaller batches) or device_failed (the process must restart).",
            ["kind"],
            registry=r,
        )
        for kind in DEVICE_ERROR_KINDS:  # exposed at 0, so rate() and increase() see the start
            self.device_errors.labels(kind)
        self.http_rejections = Counter(
            contract.HTTP_REJECTIONS_TOTAL.removesuffix("_total"),
            "Requests and connections the HTTP layer cut off before any route, by reason "
            "(service.httpserver).",
            ["reason"],
            registry=r,
        )
        self._rejections = {
            reason: self.http_rejections.labels(reason) for reason in HTTP_REJECTION_REASONS
        }
        self.connections_open = Gauge(
            contract.CONNECTIONS_OPEN, "Open HTTP connections on the API port.", registry=r
        )
        self.max_connections = Gauge(
            contract.MAX_CONNECTIONS,
            "The API port's connection limit in effect (EMBED_MAX_CONNECTIONS, or fewer when "
            "the process may not open that many files).",
            registry=r,
        )

    def render(self) -> bytes:
        return generate_latest(self.registry)

    def render_for(self, accept: str) -> tuple[bytes, str]:
        """The exposition an Accept header asks for (OpenMetrics or the text format), and its
        content type."""
        encoder, content_type = choose_encoder(accept)
        return encoder(self.registry), content_type

    # --- BatchObserver ----------------------------------------------------------------------------
    def queue_changed(self, items: int, tokens: int, seconds: float) -> None:
        self.queue_items.set(items)
        self.queue_tokens.set(tokens)
        self.queue_seconds.set(seconds)

    def batch_done(self, items: int, padded_tokens: int, tokens: int) -> None:
        self.batch_size.observe(items)
        self.batch_tokens.observe(padded_tokens)
        self.tokens.inc(tokens)

    def device_error(self, kind: str) -> None:
        self.device_errors.labels(kind).inc()

    # --- ConnectionObserver (service.httpserver) ------------------------------------------------
    def http_rejected(self, reason: str) -> None:
        self._rejections[reason].inc()

    def connections_changed(self, open_connections: int) -> None:
        self.connections_open.set(open_connections)
