"""The HTTP API on a live uvicorn (127.0.0.1): the real openai SDK, raw HTTP for bad input."""

from __future__ import annotations

import base64
import json
import logging
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import openai
import pytest
from service_testkit import TINY_HIDDEN, TINY_MAX_TOKENS, LiveServer, build_tiny_bert, free_port

from service import contract
from service.encoder import Encoder, EncoderConfig
from service.logs import RequestIdFilter

ALIAS = "text-embedding-3-small"
KEY = "sk-test-123"


@pytest.fixture(scope="module")
def server(start_server: Callable[..., LiveServer], tiny_model_dir: Path) -> LiveServer:
    # The tiny model's vectors, with the Matryoshka sizes a model's config.json would declare.
    matryoshka = EncoderConfig(model=str(tiny_model_dir), matryoshka_dimensions=[8, 16])
    return start_server(
        Encoder.load(matryoshka),
        model_aliases=[ALIAS],
        max_request_bytes=64 * 1024,
        max_request_tokens=4096,
        metrics_port=free_port(),
    )


@pytest.fixture(scope="module")
def client(server: LiveServer) -> openai.OpenAI:
    return openai.OpenAI(base_url=f"{server.base_url}/v1", api_key="unused", max_retries=0)


def post(server: LiveServer, path: str, body: Any, **kwargs: Any) -> httpx.Response:
    content = body if isinstance(body, bytes | str) else json.dumps(body)
    headers = {"content-type": "application/json", **kwargs.pop("headers", {})}
    return httpx.post(f"{server.base_url}{path}", content=content, headers=headers, timeout=30)


def assert_envelope(response: httpx.Response, status: int, param: str | None = None) -> dict:
    assert response.status_code == status, response.text
    error = response.json()["error"]
    assert set(error) == {"message", "type", "param", "code"}
    assert error["message"]
    assert error["param"] == param
    return error


# --- The OpenAI SDK as the client -----------------------------------------------------------------
def test_sdk_float(client: openai.OpenAI, tiny_encoder: Encoder) -> None:
    texts = ["hello world", "the cat sat on the mat"]
    response = client.embeddings.create(model=ALIAS, input=texts, encoding_format="float")
    assert response.model == str(tiny_encoder.info.model_id)
    assert [d.index for d in response.data] == [0, 1]
    vectors = np.array([d.embedding for d in response.data], dtype=np.float32)
    np.testing.assert_allclose(vectors, tiny_encoder.encode(texts), atol=1e-5)
    expected_tokens = tiny_encoder.tokenize(texts).token_count
    assert response.usage.prompt_tokens == response.usage.total_tokens == expected_tokens


def test_sdk_default_base64_and_dimensions(client: openai.OpenAI, tiny_encoder: Encoder) -> None:
    full = client.embeddings.create(model=ALIAS, input="hello world")  # SDK asks for base64
    np.testing.assert_allclose(
        full.data[0].embedding, tiny_encoder.encode(["hello world"])[0], atol=1e-5
    )
    short = client.embeddings.create(model=ALIAS, input="hello world", dimensions=8)
    vector = np.array(short.data[0].embedding)
    assert vector.shape == (8,)
    assert np.linalg.norm(vector) == pytest.approx(1.0, abs=1e-5)
    head = np.array(full.data[0].embedding[:8])
    np.testing.assert_allclose(vector, head / np.linalg.norm(head), atol=1e-5)


def test_sdk_token_ids(client: openai.OpenAI, tiny_encoder: Encoder) -> None:
    ids = [15339, 1917]  # "hello world" in cl100k_base, OpenAI's tokenizer (test_token_ids.py)
    response = client.embeddings.create(model=ALIAS, input=[ids, ids[:1]])
    np.testing.assert_allclose(
        response.data[0].embedding, tiny_encoder.encode(["hello world"])[0], atol=1e-5
    )
    np.testing.assert_allclose(
        response.data[1].embedding, tiny_encoder.encode(["hello"])[0], atol=1e-5
    )


