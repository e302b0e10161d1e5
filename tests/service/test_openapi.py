"""/openapi.json and /docs: every route the server answers is documented, with its request and
response schemas and every error status in the OpenAI envelope, narrowed to what the loaded model
accepts; schemathesis then generates requests from the document (valid and invalid ones) against a
live server and runs every check but three: no 5xx, no undocumented status or body, every
schema-valid request served and every schema-invalid one refused."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from schemathesis import GenerationMode
from schemathesis.checks import (
    content_type_conformance,
    not_a_server_error,
    response_headers_conformance,
    response_schema_conformance,
    status_code_conformance,
)
from schemathesis.specs.openapi.checks import (
    ignored_auth,
    missing_required_header,
    positive_data_acceptance,
    unsupported_method,
)
from service_testkit import TINY_HIDDEN, TINY_MAX_TOKENS, LiveServer

from service import contract
from service.encoder import Encoder, EncoderConfig
from service.errors import ERROR_TABLE
from service.openapi import DOCS_PATH, OPENAPI_PATH
from service.routes import ENDPOINTS

_NOT_IN_DOCUMENT = {("GET", OPENAPI_PATH), ("GET", DOCS_PATH)}
PROMPTS = {"query": "hello world ", "passage": ""}
ALIAS = "text-embedding-3-small"


@pytest.fixture(scope="module")
def encoder(tiny_model_dir: Path) -> Encoder:
    """The tiny model with prompts and Matryoshka sizes: the document must enumerate both."""
    config = EncoderConfig(model=str(tiny_model_dir), prompts=PROMPTS, matryoshka_dimensions=[8])
    return Encoder.load(config)


@pytest.fixture(scope="module")
def server(start_server: Callable[..., LiveServer], encoder: Encoder) -> LiveServer:
    return start_server(encoder, model_aliases=[ALIAS])


@pytest.fixture(scope="module")
def limited(start_server: Callable[..., LiveServer], encoder: Encoder) -> LiveServer:
    # Small limits, so generated requests also reach the 413 and token-cap paths.
    return start_server(encoder, max_request_bytes=16 * 1024, max_request_tokens=2048)


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
    served = {
        (method, route.label)
        for route in (*front.routes.values(), *front.prefixes.values())
        for method in route.methods
    }
    documented = {
        (method.upper(), path)
        for path, operations in document["paths"].items()
        for method in operations
    }
    assert documented == served - _NOT_IN_DOCUMENT
    assert set(contract.API_PATHS.values()) <= set(document["paths"])
    # An alias is the same endpoint, documented once: under its path, named in the description.
    aliases = {p for p in front.routes if front.routes[p].label != p}
    aliases |= {p + "{model}" for p in front.prefixes if front.prefixes[p].label != p + "{model}"}
    assert aliases == {"/embeddings", "/models", "/models/{model}"}
    for endpoint in ENDPOINTS:
        for alias in endpoint.aliases:
            operation = document["paths"][endpoint.path][endpoint.method.lower()]
            assert f"`{alias}`" in operation["description"]
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
    assert {"Retry-After", "Retry-After-Ms"} <= set(embeddings["responses"]["429"]["headers"])


# What the HTTP layer answers any route with (service.httpserver, and the body limit of
# service.front), each status with the codes it uses there.
HTTP_LAYER = {
    "400": "invalid_request_error/malformed_request",
    "408": "invalid_request_error/request_timeout",
    "413": "invalid_request_error/request_too_large",
    "431": "invalid_request_error/headers_too_large",
    "503": "server_error/too_many_connections",
}


def test_every_operation_documents_what_the_http_layer_may_answer_it(
    document: dict[str, Any],
) -> None:
    """The server sends 408 (a late head or body), 431, 503 too_many_connections and 400
    malformed_request on any route; the document used to leave them out."""
    for path, operations in document["paths"].items():
        for method, operation in operations.items():
            responses = operation["responses"]
            for status, code in HTTP_LAYER.items():
                assert code in responses[status]["description"], (method, path, status)
    health = document["paths"][contract.HEALTH_PATH]["get"]["responses"]
    # Only the codes that reach this route: /health has no input to be invalid.
    assert "context_length_exceeded" not in health["400"]["description"]
    assert "shutting_down" in health["503"]["description"]
    assert "Retry-After" in health["503"]["headers"]
    embeddings = document["paths"][contract.EMBEDDINGS_PATH]["post"]["responses"]
    assert "context_length_exceeded" in embeddings["400"]["description"]
    assert "malformed_request" in document["info"]["description"]


def test_the_document_and_the_docs_page_are_serialised_when_built(server: LiveServer) -> None:
    routes = server.app.front.routes

    async def twice(path: str) -> tuple[Any, Any]:
        handler = routes[path].methods["GET"].handler
        return await handler(None), await handler(None)

    for path in (OPENAPI_PATH, DOCS_PATH):
        first, second = asyncio.run(twice(path))
        assert first is second  # the same bytes, serialised when the document was built
    served = httpx.get(f"{server.base_url}{OPENAPI_PATH}").json()
    assert server.app.openapi() == served
    page = httpx.get(f"{server.base_url}{DOCS_PATH}")
    assert page.status_code == 200
    assert page.headers["content-type"].startswith("text/html")
    assert OPENAPI_PATH in page.text


def test_the_document_enumerates_what_the_loaded_model_accepts(
    document: dict[str, Any], encoder: Encoder
) -> None:
    schemas = document["components"]["schemas"]
    request = schemas["EmbeddingsRequest"]["properties"]
    names = [encoder.info.model_id, ALIAS]
    assert request["model"]["anyOf"][0]["enum"] == names
    prompt = {"type": "string", "enum": sorted(PROMPTS)}
    for model in ("EmbeddingsRequest", "EmbeddingRequest", "SimilarityRequest"):
        assert schemas[model]["properties"]["prompt_name"]["anyOf"][0] == prompt
    assert request["dimensions"]["anyOf"][0]["enum"] == [8, TINY_HIDDEN]
    limits = request["truncate_prompt_tokens"]["anyOf"][0]["anyOf"]
    assert limits == [{"const": -1}, {"type": "integer", "minimum": 3, "maximum": TINY_MAX_TOKENS}]
    token_ids = request["input"]["anyOf"][2]["items"]
    assert token_ids == {"type": "integer", "minimum": 0, "maximum": 100255}  # cl100k_base text
    model_param = document["paths"][f"{contract.MODELS_PATH}/{{model}}"]["get"]["parameters"][0]
    assert model_param["schema"] == {"type": "string", "enum": names}
    assert "apiKey" in str(document["paths"][contract.MODELS_PATH]["get"]["security"])
    assert "security" not in document["paths"][contract.INFO_PATH]["get"]


# What a request's own options ask the server to refuse, which no schema can describe (it counts
# no tokens): truncate=false refuses an over-long input, add_special_tokens=false an input that
# leaves no token at all.
_REFUSALS_ASKED_FOR = {
    "truncate": "context_length_exceeded",
    "add_special_tokens": "empty_input",
}


def positive_data_acceptance_but_asked_refusals(ctx: Any, response: Any, case: Any) -> Any:
    """schemathesis' positive_data_acceptance, except for the refusals the request's own
    options asked for (_REFUSALS_ASKED_FOR)."""
    body = case.body if isinstance(case.body, dict) else {}
    if response.status_code == 400:
        code = response.json()["error"]["code"]
        if any(body.get(name) is False and code == c for name, c in _REFUSALS_ASKED_FOR.items()):
            return None
    return positive_data_acceptance(ctx, response, case)


# Every check but these three: unsupported_method and missing_required_header probe HTTP details
# no client relies on, and ignored_auth needs a server with keys (test_api covers them); positive
# data acceptance allows the refusals a request's options ask for.
_EXCLUDED = [unsupported_method, missing_required_header, ignored_auth, positive_data_acceptance]
_ADDED = [positive_data_acceptance_but_asked_refusals]


def generated_cases(api_schema: Any, method: str, path: str) -> Any:
    operation = api_schema[path][method]
    return operation.as_strategy(generation_mode=GenerationMode.POSITIVE) | (
        operation.as_strategy(generation_mode=GenerationMode.NEGATIVE)
    )


def run_generated(strategy: Any, examples: int = 30, **validate: Any) -> None:
    @given(case=strategy)
    @settings(
        max_examples=examples,
        deadline=None,
        database=None,
        suppress_health_check=list(HealthCheck),
    )
    def answers_as_documented(case: schemathesis.Case) -> None:
        case.call_and_validate(**validate)

    answers_as_documented()


@pytest.fixture(scope="module")
def api_schema(server: LiveServer) -> Any:
    return schemathesis.openapi.from_url(f"{server.base_url}{OPENAPI_PATH}")


@pytest.mark.parametrize(
    ("method", "path"),
    [(endpoint.method, endpoint.path) for endpoint in ENDPOINTS if endpoint.in_schema],
)
def test_generated_requests_get_documented_answers(api_schema: Any, method: str, path: str) -> None:
    """Valid and invalid requests generated from the document (a bounded number per operation):
    every check, positive-data acceptance and negative-data rejection included."""
    run_generated(
        generated_cases(api_schema, method, path),
        excluded_checks=_EXCLUDED,
        additional_checks=_ADDED,
    )


@pytest.mark.parametrize("token_ids", ["model", "reject"])
def test_each_token_id_meaning_is_described_exactly(
    start_server: Callable[..., LiveServer], encoder: Encoder, token_ids: str
) -> None:
    served = start_server(encoder, token_ids=token_ids)
    schema = schemathesis.openapi.from_url(f"{served.base_url}{OPENAPI_PATH}")
    strategy = generated_cases(schema, "POST", contract.EMBEDDINGS_PATH)
    run_generated(strategy, examples=20, excluded_checks=_EXCLUDED, additional_checks=_ADDED)


_LIMIT_CHECKS = [
    not_a_server_error,
    status_code_conformance,
    content_type_conformance,
    response_headers_conformance,
    response_schema_conformance,
]


@pytest.mark.parametrize(
    ("method", "path"),
    [(endpoint.method, endpoint.path) for endpoint in ENDPOINTS if endpoint.request is not None],
)
def test_requests_over_the_servers_limits_get_documented_answers(
    limited: LiveServer, method: str, path: str
) -> None:
    """The operator's limits (16 KiB bodies, 2048 tokens a request) are not in the schema, so a
    schema-valid request may be refused here (413, or 400 over the token cap): every answer is
    still a documented one in the envelope."""
    schema = schemathesis.openapi.from_url(f"{limited.base_url}{OPENAPI_PATH}")
    run_generated(generated_cases(schema, method, path), examples=20, checks=_LIMIT_CHECKS)
