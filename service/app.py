"""create_app(settings): the lifespan owns every process resource; errors go through one table.

The model loads in the background after the server starts listening, so /health answers at once and
/ready stays 503 until the model is loaded and warmed up.
"""

from __future__ import annotations

import asyncio
import functools
import gc
import logging
import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.responses import Response
from starlette.types import Receive, Scope, Send

from service import __version__
from service.admission import TextTokens
from service.batcher import Batcher
from service.errors import (
    ERROR_TABLE,
    ApiError,
    InvalidRequestError,
    MethodNotAllowedError,
    RequestTooLargeError,
    RouteNotFoundError,
    describe_validation,
    error_response,
)
from service.front import FrontDoor, allow_header
from service.httpserver import MetricsListener
from service.metrics import Metrics
from service.openai_tokens import OpenAITokens
from service.openapi import ApiDocument
from service.routes import ENDPOINTS, METRICS_PORT_PATHS, accepted_values
from service.runtime import EncoderLike, Phase, Runtime
from service.settings import Settings

log = logging.getLogger(__name__)

EncoderFactory = Callable[[], EncoderLike]


def default_encoder_factory(settings: Settings) -> EncoderFactory:
    """Load the configured model and warm it up (runs on a worker thread)."""

    def load() -> EncoderLike:
        from service.encoder import Encoder, EncoderConfig  # torch loads here, not at import

        encoder = Encoder.load(
            EncoderConfig(
                model=settings.model,
                revision=settings.model_revision,
                allow_download=settings.allow_download,
                device=settings.device,
                dtype=settings.dtype,
                pooling=settings.pooling,
                max_tokens=settings.max_tokens,
                truncate=settings.truncate,
                torch_threads=settings.torch_threads,
                normalize=settings.normalize,
                prompts=settings.prompts,
                default_prompt_name=settings.default_prompt_name,
                default_prompt=settings.default_prompt,
                matryoshka_dimensions=settings.matryoshka_dimensions,
            )
        )
        if settings.warmup:
            # The largest batch the budget allows at full length: an out-of-memory shows at start.
            rows = settings.max_batch_tokens // encoder.info.max_tokens
            encoder.warm_up(max(1, min(settings.max_batch_size, rows)))
        return encoder

    return load


def create_app(settings: Settings, encoder_factory: EncoderFactory | None = None) -> FastAPI:
    metrics = Metrics()
    runtime = Runtime(settings, metrics, settings.load_api_keys())
    factory = encoder_factory or default_encoder_factory(settings)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        listener = None
        if settings.metrics_port:
            # Before the model loads: the kubelet's startup probe reads /ready there.
            listener = await MetricsListener.start(metrics_door, settings, metrics)
        loading = asyncio.create_task(_load_model(runtime, factory, docs), name="load-model")
        try:
            yield
        finally:
            runtime.start_draining()
            if not loading.done():
                loading.cancel()
            draining = runtime.stop_batcher()
            if draining is not None:
                await draining
            if listener is not None:
                listener.close()

    app = EmbeddingApp(
        title=TITLE,
        version=__version__,
        lifespan=lifespan,
        # Served from the endpoint table by service.front, built once (service.openapi).
        openapi_url=None,
        docs_url=None,
        redoc_url=None,
        # FastAPI's native OpenTelemetry asks the global providers on every request (an environment
        # lookup each time) even when none is configured; this server's telemetry is Prometheus.
        telemetry={"tracing": False, "metrics": False, "logs": False},
    )
    app.state.runtime = runtime
    docs = ApiDocument(ENDPOINTS, title=TITLE, version=__version__, description=DESCRIPTION)
    app.docs = docs
    _install_error_handlers(app)
    endpoints = (*ENDPOINTS, *docs.endpoints())
    app.front = FrontDoor(endpoints, app.framework_stack, runtime, error_reply)
    # EMBED_METRICS_PORT: the probes and /metrics only, counted and logged like on the API port.
    on_metrics_port = [e for e in ENDPOINTS if e.path in METRICS_PORT_PATHS]
    metrics_door = FrontDoor(on_metrics_port, app.framework_stack, runtime, error_reply)
    return app


TITLE = "gpu-inference embedding server"
DESCRIPTION = (
    "Sentence embeddings from one model, OpenAI-compatible (`POST /v1/embeddings`, `GET "
    "/v1/models`, also without `/v1`: the openai SDK, LangChain and Haystack work as they are), "
    "with dynamic batching. Every error is the OpenAI "
    'envelope `{"error": {"message", "type", "param", "code"}}`; each response carries '
    "`X-Request-ID`. The routes that list `apiKey` need `Authorization: Bearer <key>` when the "
    "server has API keys."
)