def test_routes_without_v1_are_the_same_endpoints(
    server: LiveServer, tiny_encoder: Encoder
) -> None:
    """A base URL without /v1 (what TEI and infinity accept) reaches the same endpoints."""
    bare = openai.OpenAI(base_url=server.base_url, api_key="unused", max_retries=0)
    before = server.metric(
        contract.REQUESTS_TOTAL, {"route": contract.EMBEDDINGS_PATH, "status": "200"}
    )
    response = bare.embeddings.create(model=ALIAS, input=["hello world"], encoding_format="float")
    np.testing.assert_allclose(
        response.data[0].embedding, tiny_encoder.encode(["hello world"])[0], atol=1e-5
    )
    after = server.metric(
        contract.REQUESTS_TOTAL, {"route": contract.EMBEDDINGS_PATH, "status": "200"}
    )
    assert after == before + 1
    served = tiny_encoder.info.model_id
    assert [m.id for m in bare.models.list().data] == [served, ALIAS]
    assert bare.models.retrieve(served).id == served
    with pytest.raises(openai.NotFoundError):
        bare.models.retrieve("gpt-4")


def test_raw_base64_is_little_endian_float32(server: LiveServer, tiny_encoder: Encoder) -> None:
    response = post(server, contract.EMBEDDINGS_PATH, {"input": "hi", "encoding_format": "base64"})
    raw = base64.b64decode(response.json()["data"][0]["embedding"])
    vector = np.frombuffer(raw, dtype="<f4")
    np.testing.assert_allclose(vector, tiny_encoder.encode(["hi"])[0], atol=1e-6)


def test_request_id_is_echoed(server: LiveServer) -> None:
    response = post(
        server, contract.EMBEDDINGS_PATH, {"input": "hi"}, headers={"x-request-id": "r-42"}
    )
    assert response.headers["x-request-id"] == "r-42"
    assert len(httpx.get(f"{server.base_url}/health").headers["x-request-id"]) == 32


def test_sdk_lists_and_retrieves_models(client: openai.OpenAI, tiny_encoder: Encoder) -> None:
    served = tiny_encoder.info.model_id
    models = client.models.list()
    assert [m.id for m in models.data] == [served, ALIAS]
    assert {(m.object, m.owned_by) for m in models.data} == {("model", "gpu-inference")}
    assert all(m.created > 0 for m in models.data)
    assert client.models.retrieve(ALIAS).id == ALIAS
    assert client.models.retrieve(served).id == served  # a Hub id holds a slash
    with pytest.raises(openai.NotFoundError) as missing:
        client.models.retrieve("gpt-4")
    assert missing.value.code == "model_not_found"


def test_a_flat_token_id_list_is_one_input_whatever_its_length(server: LiveServer) -> None:
    response = post(server, contract.EMBEDDINGS_PATH, {"input": [7] * 3000})
    assert response.status_code == 200, response.text
    assert len(response.json()["data"]) == 1
    assert response.json()["usage"]["truncated_inputs"] == 1


def test_a_lone_surrogate_is_named_as_such(server: LiveServer) -> None:
    for body in (b'{"input": "\\ud800"}', b'{"input": ["ok", "a\\udc00b"]}'):
        error = assert_envelope(post(server, contract.EMBEDDINGS_PATH, body), 400)
        assert "lone UTF-16 surrogate" in error["message"], error
        assert "line 1 column" in error["message"]


# --- Truncation is reported, not silent -----------------------------------------------------------
def test_over_long_text_is_truncated_and_reported(server: LiveServer) -> None:
    before = server.metric(contract.TRUNCATED_INPUTS_TOTAL)
    body = {"input": ["short text", "the cat sat on the mat " * 50]}
    response = post(server, contract.EMBEDDINGS_PATH, body)
    assert response.status_code == 200
    assert response.headers["x-truncated-inputs"] == "1"
    usage = response.json()["usage"]
    assert usage["truncated_inputs"] == 1
    assert usage["prompt_tokens"] == 4 + TINY_MAX_TOKENS
    assert server.metric(contract.TRUNCATED_INPUTS_TOTAL) == before + 1


def test_a_text_over_the_character_budget_is_cut_and_reported_the_same(server: LiveServer) -> None:
    cut = post(server, contract.EMBEDDINGS_PATH, {"input": "the cat sat on the mat " * 2500})
    whole = post(server, contract.EMBEDDINGS_PATH, {"input": "the cat sat on the mat " * 10})
    assert cut.status_code == whole.status_code == 200
    assert cut.json()["usage"] == whole.json()["usage"]  # 32 tokens, truncated
    assert cut.json()["data"][0]["embedding"] == whole.json()["data"][0]["embedding"]


