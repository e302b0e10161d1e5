"""The server's own ASGI middleware, pure ASGI (no per-request task, no body buffering): request id,
metrics and access log; API keys; the body size limit. service.app stacks them around FastAPI."""

from __future__ import annotations

import hmac
import logging
import random
import re
import time

from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from service import contract, logs
from service.errors import AuthenticationError, RequestTooLargeError, error_response
from service.metrics import Metrics

access_log = logging.getLogger("service.access")

_KNOWN_ROUTES = frozenset(contract.API_PATHS.values())
_QUIET_ROUTES = frozenset({contract.HEALTH_PATH, contract.READY_PATH, contract.METRICS_PATH})
_API_PREFIX = contract.OPENAI_BASE_PATH + "/"
_REQUEST_ID = re.compile(r"^[A-Za-z0-9._:-]{1,128}$")


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


class ApiKeyMiddleware:
    """401 for /v1/* requests without one of the accepted keys (`Authorization: Bearer <key>`).
    Installed only when keys are configured; probes and /metrics stay open for the kubelet and
    Prometheus."""

    def __init__(self, app: ASGIApp, keys: frozenset[str]) -> None:
        self.app = app
        self.keys = tuple(key.encode() for key in sorted(keys))

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and scope["path"].startswith(_API_PREFIX):
            error = self._refusal(scope["headers"])
            if error is not None:
                await error_response(error)(scope, receive, send)
                return
        await self.app(scope, receive, send)

    def _refusal(self, headers: list[tuple[bytes, bytes]]) -> AuthenticationError | None:
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
        counted = path.startswith(_API_PREFIX)
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
