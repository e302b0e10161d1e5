"""What the model's files decide, seen through the HTTP API: prompts by name, `dimensions` only
for Matryoshka models, vectors normalised only when the model is, and /info saying which."""

from __future__ import annotations

import json
import shutil
from collections.abc import Callable
from pathlib import Path

import httpx
import numpy as np
import pytest
from service_testkit import TINY_HIDDEN, LiveServer

from service import contract
from service.encoder import Encoder, EncoderConfig

QUERY = "hello world "


@pytest.fixture(scope="module")
def model_dir(tiny_model_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The tiny BERT with prompts and without a Normalize step."""
    folder = Path(shutil.copytree(tiny_model_dir, tmp_path_factory.mktemp("prompted") / "m"))
    (folder / "config_sentence_transformers.json").write_text(
        json.dumps({"prompts": {"query": QUERY, "passage": ""}, "default_prompt_name": None})
    )
    modules = json.loads((folder / "modules.json").read_text())
    kept = [m for m in modules if not m["type"].endswith(".Normalize")]
    (folder / "modules.json").write_text(json.dumps(kept))
    return folder


@pytest.fixture(scope="module")
def encoder(model_dir: Path) -> Encoder:
    return Encoder.load(EncoderConfig(model=str(model_dir)))


@pytest.fixture(scope="module")
def server(start_server: Callable[..., LiveServer], encoder: Encoder) -> LiveServer:
    return start_server(encoder)


def embed(
    server: LiveServer, path: str = contract.EMBEDDINGS_PATH, **body: object
) -> httpx.Response:
    return httpx.post(f"{server.base_url}{path}", json=body, timeout=30)


def vectors(response: httpx.Response) -> np.ndarray:
    assert response.status_code == 200, response.text
    return np.array([d["embedding"] for d in response.json()["data"]], dtype=np.float32)


def test_prompt_name_puts_the_model_prompt_before_each_input(
    server: LiveServer, encoder: Encoder
) -> None:
    texts = ["the cat sat", "a big red dog"]
    with_prompt = vectors(embed(server, input=texts, prompt_name="query"))
    expected = encoder.encode_ids(encoder.tokenize(texts, QUERY).ids)
    np.testing.assert_allclose(with_prompt, expected, atol=1e-5)
    np.testing.assert_allclose(
        vectors(embed(server, input=texts, prompt_name="passage")), encoder.encode(texts), atol=1e-5
    )
    plain = embed(server, input=texts)
    np.testing.assert_allclose(vectors(plain), encoder.encode(texts), atol=1e-5)
    prompted_usage = embed(server, input=texts, prompt_name="query").json()["usage"]
    assert prompted_usage["prompt_tokens"] == plain.json()["usage"]["prompt_tokens"] + 2 * 2
    single = embed(server, contract.EMBEDDING_PATH, text="the cat sat", prompt_name="query")
    np.testing.assert_allclose(single.json()["embedding"], expected[0], atol=1e-5)


def test_an_unknown_prompt_name_is_a_400_naming_the_known_ones(server: LiveServer) -> None:
    response = embed(server, input="x", prompt_name="search_query")
    assert response.status_code == 400
    error = response.json()["error"]
    assert error["param"] == "prompt_name"
    assert "'passage', 'query'" in error["message"]


def test_dimensions_on_a_model_not_trained_for_them_is_a_400_that_says_why(
    server: LiveServer,
) -> None:
    response = embed(server, input="hello", dimensions=8)
    assert response.status_code == 400
    error = response.json()["error"]
    assert error["param"] == "dimensions"
    assert "Matryoshka" in error["message"]
    assert "EMBED_MATRYOSHKA_DIMENSIONS" in error["message"]
    # The full size changes nothing and is accepted (clients often send it).
    assert vectors(embed(server, input="hello", dimensions=TINY_HIDDEN)).shape == (1, TINY_HIDDEN)


def test_vectors_are_not_normalised_when_the_model_is_not_but_similarity_is_cosine(
    server: LiveServer, encoder: Encoder
) -> None:
    raw = vectors(embed(server, input=["the cat sat", "hello world"]))
    assert not np.allclose(np.linalg.norm(raw, axis=1), 1.0, atol=1e-3)
    response = embed(
        server, contract.SIMILARITY_PATH, source_text="the cat sat", candidates=["hello world"]
    )
    cosine = raw[1] @ raw[0] / (np.linalg.norm(raw[0]) * np.linalg.norm(raw[1]))
    assert response.json()["similarities"] == pytest.approx([cosine], abs=1e-5)


def test_info_reports_prompts_normalisation_and_dimensions(server: LiveServer) -> None:
    info = httpx.get(f"{server.base_url}{contract.INFO_PATH}").json()
    assert info["prompts"] == {"query": QUERY, "passage": ""}
    assert (info["default_prompt_name"], info["default_prompt"]) == (None, None)
    assert (info["normalize"], info["normalize_source"]) == (False, "modules.json")
    assert (info["matryoshka"], info["matryoshka_dimensions"]) == (False, None)
    assert info["matryoshka_source"] == "config.json"