def test_an_empty_text_is_the_models_special_tokens_alone(
    server: LiveServer, tiny_encoder: Encoder
) -> None:
    """ "" is embedded, as sentence-transformers and vLLM do (OpenAI refuses it), on every route:
    a client's empty document no longer fails its whole batch."""
    empty = tiny_encoder.encode_ids([[*tiny_encoder._prefix, *tiny_encoder._suffix]])[0]
    response = post(server, contract.EMBEDDINGS_PATH, {"input": ["hello world", ""]})
    assert response.status_code == 200, response.text
    data = response.json()["data"]
    np.testing.assert_allclose(data[1]["embedding"], empty, atol=1e-5)
    np.testing.assert_allclose(
        data[0]["embedding"], tiny_encoder.encode(["hello world"])[0], atol=1e-5
    )
    assert response.json()["usage"]["prompt_tokens"] == 4 + 2
    single = post(server, contract.EMBEDDING_PATH, {"text": ""})
    np.testing.assert_allclose(single.json()["embedding"], empty, atol=1e-5)
    scores = post(server, contract.SIMILARITY_PATH, {"source_text": "", "candidates": ["", "x"]})
    assert scores.json()["similarities"][0] == pytest.approx(1.0, abs=1e-5)


# --- Every bad input: a 4xx in the envelope, and the server stays ready ---------------------------
BAD_BODIES = [
    pytest.param({"input": []}, 400, "input", id="empty-list"),
    pytest.param({"input": "", "add_special_tokens": False}, 400, "input", id="nothing-to-read"),
    pytest.param({"input": ["hello"] * 2049}, 400, "input", id="2049-items"),
    pytest.param({"input": 42}, 400, "input", id="number"),
    pytest.param({"input": None}, 400, "input", id="null"),
    pytest.param({"input": {"text": "x"}}, 400, "input", id="object"),
    pytest.param({"input": ["a", 1]}, 400, "input", id="mixed-list"),
    pytest.param({"input": [1.5, 2]}, 400, "input", id="float-token"),
    pytest.param({"input": [True]}, 400, "input", id="bool-token"),
    pytest.param({"input": [[1], []]}, 400, "input", id="empty-token-list"),
    pytest.param({"input": [[5, 10**9]]}, 400, "input", id="token-outside-vocab"),
    # The tiny model reads 32 tokens: its first 32 Ki characters must hold them (service.textcut).
    pytest.param({"input": ["ok", " " * 40_000 + "cat"]}, 400, "input", id="too-sparse-to-cut"),
    pytest.param({}, 400, "input", id="missing-input"),
    pytest.param({"input": "x", "dimensions": 0}, 400, "dimensions", id="dimensions-0"),
    pytest.param({"input": "x", "dimensions": TINY_HIDDEN + 1}, 400, "dimensions", id="dims>dim"),
    pytest.param({"input": "x", "dimensions": 12}, 400, "dimensions", id="dims-not-trained"),
    pytest.param({"input": "x", "dimensions": "8"}, 400, "dimensions", id="dimensions-string"),
    pytest.param({"input": "x", "encoding_format": "int8"}, 400, "encoding_format", id="format"),
    pytest.param({"input": "x", "model": "gpt-4"}, 404, "model", id="unknown-model"),
    pytest.param([{"input": "x"}], 400, None, id="array-body"),
    pytest.param(b'{"input": ', 400, None, id="malformed-json"),
    pytest.param(b"", 400, None, id="empty-body"),
]


@pytest.mark.parametrize(("body", "status", "param"), BAD_BODIES)
def test_bad_input(
    server: LiveServer,
    body: Any,
    status: int,
    param: str | None,
    caplog: pytest.LogCaptureFixture,
) -> None:
    with caplog.at_level(logging.WARNING, logger="service"):
        error = assert_envelope(post(server, contract.EMBEDDINGS_PATH, body), status, param)
    # A client's mistake is not a server error: no ERROR line, no traceback.
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR], caplog.text
    if status == 404:
        assert error["code"] == "model_not_found"
    assert httpx.get(f"{server.base_url}/ready").status_code == 200


def test_oversized_body_gets_413(server: LiveServer) -> None:
    body = {"input": ["word " * 1000] * 20}  # ~100 KB, over the fixture's 64 KiB
    error = assert_envelope(post(server, contract.EMBEDDINGS_PATH, body), 413)
    assert error["code"] == "request_too_large"
    chunked = httpx.post(
        f"{server.base_url}{contract.EMBEDDINGS_PATH}",
        content=iter([json.dumps(body).encode()]),  # no Content-Length: counted while streamed
        timeout=30,
    )
    assert_envelope(chunked, 413)
    assert httpx.get(f"{server.base_url}/ready").status_code == 200


def test_per_request_token_cap(server: LiveServer) -> None:
    body = {"input": ["the cat sat on the mat " * 10] * 200}  # 200 x 32 tokens > 4096
    error = assert_envelope(post(server, contract.EMBEDDINGS_PATH, body), 400, "input")
    assert "4096" in error["message"]


