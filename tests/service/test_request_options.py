"""The options peers' clients send with an embeddings request, honoured or refused by name, never
ignored: vLLM's truncate_prompt_tokens (and its -1), truncation_side and add_special_tokens, TEI's
truncation_direction, normalize and truncate. On the tiny model through the HTTP API."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest
from service_testkit import TINY_HIDDEN, TINY_MAX_TOKENS, LiveServer, whole_text_ids

from service import contract
from service.encoder import Encoder, EncoderConfig

LONG = "the quick brown fox jumps over the lazy dog and the cat sat on the red mat " * 3
QUERY = "hello world "


@pytest.fixture(scope="module")
def encoder(tiny_model_dir: Path) -> Encoder:
    return Encoder.load(EncoderConfig(model=str(tiny_model_dir), prompts={"query": QUERY}))


@pytest.fixture(scope="module")
def server(start_server: Callable[..., LiveServer], encoder: Encoder) -> LiveServer:
    return start_server(encoder)


def post(server: LiveServer, **body: Any) -> httpx.Response:
    return httpx.post(f"{server.base_url}{contract.EMBEDDINGS_PATH}", json=body, timeout=30)


def vector(response: httpx.Response) -> np.ndarray:
    assert response.status_code == 200, response.text
    return np.array(response.json()["data"][0]["embedding"], dtype=np.float32)


def with_specials(encoder: Encoder, ids: list[int]) -> list[int]:
    prefix, suffix = encoder._prefix, encoder._suffix
    return [*prefix, *ids, *suffix]


def test_truncate_prompt_tokens_cuts_each_input_to_that_many_tokens(
    server: LiveServer, encoder: Encoder
) -> None:
    content = whole_text_ids(encoder, LONG)
    assert len(content) > TINY_MAX_TOKENS
    response = post(server, input=[LONG, "hello world"], truncate_prompt_tokens=10)
    expected = encoder.encode_ids([with_specials(encoder, content[:8])])[0]
    np.testing.assert_allclose(vector(response), expected, atol=1e-5)
    usage = response.json()["usage"]
    assert usage["prompt_tokens"] == 10 + 4  # "hello world" fits: [CLS] hello world [SEP]
    assert usage["truncated_inputs"] == 1
    assert response.headers["x-truncated-inputs"] == "1"


def test_minus_one_is_the_models_maximum_even_where_truncation_is_refused(
    start_server: Callable[..., LiveServer], encoder: Encoder, tiny_model_dir: Path
) -> None:
    strict = start_server(
        Encoder.load(EncoderConfig(model=str(tiny_model_dir), truncate=False)), truncate=False
    )
    refused = post(strict, input=LONG)
    assert refused.status_code == 400
    assert refused.json()["error"]["code"] == "context_length_exceeded"
    response = post(strict, input=LONG, truncate_prompt_tokens=-1)
    np.testing.assert_allclose(vector(response), encoder.encode([LONG])[0], atol=1e-5)
    assert response.json()["usage"]["prompt_tokens"] == TINY_MAX_TOKENS
    assert response.json()["usage"]["truncated_inputs"] == 1


@pytest.mark.parametrize(
    "side",
    [
        pytest.param({"truncation_side": "left"}, id="vllm"),
        pytest.param({"truncation_direction": "Left"}, id="tei"),
        pytest.param({"truncation_side": "left", "truncation_direction": "left"}, id="both"),
    ],
)
def test_left_truncation_keeps_the_last_tokens_and_the_special_ones(
    server: LiveServer, encoder: Encoder, side: dict[str, str]
) -> None:
    content = whole_text_ids(encoder, LONG)
    expected = encoder.encode_ids([with_specials(encoder, content[-(TINY_MAX_TOKENS - 2) :])])
    np.testing.assert_allclose(vector(post(server, input=LONG, **side)), expected[0], atol=1e-5)
    short = post(server, input=LONG, truncate_prompt_tokens=6, **side)
    expected = encoder.encode_ids([with_specials(encoder, content[-4:])])
    np.testing.assert_allclose(vector(short), expected[0], atol=1e-5)


def test_the_prompt_is_kept_whichever_side_is_cut(server: LiveServer, encoder: Encoder) -> None:
    content = whole_text_ids(encoder, LONG)
    prompt = whole_text_ids(encoder, QUERY)
    response = post(server, input=LONG, prompt_name="query", truncation_side="left")
    kept = content[-(TINY_MAX_TOKENS - 2 - len(prompt)) :]
    expected = encoder.encode_ids([with_specials(encoder, [*prompt, *kept])])
    np.testing.assert_allclose(vector(response), expected[0], atol=1e-5)


def test_openai_token_ids_are_cut_like_their_text(
    server: LiveServer, offline_tiktoken: Path
) -> None:
    import tiktoken

    ids = tiktoken.get_encoding("cl100k_base").encode_ordinary(LONG)
    for options in ({"truncate_prompt_tokens": 9}, {"truncation_side": "left"}):
        as_text = vector(post(server, input=LONG, **options))
        np.testing.assert_allclose(vector(post(server, input=ids, **options)), as_text, atol=1e-6)


@pytest.mark.parametrize(
    ("options", "param", "words"),
    [
        ({"truncate_prompt_tokens": 2}, "truncate_prompt_tokens", "between 3 and 32"),
        ({"truncate_prompt_tokens": 0}, "truncate_prompt_tokens", "-1 (the model's maximum)"),
        ({"truncate_prompt_tokens": TINY_MAX_TOKENS + 1}, "truncate_prompt_tokens", "maximum"),
        ({"truncate_prompt_tokens": -2}, "truncate_prompt_tokens", "greater than or equal to -1"),
        ({"truncate_prompt_tokens": True}, "truncate_prompt_tokens", "integer"),
        ({"truncation_side": "middle"}, "truncation_side", "'left' or 'right'"),
        (
            {"truncation_side": "left", "truncation_direction": "right"},
            "truncation_side",
            "disagree",
        ),
        ({"normalize": "false"}, "normalize", "boolean"),
        ({"truncate": "yes"}, "truncate", "boolean"),
        ({"add_special_tokens": 0}, "add_special_tokens", "boolean"),
    ],
)
def test_options_the_server_cannot_honour_are_a_400_naming_them(
    server: LiveServer, options: dict[str, Any], param: str, words: str
) -> None:
    response = post(server, input=LONG, **options)
    assert response.status_code == 400, response.text
    error = response.json()["error"]
    assert error["param"] == param
    assert words in error["message"]


def test_normalize_false_returns_the_pooled_vector(server: LiveServer, encoder: Encoder) -> None:
    texts = ["the cat sat", "hello world"]
    raw = encoder.encode_ids(encoder.tokenize(texts).ids, normalize=False)
    assert not np.allclose(np.linalg.norm(raw, axis=1), 1.0, atol=1e-3)
    for encoding_format in ("float", "base64"):
        response = post(server, input=texts, normalize=False, encoding_format=encoding_format)
        assert response.status_code == 200
        if encoding_format == "float":
            got = np.array([d["embedding"] for d in response.json()["data"]], dtype=np.float32)
            np.testing.assert_allclose(got, raw, atol=1e-5)
    unit = np.array([d["embedding"] for d in post(server, input=texts).json()["data"]])
    np.testing.assert_allclose(unit, raw / np.linalg.norm(raw, axis=1, keepdims=True), atol=1e-5)
    np.testing.assert_allclose(
        vector(post(server, input=texts, normalize=True)), unit[0], atol=1e-6
    )


def test_normalize_true_on_a_model_that_does_not(
    start_server: Callable[..., LiveServer], tiny_model_dir: Path
) -> None:
    raw_model = Encoder.load(
        EncoderConfig(model=str(tiny_model_dir), normalize=False, matryoshka_dimensions=[8])
    )
    server = start_server(raw_model)
    raw = vector(post(server, input="hello world"))
    assert abs(float(np.linalg.norm(raw)) - 1.0) > 1e-3
    unit = vector(post(server, input="hello world", normalize=True))
    np.testing.assert_allclose(unit, raw / np.linalg.norm(raw), atol=1e-6)
    # Shortened vectors follow the request's choice too.
    short = vector(post(server, input="hello world", normalize=True, dimensions=8))
    np.testing.assert_allclose(short, raw[:8] / np.linalg.norm(raw[:8]), atol=1e-6)
    np.testing.assert_allclose(vector(post(server, input="hello world", dimensions=8)), raw[:8])


def test_an_unknown_option_keeps_todays_behaviour(server: LiveServer, encoder: Encoder) -> None:
    response = post(server, input="hello world", priority=3, cache_salt="x" * 43)
    np.testing.assert_allclose(vector(response), encoder.encode(["hello world"])[0], atol=1e-5)


def test_add_special_tokens_false_embeds_the_text_without_them(
    server: LiveServer, encoder: Encoder, offline_tiktoken: Path
) -> None:
    """vLLM's add_special_tokens (it used to be ignored: [CLS] and [SEP] were added anyway)."""
    import tiktoken

    content = whole_text_ids(encoder, "the cat sat on the mat")
    bare = encoder.encode_ids([content])[0]
    response = post(server, input="the cat sat on the mat", add_special_tokens=False)
    np.testing.assert_allclose(vector(response), bare, atol=1e-5)
    assert response.json()["usage"]["prompt_tokens"] == len(content)
    assert not np.allclose(bare, encoder.encode(["the cat sat on the mat"])[0], atol=1e-3)
    # OpenAI token ids are decoded to text: the same text, the same vector.
    ids = tiktoken.get_encoding("cl100k_base").encode_ordinary("the cat sat on the mat")
    np.testing.assert_allclose(
        vector(post(server, input=ids, add_special_tokens=False)), bare, atol=1e-5
    )
    # An input longer than the model's maximum keeps that many of its own tokens.
    long_content = whole_text_ids(encoder, LONG)
    cut = post(server, input=LONG, add_special_tokens=False)
    expected = encoder.encode_ids([long_content[:TINY_MAX_TOKENS]])[0]
    np.testing.assert_allclose(vector(cut), expected, atol=1e-5)
    assert cut.json()["usage"] == {
        "prompt_tokens": TINY_MAX_TOKENS,
        "total_tokens": TINY_MAX_TOKENS,
        "truncated_inputs": 1,
    }
    with_them = post(server, input="the cat sat on the mat", add_special_tokens=True)
    np.testing.assert_allclose(
        vector(with_them), encoder.encode(["the cat sat on the mat"])[0], atol=1e-5
    )


