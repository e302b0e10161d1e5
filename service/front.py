"""The server's one ASGI layer in front of every HTTP request: request id, metrics, access log,
body limit, API keys, then the endpoint table.

What a request counts toward and needs is a flag of its endpoint in the table, never a matter of
its path: only routes that queue work for the model move `inference_requests_in_flight` (the
HPA's signal), so a cheap route (the model list, a probe) never scales GPU pods, and a route's
alias (/embeddings for /v1/embeddings) is counted, labelled and guarded exactly as its path.

Each request crosses exactly this layer and its handler: the handler reads the raw body, answers a
`Reply` (bytes already serialised), and this layer writes it with two `send` calls. Requests for a
path the table does not know go on to the framework's own stack (FastAPI/Starlette: 404, 405 and
anything mounted there), still inside this layer, so they are measured, logged and limited alike.
Measured against Starlette's middleware chain, FastAPI's route machinery and per-request Request
and Response objects, this is most of the CPU per request the server saved (bench/NOTES.md).
"""

from __future__ import annotations

import asyncio
import hmac
import logging
import time
from collections.abc import Awaitable, Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from pydantic import BaseModel
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.responses import Response
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from service import contract, logs
from service.batcher import BatcherStopped
from service.errors import (
    ERROR_TABLE,
    INTERNAL,
    ApiError,
    AuthenticationError,
    ClientDisconnectedError,
    MethodNotAllowedError,
    RequestTooLargeError,
    kind_of,
)
from service.httpserver import BODY_REFUSED
from service.metrics import Metrics

if TYPE_CHECKING:
    from service.runtime import Runtime

log = logging.getLogger(__name__)
access_log = logging.getLogger("service.access")

_QUIET_ROUTES = frozenset({contract.HEALTH_PATH, contract.READY_PATH, contract.METRICS_PATH})
# The status recorded when the client went away before an answer (nginx's convention).
CLIENT_CLOSED = ERROR_TABLE[ClientDisconnectedError].status
"""What a request whose client left is counted as (nobody reads it)."""
JSON = b"application/json"


@dataclass(frozen=True, slots=True)
class Reply:
    body: bytes
    status: int = 200
    media_type: bytes = JSON
    headers: tuple[tuple[bytes, bytes], ...] = ()


class Call:
    """One request as a handler sees it: the ASGI scope, the whole body, the runtime."""

    __slots__ = ("body", "receive", "runtime", "scope")

    def __init__(self, scope: Scope, receive: Receive, body: bytes, runtime: Runtime) -> None:
        self.scope = scope
        self.receive = receive
        self.body = body
        self.runtime = runtime


Handler = Callable[[Call], Awaitable[Reply]]


@dataclass(frozen=True)
class Endpoint:
    """One route: how it is served and how /openapi.json describes it (service.openapi)."""

    method: str
    path: str
    handler: Handler
    summary: str
    description: str = ""
    request: type[BaseModel] | None = None
    response: type[BaseModel] | None = None
    """The 200 body's model (responses are serialised by hand; this documents them)."""
    media_type: str = "application/json"
    errors: tuple[int, ...] = ()
    """Error statuses the route answers (the envelope), besides 500."""
    tags: tuple[str, ...] = ()
    headers: tuple[str, ...] = ()
    """Response headers the route sets, besides X-Request-ID."""
    path_params: tuple[str, ...] = ()
    """Names in `path` ("/v1/models/{model}"): the route answers every path under the part
    before the first one, and the handler reads the rest of the path as
    `scope["path_params"][name]`."""
    in_schema: bool = True
    aliases: tuple[str, ...] = ()
    """More paths of the same endpoint (/embeddings for a client whose base URL lacks /v1, as
    TEI and infinity serve it): counted and labelled as `path`, documented once, under it."""
    inference: bool = False
    """The route queues work for the model: it counts toward inference_requests_in_flight."""
    needs_key: bool = False
    """The route answers only with one of the server's API keys (when it has any)."""


@dataclass(frozen=True, slots=True)
class Route:
    """What the table knows about one path: its endpoints by method, and how it is counted."""

    label: str
    """The `route` label of its metrics: the documented path, whichever alias was called."""
    methods: Mapping[str, Endpoint]
    needs_key: bool
    param: str | None = None
    """The path parameter that takes the rest of the path, for a prefix route."""