def test_a_request_is_not_refused_for_its_total_by_default(
    start_server: Callable[..., LiveServer], tmp_path: Path
) -> None:
    """LangChain packs up to 300,000 cl100k tokens per request (its MAX_TOKENS_PER_REQUEST): with
    a 512-token model that is far more of the model's tokens (each Russian text of 299 cl100k
    tokens is cut to 512), and the old default of 300,000 refused such a batch whole. Unset, the
    limit is what 2048 inputs at the model's maximum hold: no request reaches it."""
    model = build_tiny_bert(tmp_path / "bert-512", max_tokens=512)
    server = start_server(Encoder.load(EncoderConfig(model=str(model))))
    texts = ["the cat sat on the mat " * 100] * 600  # 600 tokens each, cut to 512
    response = post(server, contract.EMBEDDINGS_PATH, {"input": texts})
    assert response.status_code == 200, response.text
    assert response.json()["usage"]["prompt_tokens"] == 600 * 512  # over 300,000
    limits = httpx.get(f"{server.base_url}{contract.INFO_PATH}").json()["limits"]
    assert limits["max_request_tokens"] == 2048 * 512


def test_unknown_route_and_method(server: LiveServer) -> None:
    assert_envelope(httpx.get(f"{server.base_url}/v1/nothing"), 404)
    assert_envelope(httpx.get(f"{server.base_url}{contract.EMBEDDINGS_PATH}"), 405)
    head = httpx.head(f"{server.base_url}{contract.HEALTH_PATH}")
    assert (head.status_code, head.content) == (200, b"")
    assert int(head.headers["content-length"]) > 0  # GET's length, without the body


# --- The simple GTE routes -----------------------------------------------------------------------
def test_embedding_route(server: LiveServer, tiny_encoder: Encoder) -> None:
    response = post(server, contract.EMBEDDING_PATH, {"text": "hello world"})
    assert response.status_code == 200
    body = response.json()
    assert body["dimension"] == TINY_HIDDEN
    np.testing.assert_allclose(
        body["embedding"], tiny_encoder.encode(["hello world"])[0], atol=1e-5
    )
    assert_envelope(post(server, contract.EMBEDDING_PATH, {"txt": "x"}), 400, "text")


def test_similarity_route(server: LiveServer, tiny_encoder: Encoder) -> None:
    candidates = ["the cat sat on the mat", "sunny weather today", "the cat sat on the mat"]
    response = post(
        server, contract.SIMILARITY_PATH, {"source_text": "the cat sat", "candidates": candidates}
    )
    scores = response.json()["similarities"]
    vectors = tiny_encoder.encode(["the cat sat", *candidates])
    np.testing.assert_allclose(scores, vectors[1:] @ vectors[0], atol=1e-5)
    assert scores[0] == pytest.approx(scores[2])
    bad = {"source_text": "x", "candidates": []}
    assert_envelope(post(server, contract.SIMILARITY_PATH, bad), 400, "candidates")


# --- Probes, info and metrics --------------------------------------------------------------------
def test_health_ready_info(server: LiveServer, tiny_encoder: Encoder) -> None:
    assert httpx.get(f"{server.base_url}{contract.HEALTH_PATH}").json() == {"status": "ok"}
    assert httpx.get(f"{server.base_url}{contract.READY_PATH}").status_code == 200
    info = httpx.get(f"{server.base_url}{contract.INFO_PATH}").json()
    assert info["model"] == tiny_encoder.info.model_id
    assert info["aliases"] == [ALIAS]
    assert (info["dimension"], info["max_tokens"], info["pooling"]) == (TINY_HIDDEN, 32, "cls")
    assert (info["device"], info["dtype"], info["dtype_requested"]) == ("cpu", "float32", "auto")
    assert (info["normalize"], info["normalize_source"]) == (True, "modules.json")
    assert (info["matryoshka"], info["matryoshka_dimensions"]) == (True, [8, 16])
    assert info["matryoshka_source"] == "setting"
    assert (info["prompts"], info["default_prompt_name"], info["default_prompt"]) == (
        {},
        None,
        None,
    )
    assert info["limits"]["max_inputs"] == 2048
    # The tiny BERT's WordPiece is one of the families the cut is proven for (service.textcut).
    assert info["limits"]["text_read_whole"] is None
    assert info["limits"]["text_chars"] == 1024 * TINY_MAX_TOKENS
    assert info["version"]


