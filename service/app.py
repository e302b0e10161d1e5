"""create_app(settings): the lifespan owns every process resource; errors go through one table.

The model loads in the background after the server starts listening, so /health answers at once and
/ready stays 503 until the model is loaded and warmed up.
"""

from __future__ import annotations

import asyncio
import logging
import random
import re
import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from prometheus_client import start_http_server
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.responses import Response
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from service import __version__, contract, logs
from service.batcher import Batcher, BatcherStopped, Overloaded
from service.errors import (
    ApiError,
    InvalidRequestError,
    MethodNotAllowedError,
    RequestTooLargeError,
    RouteNotFoundError,
    error_response,
)
from service.metrics import Metrics
from service.model_types import InputTooLongError, TokenIdError
from service.routes import api, probes
from service.runtime import EncoderLike, Phase, Runtime
from service.settings import Settings

log = logging.getLogger(__name__)
access_log = logging.getLogger("service.access")

EncoderFactory = Callable[[], EncoderLike]
_KNOWN_ROUTES = frozenset(contract.API_PATHS.values())
_QUIET_ROUTES = frozenset({contract.HEALTH_PATH, contract.READY_PATH, contract.METRICS_PATH})
_REQUEST_ID = re.compile(r"^[A-Za-z0-9._:-]{1,128}$")


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
        metrics_server = None
        if settings.metrics_port:
            metrics_server, _ = start_http_server(
                settings.metrics_port, addr=settings.host, registry=metrics.registry
            )
        loading = asyncio.create_task(_load_model(runtime, factory), name="load-model")
        try:
            yield
        finally:
            runtime.start_draining()
            if not loading.done():
                loading.cancel()
            if runtime.batcher is not None:
                await runtime.batcher.stop(settings.drain_timeout_seconds)
            runtime.close()
            if metrics_server is not None:
                metrics_server.shutdown()
                metrics_server.server_close()

    app = FastAPI(
        title="gpu-inference embedding server",
        version=__version__,
        lifespan=lifespan,
        docs_url=None,
        redoc_url=None,
    )
    app.state.runtime = runtime
    app.include_router(api)
    app.include_router(probes)
    _install_error_handlers(app)
    # Last added runs first: every request gets an id and is measured, oversized bodies included.
    app.add_middleware(BodyLimitMiddleware, max_bytes=settings.max_request_bytes)
    app.add_middleware(ObservabilityMiddleware, metrics=metrics, log_access=settings.access_log)
    return app


async def _load_model(runtime: Runtime, factory: EncoderFactory) -> None:
    start = time.perf_counter()
    try:
        encoder = await asyncio.to_thread(factory)
    except Exception as exc:
        log.exception("model load failed")
        runtime.load_error = exc
        runtime.set_phase(Phase.FAILED)
        runtime.on_fatal()
        return
    s = runtime.settings
    batcher = Batcher(
        encoder.encode_ids,
        max_batch_tokens=s.max_batch_tokens,
        max_batch_size=s.max_batch_size,
        max_queue_items=s.max_queue_items,
        batch_wait_s=s.batch_wait_ms / 1000,
        observer=runtime.metrics,
    )
    batcher.start()
    runtime.encoder, runtime.batcher = encoder, batcher
    seconds = time.perf_counter() - start
    runtime.metrics.model_load_seconds.set(seconds)
    log.info("model %s ready in %.2fs: %s", encoder.info.model_id, seconds, encoder.info)
    if runtime.phase is Phase.LOADING:  # a SIGTERM during loading keeps it draining
        runtime.set_phase(Phase.READY)


# --- Errors ---------------------------------------------------------------------------------
def _install_error_handlers(app: FastAPI) -> None:
    async def table(_: Request, exc: Exception) -> Response:
        return error_response(exc)

    for cls in (ApiError, Overloaded, BatcherStopped, InputTooLongError, TokenIdError, Exception):
        app.add_exception_handler(cls, table)
    app.add_exception_handler(RequestValidationError, _validation_error)
    app.add_exception_handler(StarletteHTTPException, _http_error)