def test_an_empty_text_without_special_tokens_is_refused_by_name(server: LiveServer) -> None:
    response = post(server, input=["hello", ""], add_special_tokens=False)
    assert response.status_code == 400
    error = response.json()["error"]
    assert (error["code"], error["param"]) == ("empty_input", "input")
    assert "input[1]" in error["message"]


def test_truncate_false_refuses_an_over_long_input_on_a_truncating_server(
    server: LiveServer,
) -> None:
    """TEI's truncate (it used to be ignored: the input was cut and answered 200)."""
    refused = post(server, input=["hello world", LONG], truncate=False)
    assert refused.status_code == 400, refused.text
    error = refused.json()["error"]
    assert (error["code"], error["param"]) == ("context_length_exceeded", "input")
    assert "input[1]" in error["message"]
    assert vector(post(server, input="hello world", truncate=False)).shape == (TINY_HIDDEN,)


def test_truncate_true_cuts_an_over_long_input_on_a_refusing_server(
    start_server: Callable[..., LiveServer], encoder: Encoder, tiny_model_dir: Path
) -> None:
    strict = start_server(
        Encoder.load(EncoderConfig(model=str(tiny_model_dir), truncate=False)), truncate=False
    )
    assert post(strict, input=LONG).status_code == 400
    response = post(strict, input=LONG, truncate=True)
    np.testing.assert_allclose(vector(response), encoder.encode([LONG])[0], atol=1e-5)
    assert response.json()["usage"]["truncated_inputs"] == 1


def test_truncate_false_with_a_truncation_limit_is_a_400_naming_it(server: LiveServer) -> None:
    response = post(server, input=LONG, truncate=False, truncate_prompt_tokens=8)
    assert response.status_code == 400
    assert response.json()["error"]["param"] == "truncate"