def test_metrics_on_both_ports_carry_every_contract_name(server: LiveServer) -> None:
    post(server, contract.EMBEDDINGS_PATH, {"input": "hello"})
    main = httpx.get(f"{server.base_url}{contract.METRICS_PATH}")
    assert main.headers["content-type"].startswith("text/plain")
    separate = httpx.get(f"http://127.0.0.1:{server.settings.metrics_port}/metrics")
    for text in (main.text, separate.text):
        for name in contract.ALL_METRICS:
            assert f"\n{name}" in text, name
    labels = {"route": contract.EMBEDDINGS_PATH, "status": "200"}
    assert server.metric(contract.REQUESTS_TOTAL, labels) >= 1
    assert server.metric(contract.READY) == 1
    assert server.metric(contract.MODEL_LOAD_SECONDS) > 0
    assert server.metric(contract.BATCH_SIZE + "_count") >= 1
    assert server.metric(contract.REQUESTS_IN_FLIGHT) == 0
    assert server.metric(contract.QUEUE_ITEMS) == 0


# --- API keys ------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def keyed(
    start_server: Callable[..., LiveServer], tiny_encoder: Encoder, tmp_path_factory: Any
) -> LiveServer:
    keys_file: Path = tmp_path_factory.mktemp("keys") / "keys"
    keys_file.write_text(f"# rotated monthly\n{KEY}\n\nsk-other\n")
    return start_server(tiny_encoder, api_keys_file=keys_file)


@pytest.mark.parametrize(
    "headers",
    [
        pytest.param({}, id="missing"),
        pytest.param({"authorization": "Bearer wrong"}, id="wrong"),
        pytest.param({"authorization": f"Basic {KEY}"}, id="not-bearer"),
        pytest.param({"authorization": "Bearer"}, id="no-token"),
    ],
)
def test_api_key_required_on_v1(keyed: LiveServer, headers: dict[str, str]) -> None:
    for path, body in (
        (contract.EMBEDDINGS_PATH, {"input": "x"}),
        ("/embeddings", {"input": "x"}),
        (contract.EMBEDDING_PATH, {"text": "x"}),
        (contract.SIMILARITY_PATH, {"source_text": "x", "candidates": ["y"]}),
    ):
        error = assert_envelope(post(keyed, path, body, headers=headers), 401)
        assert error["code"] == "invalid_api_key"
    for path in (contract.MODELS_PATH, "/models", "/models/any"):
        response = httpx.get(f"{keyed.base_url}{path}", headers=headers)
        assert assert_envelope(response, 401)["code"] == "invalid_api_key"


def test_valid_key_and_open_probes(keyed: LiveServer, tiny_encoder: Encoder) -> None:
    def client(key: str) -> openai.OpenAI:
        return openai.OpenAI(base_url=f"{keyed.base_url}/v1", api_key=key, max_retries=0)

    model = tiny_encoder.info.model_id
    response = client(KEY).embeddings.create(input="hello", model=model)
    assert len(response.data[0].embedding) == TINY_HIDDEN
    assert client("sk-other").embeddings.create(input="hello", model=model).data
    with pytest.raises(openai.AuthenticationError):
        client("nope").embeddings.create(input="x", model=model)
    for path in (contract.HEALTH_PATH, contract.READY_PATH, contract.METRICS_PATH):
        assert httpx.get(f"{keyed.base_url}{path}").status_code == 200


def test_log_lines_carry_the_request_id(
    start_server: Callable[..., LiveServer],
    tiny_encoder: Encoder,
    caplog: pytest.LogCaptureFixture,
) -> None:
    logged = start_server(tiny_encoder, access_log=True)
    caplog.handler.addFilter(RequestIdFilter())
    with caplog.at_level(logging.INFO, logger="service.access"):
        post(logged, contract.EMBEDDINGS_PATH, {"input": "hi"}, headers={"x-request-id": "trace-7"})
        post(logged, contract.EMBEDDINGS_PATH, {"input": []}, headers={"x-request-id": "trace-8"})
        # The access line is written after the response went out: give the server thread a moment.
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline:
            lines = {
                r.request_id: r.getMessage() for r in caplog.records if r.name == "service.access"
            }
            if {"trace-7", "trace-8"} <= set(lines):
                break
            time.sleep(0.02)
    assert lines["trace-7"].startswith(f"POST {contract.EMBEDDINGS_PATH} 200 ")
    assert lines["trace-8"].startswith(f"POST {contract.EMBEDDINGS_PATH} 400 ")