class EmbeddingApp(FastAPI):
    """FastAPI for the lifespan, app.state and the error handlers of unknown paths; every HTTP
    request enters through service.front.FrontDoor, which answers the endpoint table itself and
    hands other paths to the framework's stack."""

    front: FrontDoor
    docs: ApiDocument

    def openapi(self) -> dict[str, Any]:
        """The document /openapi.json serves (narrowed to the model once it has loaded)."""
        return self.docs.document

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            scope["app"] = self
            await self.front(scope, receive, send)
        else:
            await super().__call__(scope, receive, send)

    async def framework_stack(self, scope: Scope, receive: Receive, send: Send) -> None:
        await super().__call__(scope, receive, send)


async def _load_model(runtime: Runtime, factory: EncoderFactory, docs: ApiDocument) -> None:
    start = time.perf_counter()
    try:
        encoder = await asyncio.to_thread(factory)
        if runtime.settings.token_ids == "cl100k_base":
            runtime.openai_tokens = await asyncio.to_thread(OpenAITokens.load)
    except Exception as exc:
        log.exception("model load failed")
        runtime.load_error = exc
        runtime.set_phase(Phase.FAILED)
        runtime.on_fatal()
        return
    s = runtime.settings
    runtime.pass_cost_tokens = s.resolved_pass_cost_tokens(encoder.info.device)
    batcher = Batcher(
        # Pooled vectors as they are: a pass mixes requests, and each says whether it wants unit
        # vectors (TEI's `normalize`); Runtime.embed normalises per request.
        functools.partial(encoder.encode_ids, normalize=False),
        prepare=runtime.prepare,
        max_batch_tokens=s.max_batch_tokens,
        max_batch_size=s.max_batch_size,
        max_queue_items=s.max_queue_items,
        max_queue_seconds=s.max_queue_seconds,
        seconds_per_token=encoder.seconds_per_token,
        batch_wait_s=s.batch_wait_ms / 1000,
        pass_cost_tokens=runtime.pass_cost_tokens,
        observer=runtime.metrics,
        on_device_failure=runtime.device_failed,
    )
    batcher.start()
    runtime.text_tokens = TextTokens(encoder.info.max_tokens, encoder.info.special_tokens)
    _freeze_heap()
    runtime.encoder, runtime.batcher = encoder, batcher
    await asyncio.to_thread(docs.describe, accepted_values(runtime))
    seconds = time.perf_counter() - start
    runtime.metrics.model_load_seconds.set(seconds)
    log.info(
        "model %s ready in %.2fs (a pass costs %d padded tokens): %s",
        encoder.info.model_id,
        seconds,
        runtime.pass_cost_tokens,
        encoder.info,
    )
    if runtime.phase is Phase.LOADING:  # a SIGTERM during loading keeps it draining
        runtime.set_phase(Phase.READY)


def _freeze_heap() -> None:
    """torch, transformers and the model leave ~400k objects that live as long as the process. A
    full collection scans them all: a 0.2 s pause, holding the GIL, every thousand or so requests
    (measured on 2 cores with MiniLM). Frozen, they are never scanned again; collections only see
    request garbage (bench/NOTES.md)."""
    gc.collect()
    gc.freeze()


# --- Errors ---------------------------------------------------------------------------------
def error_reply(exc: BaseException) -> Response:
    """Any exception as the response the error table gives it (the front door's errors)."""
    if isinstance(exc, RequestValidationError):
        return error_response(describe_validation(exc.errors()))
    if isinstance(exc, StarletteHTTPException):
        return _http_error_response(exc)
    return error_response(exc, headers=allow_header(exc))


def _install_error_handlers(app: FastAPI) -> None:
    """The same table for requests the framework's stack answers (paths outside the table)."""

    async def table(_: Request, exc: Exception) -> Response:
        return error_reply(exc)

    # Every class of the table by name: Starlette answers these in its ExceptionMiddleware. Only
    # the catch-all Exception goes to ServerErrorMiddleware, which logs a traceback and re-raises.
    for cls in (*ERROR_TABLE, RequestValidationError, StarletteHTTPException, Exception):
        app.add_exception_handler(cls, table)


def _http_error_response(exc: StarletteHTTPException) -> Response:
    mapped: ApiError
    if exc.status_code == 404:
        mapped = RouteNotFoundError("no such route; see /info and the API documentation")
    elif exc.status_code == 405:
        mapped = MethodNotAllowedError(str(exc.detail))
    elif exc.status_code == 413:
        mapped = RequestTooLargeError(str(exc.detail))
    else:
        mapped = InvalidRequestError(str(exc.detail))
    return error_response(mapped, headers=dict(exc.headers) if exc.headers else None)