def route_table(
    endpoints: Iterable[Endpoint],
) -> tuple[dict[str, Route], dict[str, Route]]:
    """(path -> Route, path prefix -> Route for paths with parameters) over every endpoint and
    its aliases."""
    grouped: dict[str, dict[str, Endpoint]] = {}
    for endpoint in endpoints:
        for path in (endpoint.path, *endpoint.aliases):
            grouped.setdefault(path, {})[endpoint.method] = endpoint
    routes: dict[str, Route] = {}
    prefixes: dict[str, Route] = {}
    for path, methods in grouped.items():
        first = next(iter(methods.values()))
        needs_key = any(e.needs_key for e in methods.values())
        if first.path_params:
            prefixes[path[: path.index("{")]] = Route(
                first.path, methods, needs_key, first.path_params[0]
            )
        else:
            routes[path] = Route(first.path, methods, needs_key)
    return routes, prefixes


ErrorReply = Callable[[BaseException], Response]


class FrontDoor:
    def __init__(
        self,
        endpoints: Iterable[Endpoint],
        fallback: ASGIApp,
        runtime: Runtime,
        error_reply: ErrorReply,
    ) -> None:
        """`endpoints`: the table (with its aliases); other paths go to `fallback`.
        `error_reply` turns an exception into the response the error table gives it
        (service.app), the same for both ways in."""
        self.routes, self.prefixes = route_table(endpoints)
        self.fallback = fallback
        self.runtime = runtime
        self.error_reply = error_reply
        settings = runtime.settings
        self.max_bytes = settings.max_request_bytes
        self.keys = tuple(key.encode() for key in sorted(runtime.api_keys))
        self.log_access = settings.access_log
        metrics: Metrics = runtime.metrics
        self.metrics = metrics
        # Label children resolved once: `labels()` costs a lock and a tuple per call.
        labels = {route.label for route in (*self.routes.values(), *self.prefixes.values())}
        self._duration = {path: metrics.request_duration.labels(path) for path in labels}
        self._duration["other"] = metrics.request_duration.labels("other")
        self._counters: dict[tuple[str, int], Any] = {}

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        path: str = scope["path"]
        route = self.routes.get(path)
        if route is None and self.prefixes:
            for prefix, under in self.prefixes.items():
                if path.startswith(prefix) and len(path) > len(prefix):
                    route = under
                    scope["path_params"] = {under.param: path[len(prefix) :]}
                    break
        endpoint = None
        if route is not None:
            # HEAD is GET without the body (RFC 9110 9.3.2), as the framework's routes answered it.
            endpoint = route.methods.get("GET" if scope["method"] == "HEAD" else scope["method"])
        label = route.label if route is not None else "other"
        rid = logs.request_id_of(scope["headers"])
        token = logs.request_id.set(rid)
        # In-flight counts model work only: probes, scrapes and the model list would distort the
        # HPA signal.
        inference = endpoint is not None and endpoint.inference
        if inference:
            self.metrics.in_flight.inc()
        start = time.perf_counter()
        status = 500  # what the client sees if we die before answering
        try:
            status = await self._serve(scope, receive, send, route, endpoint, rid.encode())
        finally:
            elapsed = time.perf_counter() - start
            if inference:
                self.metrics.in_flight.dec()
            self._count(label, status)
            self._duration[label].observe(elapsed)
            if self.log_access:
                level = logging.DEBUG if path in _QUIET_ROUTES else logging.INFO
                if access_log.isEnabledFor(level):
                    access_log.log(
                        level, "%s %s %d %.1fms", scope["method"], path, status, elapsed * 1000
                    )
            logs.request_id.reset(token)

    async def _serve(
        self,
        scope: Scope,
        receive: Receive,
        send: Send,
        route: Route | None,
        endpoint: Endpoint | None,
        rid: bytes,
    ) -> int:
        """Answer the request; the status sent (CLIENT_CLOSED when there was no one to answer)."""
        try:
            refusal = self._refusal(scope, route is not None and route.needs_key)
            if refusal is not None:
                raise refusal
            if route is None:
                return await self._fall_back(scope, receive, send, rid)
            if endpoint is None:
                raise _NotAllowedError(", ".join(route.methods))
            body = await self._read_body(scope, receive) if scope["method"] == "POST" else b""
            reply = await endpoint.handler(Call(scope, receive, body, self.runtime))
        except ClientDisconnectedError:
            return CLIENT_CLOSED
        except asyncio.CancelledError:
            # Only uvicorn cancels a handler from outside (our own disconnect watch turns into
            # ClientDisconnectedError): its graceful-shutdown timeout ran out, e.g. on a client
            # still sending its body. Answer that in the envelope, not with uvicorn's plain-text
            # 500 and a CancelledError traceback; the task ends here either way.
            if route is None:  # the framework's stack may have started its answer
                raise
            task = asyncio.current_task()
            if task is not None:
                task.uncancel()
            stopped = BatcherStopped("the server stopped before this request could be answered")
            return await self._send_error(send, stopped, rid)
        except Exception as exc:
            return await self._send_error(send, exc, rid)
        headers = [
            (b"content-type", reply.media_type),
            (b"content-length", str(len(reply.body)).encode()),
            (b"x-request-id", rid),
            *reply.headers,
        ]
        await _send(send, reply.status, headers, b"" if scope["method"] == "HEAD" else reply.body)
        return reply.status

    async def _send_error(self, send: Send, exc: BaseException, rid: bytes) -> int:
        response = self.error_reply(exc)
        if kind_of(exc) is INTERNAL:
            log.error("unhandled error", exc_info=exc)
        headers = [*response.raw_headers, (b"x-request-id", rid)]
        await _send(send, response.status_code, headers, bytes(response.body))
        return response.status_code

    def _refusal(self, scope: Scope, needs_key: bool) -> ApiError | None:
        limit = self.max_bytes
        for name, value in scope["headers"]:
            if name == b"content-length" and value.isdigit() and int(value) > limit:
                return RequestTooLargeError(
                    f"the request body is over this server's limit of {limit} bytes"
                )
        if needs_key and self.keys:
            return self._key_refusal(scope["headers"])
        return None

    def _key_refusal(self, headers: list[tuple[bytes, bytes]]) -> AuthenticationError | None:
        """401 for a route that needs a key, without one of the accepted keys
        (`Authorization: Bearer <key>`); probes and /metrics stay open for the kubelet and
        Prometheus."""
        header = next((value for name, value in headers if name == b"authorization"), b"")
        scheme, _, token = header.partition(b" ")
        presented = token.strip()
        if scheme.lower() != b"bearer" or not presented:
            return AuthenticationError(
                "missing API key: send the header 'Authorization: Bearer <key>'"
            )
        # Compare against every key in constant time so timing reveals neither key nor position.
        matched = False
        for key in self.keys:
            matched |= hmac.compare_digest(presented, key)
        return None if matched else AuthenticationError("invalid API key")

    async def _read_body(self, scope: Scope, receive: Receive) -> bytes:
        """The whole body, within the limit also when it is streamed (chunked). When the HTTP
        layer stops reading it (late: 408, malformed: 400, shutdown: 503) it flags the scope
        with the error and wakes this loop, so the error is this request's answer
        (service.httpserver). Each closes the connection: the rest is never read."""
        chunks: list[bytes] = []
        size = 0
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                raise ClientDisconnectedError("the client closed the connection while sending")
            refused = scope.get(BODY_REFUSED)
            if refused is not None:
                raise refused
            chunk = message.get("body", b"")
            size += len(chunk)
            if size > self.max_bytes:
                raise RequestTooLargeError(
                    f"the request body is over this server's limit of {self.max_bytes} bytes"
                )
            chunks.append(chunk)
            if not message.get("more_body", False):
                return chunks[0] if len(chunks) == 1 else b"".join(chunks)

    async def _fall_back(self, scope: Scope, receive: Receive, send: Send, rid: bytes) -> int:
        """Paths outside the table: the framework's stack, with the request id and the limit."""
        status = CLIENT_CLOSED
        limit = self.max_bytes
        seen = 0

        async def limited_receive() -> Message:
            nonlocal seen
            message = await receive()
            refused = scope.get(BODY_REFUSED)
            if refused is not None and message["type"] == "http.request":
                raise refused
            if message["type"] == "http.request":
                seen += len(message.get("body", b""))
                if seen > limit:
                    raise StarletteHTTPException(
                        413, f"the request body is over this server's limit of {limit} bytes"
                    )
            return message

        async def send_with_id(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
                message["headers"] = [*message.get("headers", []), (b"x-request-id", rid)]
            await send(message)

        await self.fallback(scope, limited_receive, send_with_id)
        return status

    def _count(self, route: str, status: int) -> None:
        key = (route, status)
        counter = self._counters.get(key)
        if counter is None:
            counter = self._counters[key] = self.metrics.requests.labels(route, str(status))
        counter.inc()


class _NotAllowedError(MethodNotAllowedError):
    def __init__(self, allowed: str) -> None:
        super().__init__(f"method not allowed; this route accepts {allowed}")
        self.allowed = allowed


def allow_header(exc: BaseException) -> dict[str, str] | None:
    return {"Allow": exc.allowed} if isinstance(exc, _NotAllowedError) else None


async def _send(send: Send, status: int, headers: list[tuple[bytes, bytes]], body: bytes) -> None:
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})
