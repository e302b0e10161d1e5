"""/openapi.json and /docs, built from the endpoint table (service.routes.ENDPOINTS).

The routes are served by service.front, not by FastAPI's route machinery, so FastAPI cannot derive
the document from them; this module does, from the same table the server dispatches on: every
route with its request model, its 200 body, every error status it answers (each in the OpenAI
envelope, with the error codes the error table gives that status) and its response headers.

The document is exact: once the model has loaded it is built again with what that model accepts
(its names, prompt names, dimensions, token ids, truncation limits: `Accepted`), so a request the
document allows is one the server serves, and one it forbids is refused (schemathesis checks
both ways). The document and the Swagger UI page are serialised when built; serving them costs a
dictionary lookup, like any other route, and the other routes pay nothing for them.
"""

from __future__ import annotations

import http
from collections import defaultdict
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

import orjson
from fastapi.openapi.docs import get_swagger_ui_html
from pydantic import BaseModel
from pydantic.json_schema import models_json_schema

from service import contract
from service.batcher import BatcherStopped
from service.errors import (
    ERROR_TABLE,
    INTERNAL,
    HeadersTooLargeError,
    MalformedRequestError,
    RequestTimeoutError,
    RequestTooLargeError,
    TooManyConnectionsError,
)
from service.front import Call, Endpoint, Reply
from service.schemas import ErrorEnvelope

OPENAPI_PATH = "/openapi.json"
DOCS_PATH = "/docs"
_REF = "#/components/schemas/{model}"
_ERROR_REF = {"$ref": _REF.format(model=ErrorEnvelope.__name__)}
_HEADERS = {
    "X-Request-ID": "The request's id: the client's X-Request-ID when valid, else a new one; "
    "every log line of the request carries it.",
    "X-Truncated-Inputs": "How many inputs were cut to the model's maximum length.",
    "Retry-After": "Seconds to wait before retrying.",
    "Retry-After-Ms": "The same wait in milliseconds, unrounded (the openai SDK reads it first).",
}


ANY_ROUTE_ERRORS: dict[int, tuple[type[BaseException], ...]] = {
    400: (MalformedRequestError,),
    408: (RequestTimeoutError,),
    413: (RequestTooLargeError,),
    431: (HeadersTooLargeError,),
    503: (TooManyConnectionsError, BatcherStopped),
}
"""What any operation can be answered whatever its route: the HTTP layer's refusals before a route
is reached (service.httpserver: a malformed request, a late head, an oversized head, no
connection to spare, a head or body still arriving at shutdown) and the body limit, checked on
Content-Length for every route (service.front)."""
ANY_ROUTE_NOTE = (
    "Any operation may also be answered, before its route is reached, 400 malformed_request, "
    "408 request_timeout (the request line and headers were late), 413 request_too_large, 431 "
    "headers_too_large, or 503 too_many_connections (with Retry-After) or shutting_down; these "
    "say `Connection: close`."
)


@dataclass(frozen=True)
class Accepted:
    """What the loaded model accepts, narrower than the request models' types."""

    properties: Mapping[str, Mapping[str, dict[str, Any]]] = field(default_factory=dict)
    """Request model name -> property -> the JSON schema of the values served."""
    path_params: Mapping[str, dict[str, Any]] = field(default_factory=dict)
    """Path parameter -> the JSON schema of the values served."""


_KEPT = ("title", "description", "default")
"""What a property keeps of its generic schema when `Accepted` narrows it."""


def build_document(
    endpoints: Iterable[Endpoint],
    *,
    title: str,
    version: str,
    description: str = "",
    accepted: Accepted | None = None,
) -> dict[str, Any]:
    """The OpenAPI 3.1 document of `endpoints`, narrowed to what `accepted` says."""
    accepted = accepted or Accepted()
    endpoints = [endpoint for endpoint in endpoints if endpoint.in_schema]
    models: list[type[BaseModel]] = [ErrorEnvelope]
    for endpoint in endpoints:
        models += [m for m in (endpoint.request, endpoint.response) if m is not None]
    unique = list(dict.fromkeys(models))
    _, schemas = models_json_schema([(model, "validation") for model in unique], ref_template=_REF)
    definitions = schemas.get("$defs", {})
    for model, narrowed in accepted.properties.items():
        properties = definitions[model]["properties"]
        for name, schema in narrowed.items():
            kept = {key: value for key, value in properties[name].items() if key in _KEPT}
            properties[name] = {**kept, **schema}
    paths: dict[str, dict[str, Any]] = defaultdict(dict)
    for endpoint in endpoints:
        paths[endpoint.path][endpoint.method.lower()] = _operation(endpoint, accepted)
    return {
        "openapi": "3.1.0",
        "info": {
            "title": title,
            "version": version,
            "description": f"{description} {ANY_ROUTE_NOTE}".strip(),
        },
        "paths": dict(paths),
        "components": {
            "schemas": definitions,
            "securitySchemes": {
                "apiKey": {
                    "type": "http",
                    "scheme": "bearer",
                    "description": "Required on the routes that list it, only when the server "
                    f"has API keys ({contract.ENV_PREFIX}API_KEYS or "
                    f"{contract.ENV_API_KEYS_FILE}).",
                }
            },
        },
    }