async def _validation_error(_: Request, exc: Exception) -> Response:
    assert isinstance(exc, RequestValidationError)
    return error_response(_describe_validation(exc.errors()))


def _describe_validation(errors: Any) -> InvalidRequestError:
    """FastAPI's list of pydantic errors -> one clear message naming the field (OpenAI style)."""
    first = errors[0]
    loc = [str(part) for part in first.get("loc", ()) if part != "body"]
    kind = first.get("type", "")
    if kind == "json_invalid":
        detail = first.get("ctx", {}).get("error", "")
        return InvalidRequestError(f"the request body is not valid JSON: {detail}".rstrip(": "))
    if not loc:
        if kind == "missing":
            return InvalidRequestError("the request body must be a JSON object")
        return InvalidRequestError(f"the request body must be a JSON object: {first.get('msg')}")
    message = str(first.get("msg", "invalid value")).removeprefix("Value error, ")
    param = ".".join(loc)
    if kind == "missing":
        message = f"'{param}' is a required property"
    elif not message.startswith(loc[0]):
        message = f"{param}: {message}"
    return InvalidRequestError(message, param=loc[0])


async def _http_error(_: Request, exc: Exception) -> Response:
    assert isinstance(exc, StarletteHTTPException)
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


# --- Middleware (pure ASGI: no per-request task or body buffering) ---------------------------
class BodyLimitMiddleware:
    """413 for bodies over the limit, declared (Content-Length) or streamed (chunked)."""

    def __init__(self, app: ASGIApp, max_bytes: int) -> None:
        self.app = app
        self.max_bytes = max_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        limit = self.max_bytes
        message = f"the request body is over this server's limit of {limit} bytes"
        for name, value in scope["headers"]:
            if name == b"content-length" and value.isdigit() and int(value) > limit:
                await error_response(RequestTooLargeError(message))(scope, receive, send)
                return
        seen = 0

        async def limited_receive() -> Message:
            nonlocal seen
            msg = await receive()
            if msg["type"] == "http.request":
                seen += len(msg.get("body", b""))
                if seen > limit:
                    raise StarletteHTTPException(413, message)
            return msg

        await self.app(scope, limited_receive, send)


class ObservabilityMiddleware:
    """Request id (X-Request-ID in and out, on every log line), request metrics, access log."""

    def __init__(self, app: ASGIApp, metrics: Metrics, log_access: bool) -> None:
        self.app = app
        self.metrics = metrics
        self.log_access = log_access

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        path: str = scope["path"]
        route = path if path in _KNOWN_ROUTES else "other"
        rid = _request_id(scope)
        token = logs.request_id.set(rid)
        status = 500  # what the client sees if the app dies before answering

        async def send_with_id(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
                message["headers"] = [*message.get("headers", []), (b"x-request-id", rid.encode())]
            await send(message)

        # In-flight counts API work only: probes and scrapes would distort the HPA signal.
        counted = path.startswith(contract.OPENAI_BASE_PATH + "/")
        if counted:
            self.metrics.in_flight.inc()
        start = time.perf_counter()
        try:
            await self.app(scope, receive, send_with_id)
        finally:
            elapsed = time.perf_counter() - start
            if counted:
                self.metrics.in_flight.dec()
            self.metrics.requests.labels(route, str(status)).inc()
            self.metrics.request_duration.labels(route).observe(elapsed)
            if self.log_access:
                level = logging.DEBUG if path in _QUIET_ROUTES else logging.INFO
                access_log.log(
                    level, "%s %s %d %.1fms", scope["method"], path, status, elapsed * 1000
                )
            logs.request_id.reset(token)


def _request_id(scope: Scope) -> str:
    for name, value in scope["headers"]:
        if name == b"x-request-id":
            candidate = value.decode("latin-1")
            if _REQUEST_ID.match(candidate):
                return candidate
    # 128 random bits like uuid4, without a urandom syscall per request (~40 us here).
    return f"{random.getrandbits(128):032x}"
