"""Every error the API returns, in the OpenAI envelope {"error": {message, type, param, code}}.

One table maps exception classes to (HTTP status, type, code); service.app uses it for our
exceptions, the batcher's and the encoder's alike, so a status is decided in exactly one place.
"""

from __future__ import annotations

from dataclasses import dataclass

import orjson
from starlette.requests import ClientDisconnect
from starlette.responses import Response

from service.batcher import BatcherStopped, Overloaded, TooLargeForQueue
from service.model_types import (
    DeviceFailedError,
    DeviceOutOfMemoryError,
    InputTooLongError,
    NonFiniteEmbeddingError,
    TokenIdError,
)


class ApiError(Exception):
    """Base of the API's own errors; `param` names the offending request field, if any."""

    def __init__(self, message: str, param: str | None = None) -> None:
        super().__init__(message)
        self.param = param


class InvalidRequestError(ApiError):
    pass


class ModelNotFoundError(ApiError):
    pass


class AuthenticationError(ApiError):
    pass


class RequestTooLargeError(ApiError):
    pass


class NotReadyError(ApiError):
    pass


class RouteNotFoundError(ApiError):
    pass


class MethodNotAllowedError(ApiError):
    pass


class ClientDisconnectedError(ApiError):
    """The client closed the connection before the answer (nobody reads the 499)."""


@dataclass(frozen=True)
class ErrorKind:
    status: int
    type: str
    code: str | None


# The one table. Types follow OpenAI's: invalid_request_error (4xx the client must fix),
# authentication_error, rate_limit_error (retry later), server_error (ours).
ERROR_TABLE: dict[type[BaseException], ErrorKind] = {
    InvalidRequestError: ErrorKind(400, "invalid_request_error", "invalid_request"),
    InputTooLongError: ErrorKind(400, "invalid_request_error", "context_length_exceeded"),
    TokenIdError: ErrorKind(400, "invalid_request_error", "invalid_token_id"),
    TooLargeForQueue: ErrorKind(400, "invalid_request_error", "too_many_inputs"),
    AuthenticationError: ErrorKind(401, "authentication_error", "invalid_api_key"),
    ModelNotFoundError: ErrorKind(404, "invalid_request_error", "model_not_found"),
    RouteNotFoundError: ErrorKind(404, "invalid_request_error", "not_found"),
    MethodNotAllowedError: ErrorKind(405, "invalid_request_error", "method_not_allowed"),
    RequestTooLargeError: ErrorKind(413, "invalid_request_error", "request_too_large"),
    Overloaded: ErrorKind(429, "rate_limit_error", "overloaded"),
    # nginx's "client closed request": keeps disconnects apart from our errors in the metrics.
    ClientDisconnectedError: ErrorKind(499, "invalid_request_error", "client_disconnected"),
    # Starlette's: the client went away while its body was still arriving.
    ClientDisconnect: ErrorKind(499, "invalid_request_error", "client_disconnected"),
    NonFiniteEmbeddingError: ErrorKind(500, "server_error", "non_finite_embedding"),
    NotReadyError: ErrorKind(503, "server_error", "not_ready"),
    BatcherStopped: ErrorKind(503, "server_error", "shutting_down"),
    DeviceOutOfMemoryError: ErrorKind(503, "server_error", "out_of_memory"),
    DeviceFailedError: ErrorKind(503, "server_error", "device_failed"),
}
INTERNAL = ErrorKind(500, "server_error", "internal_error")


def kind_of(exc: BaseException) -> ErrorKind:
    for cls in type(exc).__mro__:
        kind = ERROR_TABLE.get(cls)
        if kind is not None:
            return kind
    return INTERNAL


def error_body(kind: ErrorKind, message: str, param: str | None = None) -> bytes:
    error = {"message": message, "type": kind.type, "param": param, "code": kind.code}
    return orjson.dumps({"error": error})


def error_response(
    exc: BaseException, message: str | None = None, headers: dict[str, str] | None = None
) -> Response:
    kind = kind_of(exc)
    if kind is INTERNAL:
        # Never leak internals (paths, tensors) to clients; the log has the traceback.
        message = "internal server error"
    param = getattr(exc, "param", None)
    body = error_body(kind, message or str(exc) or kind.type, param)
    if kind.status == 429:
        headers = {"Retry-After": "1", **(headers or {})}
    return Response(body, status_code=kind.status, media_type="application/json", headers=headers)
