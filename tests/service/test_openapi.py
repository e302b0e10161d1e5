"""/openapi.json and /docs: every route the server answers is documented, with its request and
response schemas and every error status in the OpenAI envelope; schemathesis then generates
requests from the document (valid and invalid ones) against a live server and checks that no
answer is a 5xx, an undocumented status, or a body that does not match its schema."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

import httpx
import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from schemathesis import GenerationMode
from schemathesis.specs.openapi.checks import unsupported_method, missing_required_header, ignored_auth
from schemathesis.checks import (
    content_type_conformance,
    not_a_server_error,
    response_headers_conformance,
    response_schema_conformance,
    status_code_conformance,
)
from service_testkit import LiveServer

from service import contract
from service.encoder import Encoder
from service.errors import ERROR_TABLE
from service.openapi import DOCS_PATH, OPENAPI_PATH
from service.routes import ENDPOINTS

_NOT_IN_DOCUMENT = {("GET", OPENAPI_PATH), ("GET", DOCS_PATH)}


@pytest.fixture(scope="module")
def server(start_server: Callable[..., LiveServer], tiny_encoder: Encoder) -> LiveServer:
    # Small limits, so generated requests also reach the 413 and token-cap paths.
    return start_server(tiny_encoder, max_request_bytes=16 * 1024, max_request_tokens=2048)


@pytest.fixture(scope="module")
def document(server: LiveServer) -> dict[str, Any]:
    response = httpx.get(f"{server.base_url}{OPENAPI_PATH}")
    assert response.status_code == 200
    body: dict[str, Any] = response.json()
    return body


def test_every_route_the_server_answers_is_documented(
    server: LiveServer, document: dict[str, Any]
) -> None:
    front = server.app.front
    served = {(method, path) for path, methods in front.routes.items() for method in methods}
    served |= {(method, path) for path, methods in front.prefixes.values() for method in methods}
    documented = {
        (method.upper(), path)
        for path, operations in document["paths"].items()
        for method in operations
    }
    assert documented == served - _NOT_IN_DOCUMENT
    assert set(contract.API_PATHS.values()) <= set(document["paths"])
    # Nothing is served by the framework's own routes behind the table, undocumented.
    assert [route.path for route in server.app.router.routes] == []


def test_each_operation_has_its_schemas_and_every_error_in_the_envelope(
    document: dict[str, Any],
) -> None:
    schemas = document["components"]["schemas"]
    envelope = {"$ref": "#/components/schemas/ErrorEnvelope"}
    assert schemas["ErrorEnvelope"]["required"] == ["error"]
    for path, operations in document["paths"].items():
        for method, operation in operations.items():
            where = f"{method.upper()} {path}"
            responses = operation["responses"]
            assert "200" in responses, where
            assert "X-Request-ID" in responses["200"]["headers"], where
            assert "500" in responses, where
            for status, response in responses.items():
                if status != "200":
                    assert response["content"]["application/json"]["schema"] == envelope, where
            if method == "post":
                ref = operation["requestBody"]["content"]["application/json"]["schema"]["$ref"]
                assert ref.removeprefix("#/components/schemas/") in schemas, where
    embeddings = document["paths"][contract.EMBEDDINGS_PATH]["post"]
    assert {"400", "401", "404", "413", "429", "503"} <= set(embeddings["responses"])
    # Each error description names the codes the error table answers with that status.
    for kind in ERROR_TABLE.values():
        described = embeddings["responses"].get(str(kind.status), {}).get("description", "")
        if kind.status != 499 and str(kind.status) in embeddings["responses"]:
            assert f"{kind.type}/{kind.code}" in described
    request = schemas["EmbeddingsRequest"]
    assert len(request["properties"]["input"]["anyOf"]) == 4
    assert "Retry-After" in embeddings["responses"]["429"]["headers"]


def test_the_document_and_the_docs_page_are_built_once(server: LiveServer) -> None:
    routes = server.app.front.routes

    async def twice(path: str) -> tuple[Any, Any]:
        handler = routes[path]["GET"]
        return await handler(None), await handler(None)

    for path in (OPENAPI_PATH, DOCS_PATH):
        first, second = asyncio.run(twice(path))
        assert first is second  # the same bytes, serialised at start
    assert server.app.openapi() is server.app.openapi_schema
    page = httpx.get(f"{server.base_url}{DOCS_PATH}")
    assert page.status_code == 200
    assert page.headers["content-type"].startswith("text/html")
    assert OPENAPI_PATH in page.text


@pytest.fixture(scope="module")
def api_schema(server: LiveServer) -> Any:
    return schemathesis.openapi.from_url(f"{server.base_url}{OPENAPI_PATH}")


_CHECKS = [
    not_a_server_error,
    status_code_conformance,
    content_type_conformance,
    response_headers_conformance,
    response_schema_conformance,
]


@pytest.mark.parametrize(
    ("method", "path"),
    [(endpoint.method, endpoint.path) for endpoint in ENDPOINTS if endpoint.in_schema],
)
def test_generated_requests_get_documented_answers(api_schema: Any, method: str, path: str) -> None:
    """Valid and invalid requests generated from the document (a bounded number per operation)."""
    operation = api_schema[path][method]
    strategy = operation.as_strategy(generation_mode=GenerationMode.POSITIVE) | (
        operation.as_strategy(generation_mode=GenerationMode.NEGATIVE)
    )

    @given(case=strategy)
    @settings(
        max_examples=30,
        deadline=None,
        database=None,
        suppress_health_check=list(HealthCheck),
    )
    def answers_as_documented(case: schemathesis.Case) -> None:
        case.call_and_validate(excluded_checks=[unsupported_method, missing_required_header, ignored_auth])

    answers_as_documented()