def _operation(endpoint: Endpoint, accepted: Accepted) -> dict[str, Any]:
    success: dict[str, Any] = {"description": "OK", "headers": _headers(endpoint.headers)}
    if endpoint.response is not None:
        schema: dict[str, Any] = {"$ref": _REF.format(model=endpoint.response.__name__)}
    else:
        schema = {"type": "string"}
    success["content"] = {endpoint.media_type: {"schema": schema}}
    responses: dict[str, Any] = {"200": success}
    for status in sorted({*endpoint.errors, *ANY_ROUTE_ERRORS, INTERNAL.status}):
        extra: tuple[str, ...] = ("Retry-After", "Retry-After-Ms") if status == 429 else ()
        if status == 503:
            extra = ("Retry-After",)  # too_many_connections, from the HTTP layer
        own = status in endpoint.errors or status == INTERNAL.status
        responses[str(status)] = {
            "description": _error_description(status, None if own else ANY_ROUTE_ERRORS[status]),
            "headers": _headers(extra),
            "content": {"application/json": {"schema": _ERROR_REF}},
        }
    operation: dict[str, Any] = {
        "summary": endpoint.summary,
        "operationId": endpoint.handler.__name__,
        "tags": list(endpoint.tags),
        "responses": responses,
    }
    described = [endpoint.description] if endpoint.description else []
    if endpoint.aliases:
        also = ", ".join(f"`{alias}`" for alias in endpoint.aliases)
        described.append(f"Also served at {also}, the same endpoint (a base URL without /v1).")
    if described:
        operation["description"] = " ".join(described)
    if endpoint.path_params:
        # The parameter takes the rest of the path, slashes included (Hub ids hold one).
        operation["parameters"] = [
            {
                "name": name,
                "in": "path",
                "required": True,
                "schema": accepted.path_params.get(name, {"type": "string", "minLength": 1}),
            }
            for name in endpoint.path_params
        ]
    if endpoint.request is not None:
        ref = {"$ref": _REF.format(model=endpoint.request.__name__)}
        content = {"application/json": {"schema": ref}}
        operation["requestBody"] = {"required": True, "content": content}
    if endpoint.needs_key:
        operation["security"] = [{"apiKey": []}, {}]  # {}: open when no keys are configured
    return operation


def _headers(names: Iterable[str]) -> dict[str, Any]:
    return {
        name: {"description": _HEADERS[name], "schema": {"type": "string"}}
        for name in ("X-Request-ID", *names)
    }


def _error_description(status: int, only: tuple[type[BaseException], ...] | None = None) -> str:
    """The status's phrase and the error codes the error table answers with it (`only` those
    of these exception classes, for a status only the HTTP layer answers on the route)."""
    if only is not None:
        kinds = [ERROR_TABLE[cls] for cls in only]
    else:
        kinds = [kind for kind in ERROR_TABLE.values() if kind.status == status]
    if status == INTERNAL.status:
        kinds.append(INTERNAL)
    codes = sorted({f"{kind.type}/{kind.code}" for kind in kinds})
    phrase = http.HTTPStatus(status).phrase
    return f"{phrase} (OpenAI error envelope; type/code: {', '.join(codes)})"


class ApiDocument:
    """GET /openapi.json and GET /docs (Swagger UI): the document of the endpoint table,
    serialised when built, at start and again once the model has loaded (`describe`)."""

    def __init__(
        self, endpoints: Iterable[Endpoint], *, title: str, version: str, description: str
    ) -> None:
        self._endpoints = tuple(endpoints)
        self._meta = {"title": title, "version": version, "description": description}
        page = get_swagger_ui_html(openapi_url=OPENAPI_PATH, title=f"{title} - API").body
        self._html = Reply(bytes(page), media_type=b"text/html; charset=utf-8")
        self.document: dict[str, Any] = {}
        self._json = Reply(b"")
        self.describe(None)

    def describe(self, accepted: Accepted | None) -> dict[str, Any]:
        """Build (and serialise) the document again, narrowed to what `accepted` says."""
        self.document = build_document(self._endpoints, accepted=accepted, **self._meta)
        self._json = Reply(orjson.dumps(self.document))
        return self.document

    def endpoints(self) -> tuple[Endpoint, Endpoint]:
        async def openapi_document(_: Call) -> Reply:
            return self._json

        async def swagger_ui(_: Call) -> Reply:
            return self._html

        return (
            Endpoint("GET", OPENAPI_PATH, openapi_document, "This document", in_schema=False),
            Endpoint("GET", DOCS_PATH, swagger_ui, "Swagger UI", in_schema=False),
        )
