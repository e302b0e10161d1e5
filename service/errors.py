"""Every error the API returns, in the OpenAI envelope {"error": {message, type, param, code}}.

One table maps exception classes to (HTTP status, type, code); service.app uses it for our
exceptions, the batcher's and the encoder's alike, so a status is decided in exactly one place.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import orjson
from starlette.responses import Response

from service.batcher import BatcherStopped, Overloaded, QueueTimeout, TooLargeForQueue
from service.model_types import (
    DeviceFailedError,
    DeviceOutOfMemoryError,
    EmptyInputError,
    InputTooLongError,
    NonFiniteEmbeddingError,
    SparseTextError,
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


# The HTTP layer's own refusals (service.httpserver), before a request reaches a route.
class MalformedRequestError(ApiError):
    """The bytes are not an HTTP/1.1 request (the parser's reason in the message)."""


class HeadersTooLargeError(ApiError):
    """The request line and headers are over the size or count limit."""


class RequestTimeoutError(ApiError):
    """The request's head or body did not arrive in time."""


class TooManyConnectionsError(ApiError):
    """Every connection the server allows is busy with a request."""


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
    SparseTextError: ErrorKind(400, "invalid_request_error", "input_too_sparse"),
    EmptyInputError: ErrorKind(400, "invalid_request_error", "empty_input"),
    TooLargeForQueue: ErrorKind(400, "invalid_request_error", "too_many_inputs"),
    AuthenticationError: ErrorKind(401, "authentication_error", "invalid_api_key"),
    ModelNotFoundError: ErrorKind(404, "invalid_request_error", "model_not_found"),
    RouteNotFoundError: ErrorKind(404, "invalid_request_error", "not_found"),
    MethodNotAllowedError: ErrorKind(405, "invalid_request_error", "method_not_allowed"),
    RequestTooLargeError: ErrorKind(413, "invalid_request_error", "request_too_large"),
    MalformedRequestError: ErrorKind(400, "invalid_request_error", "malformed_request"),
    RequestTimeoutError: ErrorKind(408, "invalid_request_error", "request_timeout"),
    HeadersTooLargeError: ErrorKind(431, "invalid_request_error", "headers_too_large"),
    Overloaded: ErrorKind(429, "rate_limit_error", "overloaded"),
    QueueTimeout: ErrorKind(429, "rate_limit_error", "queue_timeout"),
    # nginx's "client closed request": keeps disconnects apart from our errors in the metrics.
    ClientDisconnectedError: ErrorKind(499, "invalid_request_error", "client_disconnected"),
    # Starlette's: the client went away while its body was still arriving.
    NonFiniteEmbeddingError: ErrorKind(500, "server_error", "non_finite_embedding"),
    NotReadyError: ErrorKind(503, "server_error", "not_ready"),
    BatcherStopped: ErrorKind(503, "server_error", "shutting_down"),
    DeviceOutOfMemoryError: ErrorKind(503, "server_error", "out_of_memory"),
    DeviceFailedError: ErrorKind(503, "server_error", "device_failed"),
    TooManyConnectionsError: ErrorKind(503, "server_error", "too_many_connections"),
}
INTERNAL = ErrorKind(500, "server_error", "internal_error")
CLOSES_CONNECTION = frozenset({408, 413, 431})
"""Statuses answered before the whole request was read: what is left of it would be read as the
next request, so the answer says `Connection: close` and the server closes the connection instead
of reading (and discarding) the rest. RFC 9110 15.5.9 (408: the server SHOULD send "close"), 15.5.14
(413: the server MAY close the connection)."""


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
    if isinstance(exc, Overloaded):
        # Whole seconds (RFC 9110 10.2.3), rounded up: a client back that early finds room. The
        # openai SDK prefers retry-after-ms (`_parse_retry_after_header`, openai 3.63): the exact
        # delay spreads its retries instead of bunching them on whole seconds.
        retry = {
            "Retry-After": str(max(1, math.ceil(exc.retry_after_s))),
            "Retry-After-Ms": str(max(1, math.ceil(exc.retry_after_s * 1000))),
        }
        headers = {**retry, **(headers or {})}
    if kind.status in CLOSES_CONNECTION:
        # uvicorn closes the connection after an answer that carries this header.
        headers = {"Connection": "close", **(headers or {})}
    return Response(body, status_code=kind.status, media_type="application/json", headers=headers)


def describe_validation(errors: Any) -> InvalidRequestError:
    """pydantic's list of errors -> one clear message naming the field (OpenAI style)."""
    first = errors[0]
    loc = [str(part) for part in first.get("loc", ()) if part != "body"]
    kind = first.get("type", "")
    if kind == "json_invalid":
        detail = first.get("ctx", {}).get("error", "")
        if "surrogate" in detail or "hex escape" in detail:
            # jiter's words for a \ud800-\udfff escape without its pair ("unexpected end of hex
            # escape", "lone leading surrogate") read like a syntax error; the text is the problem.
            where = detail[detail.index(" at line ") :] if " at line " in detail else ""
            return InvalidRequestError(
                "the request body contains a lone UTF-16 surrogate escape (\\ud800-\\udfff "
                f"without its pair){where}: that is not a Unicode character, so the text cannot "
                "be embedded; send valid UTF-8 text"
            )
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
