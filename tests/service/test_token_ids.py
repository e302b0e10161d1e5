"""What token-id input means (EMBED_TOKEN_IDS), through the HTTP API on the tiny model: OpenAI's
cl100k_base by default (what LangChain and OpenAI's own API send), the model's ids as complete
sequences (vLLM, TEI), or refused. Usage always counts the model's tokens."""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from pathlib import Path

import httpx
import numpy as np
import openai
import pytest
import tiktoken
from service_testkit import TINY_MAX_TOKENS, LiveServer, whole_text_ids

from service import contract, openai_tokens
from service.encoder import Encoder, EncoderConfig
from service.openai_tokens import OpenAITokens, OpenAITokensError

TEXTS = ["the cat sat on the mat", "hello world", "A quick brown fox"]
QUERY = "hello world "


def post(server: LiveServer, body: dict) -> httpx.Response:
    return httpx.post(f"{server.base_url}{contract.EMBEDDINGS_PATH}", json=body, timeout=30)


def vectors(response: httpx.Response) -> np.ndarray:
    assert response.status_code == 200, response.text
    return np.array([d["embedding"] for d in response.json()["data"]], dtype=np.float32)


@pytest.fixture(scope="module")
def cl100k(offline_tiktoken: Path) -> tiktoken.Encoding:
    """tiktoken's own cl100k_base (what clients encode with), offline."""
    return tiktoken.get_encoding("cl100k_base")


@pytest.fixture(scope="module")
def default_server(start_server: Callable[..., LiveServer], tiny_encoder: Encoder) -> LiveServer:
    return start_server(tiny_encoder)


@pytest.fixture(scope="module")
def prompted(tiny_model_dir: Path) -> Encoder:
    return Encoder.load(EncoderConfig(model=str(tiny_model_dir), prompts={"query": QUERY}))


@pytest.fixture(scope="module")
def model_ids_server(start_server: Callable[..., LiveServer], prompted: Encoder) -> LiveServer:
    return start_server(prompted, token_ids="model")


# --- cl100k_base: OpenAI's meaning, the default ---------------------------------------------------
def test_openai_token_ids_embed_like_their_text(
    default_server: LiveServer, tiny_encoder: Encoder, cl100k: tiktoken.Encoding
) -> None:
    client = openai.OpenAI(base_url=f"{default_server.base_url}/v1", api_key="x", max_retries=0)
    ids = [cl100k.encode_ordinary(text) for text in TEXTS]
    as_ids = client.embeddings.create(model=tiny_encoder.info.model_id, input=ids)
    as_text = client.embeddings.create(model=tiny_encoder.info.model_id, input=TEXTS)
    np.testing.assert_allclose(
        [d.embedding for d in as_ids.data], [d.embedding for d in as_text.data], atol=1e-6
    )
    np.testing.assert_allclose(as_ids.data[0].embedding, tiny_encoder.encode(TEXTS)[0], atol=1e-5)
    # Usage counts the tokens the model embedded, not the client's cl100k_base ids.
    assert as_ids.usage.prompt_tokens == tiny_encoder.tokenize(TEXTS).token_count
    assert as_ids.usage.prompt_tokens == as_text.usage.prompt_tokens
    one = client.embeddings.create(model=tiny_encoder.info.model_id, input=ids[1])
    np.testing.assert_allclose(one.data[0].embedding, as_text.data[1].embedding, atol=1e-6)


def test_our_decoder_reads_what_tiktoken_writes(cl100k: tiktoken.Encoding) -> None:
    texts = [
        "A man is eating food.",
        "今天天气很好。我们去公园散步吧",
        "Привет, как дела?",
        "مرحبا بالعالم",
        "naïve café 🎉 — ok",
        "line one\nline two\ttabbed",
    ]
    decoder = OpenAITokens.load()
    assert decoder.decode([cl100k.encode_ordinary(text) for text in texts]) == texts
    # The last id read as text is tiktoken's last ordinary token; the next one is none.
    assert cl100k.decode_single_token_bytes(decoder.regular_tokens - 1)
    with pytest.raises(KeyError):
        cl100k.decode_single_token_bytes(decoder.regular_tokens)
    assert min(cl100k._special_tokens.values()) > decoder.regular_tokens
    # A sequence cut inside a character (LangChain cuts long texts every 8191 ids) still decodes.
    assert decoder.decode([cl100k.encode_ordinary("🎉")[:1]]) == ["\ufffd"]


@pytest.mark.parametrize("bad", [100256, 100257, 10**9])
def test_an_id_that_is_no_cl100k_text_token_is_a_400_naming_it(
    default_server: LiveServer, bad: int
) -> None:
    response = post(default_server, {"input": [[15339, 1917], [15339, bad]]})
    assert response.status_code == 400, response.text
    error = response.json()["error"]
    assert (error["code"], error["param"]) == ("invalid_token_id", "input")
    assert f"input[1] contains token id {bad}" in error["message"]
    assert "cl100k_base" in error["message"]
    assert httpx.get(f"{default_server.base_url}{contract.READY_PATH}").status_code == 200


def test_info_says_which_meaning_is_active(
    default_server: LiveServer, model_ids_server: LiveServer
) -> None:
    for server, mode in ((default_server, "cl100k_base"), (model_ids_server, "model")):
        info = httpx.get(f"{server.base_url}{contract.INFO_PATH}").json()
        assert info["token_ids"] == mode
        assert info["token_ids_meaning"]


def test_a_bpe_file_that_is_not_tiktokens_stops_the_load(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    tampered = tmp_path / "cl100k_base.tiktoken"
    real = openai_tokens.read_verified_bpe()
    tampered.write_bytes(real.replace(b" 0\n", b" 1\n", 1))
    monkeypatch.setattr(openai_tokens, "bpe_file", lambda: tampered)
    with pytest.raises(OpenAITokensError) as refused:
        OpenAITokens.load()
    assert hashlib.sha256(tampered.read_bytes()).hexdigest() in str(refused.value)
    assert openai_tokens.SHA256 in str(refused.value)


# --- model: the model's own ids, each the complete sequence (vLLM, TEI) ---------------------------
def test_model_ids_with_special_tokens_are_not_given_them_twice(
    model_ids_server: LiveServer, prompted: Encoder
) -> None:
    complete = prompted.tokenize(TEXTS).ids  # [CLS] ... [SEP], as a client tokenising sends them
    response = post(model_ids_server, {"input": complete})
    np.testing.assert_allclose(vectors(response), prompted.encode(TEXTS), atol=1e-5)
    assert response.json()["usage"]["prompt_tokens"] == sum(len(ids) for ids in complete)
    # Without special tokens the ids are embedded as given: nothing is added.
    bare = [ids[1:-1] for ids in complete]
    expected = prompted.encode_ids(bare)
    np.testing.assert_allclose(
        vectors(post(model_ids_server, {"input": bare})), expected, atol=1e-5
    )


def test_model_ids_get_the_prompt_after_the_leading_special_tokens(
    model_ids_server: LiveServer, prompted: Encoder
) -> None:
    complete = prompted.tokenize(TEXTS).ids
    response = post(model_ids_server, {"input": complete, "prompt_name": "query"})
    expected = prompted.encode_ids(prompted.tokenize(TEXTS, QUERY).ids)
    np.testing.assert_allclose(vectors(response), expected, atol=1e-5)


def test_long_model_ids_keep_their_closing_special_token(
    model_ids_server: LiveServer, prompted: Encoder
) -> None:
    long_text = "the cat sat on the mat " * 20
    full = whole_text_ids(prompted, long_text, special_tokens=True)
    assert len(full) > TINY_MAX_TOKENS
    response = post(model_ids_server, {"input": [full]})
    np.testing.assert_allclose(vectors(response), prompted.encode([long_text]), atol=1e-5)
    assert response.json()["usage"] == {
        "prompt_tokens": TINY_MAX_TOKENS,
        "total_tokens": TINY_MAX_TOKENS,
        "truncated_inputs": 1,
    }


def test_model_ids_outside_the_vocabulary_are_a_400(
    model_ids_server: LiveServer, prompted: Encoder
) -> None:
    vocab = prompted.info.vocab_size
    response = post(model_ids_server, {"input": [[2, vocab]]})
    assert response.status_code == 400
    assert (
        f"token id {vocab}, outside this model's vocabulary" in response.json()["error"]["message"]
    )


# --- reject ---------------------------------------------------------------------------------------
def test_refused_token_ids_name_the_langchain_setting(
    start_server: Callable[..., LiveServer], tiny_encoder: Encoder
) -> None:
    server = start_server(tiny_encoder, token_ids="reject")
    for body in ({"input": [15339, 1917]}, {"input": [[15339], [1917]]}):
        response = post(server, body)
        assert response.status_code == 400, response.text
        error = response.json()["error"]
        assert error["param"] == "input"
        assert "check_embedding_ctx_length=False" in error["message"]
    assert vectors(post(server, {"input": TEXTS})).shape == (3, tiny_encoder.info.dimension)
    info = httpx.get(f"{server.base_url}{contract.INFO_PATH}").json()
    assert info["token_ids"] == "reject"


# --- a long sequence is decoded only as far as the tokenizer reads -------------------------------
def test_a_part_of_the_ids_decodes_to_the_whole_texts_characters(
    cl100k: tiktoken.Encoding,
) -> None:
    """The bound openai_tokens relies on, against tiktoken's own decode: the text of the first
    (last) ids, but its last (first) 3 characters, is the whole text's, and once it holds more
    than `chars` of those it is used instead of the whole text. Cuts fall inside multi-byte
    characters, invalid UTF-8 included: single-byte ids of lead and continuation bytes."""
    decoder = OpenAITokens.load()
    rng = np.random.default_rng(7)
    words = cl100k.encode_ordinary("naïve café 🎉 今天天气很好 Привет مرحبا the cat sat ")
    raw_bytes = [cl100k.encode_single_token(bytes([b])) for b in (0xE4, 0xBB, 0x8A, 0xF0, 0x9F)]
    for _ in range(300):
        seq = [int(t) for t in rng.choice(words + raw_bytes, size=int(rng.integers(1, 400)))]
        whole = cl100k.decode(seq)
        for chars in (1, 5, 40):
            for side in ("right", "left"):
                got = decoder._decode_within(seq, chars, side)  # type: ignore[arg-type]
                if got == whole:
                    continue
                assert len(got) > chars
                if side == "right":
                    assert got[: len(got) - 3] == whole[: len(got) - 3]
                    assert got[: chars + 1] == whole[: chars + 1]
                else:
                    assert got[3:] == whole[len(whole) - len(got) + 3 :]
                    assert got[-(chars + 1) :] == whole[-(chars + 1) :]


class DecodeSpy:
    """tiktoken's encoding, recording how many ids each decode call was given."""

    def __init__(self, encoding: tiktoken.Encoding) -> None:
        self.encoding = encoding
        self.lengths: list[int] = []

    def decode(self, tokens: list[int]) -> str:
        self.lengths.append(len(tokens))
        return self.encoding.decode(tokens)


@pytest.mark.parametrize("side", ["right", "left"])
def test_ids_beyond_what_the_tokenizer_reads_never_reach_the_decoder(
    start_server: Callable[..., LiveServer],
    tiny_encoder: Encoder,
    cl100k: tiktoken.Encoding,
    side: str,
) -> None:
    """A 16 MB body holds ~3.3 M ids, all of which were decoded (~0.3 s) to keep a few hundred
    characters; now at most 4 x the tokenizer's scan budget + 7 ids are, and the vectors and the
    usage are those of the text."""
    server = start_server(tiny_encoder)
    runtime = server.app.state.runtime
    spy = DecodeSpy(runtime.openai_tokens._encoding)
    runtime.openai_tokens._encoding = spy
    text = "the cat sat on the mat, and a quick brown fox " * 30_000  # 360 k ids
    ids = cl100k.encode_ordinary(text)
    bound = 4 * tiny_encoder.text_chars + 7
    assert len(ids) > 2 * bound
    options = {"truncation_side": side}
    as_ids = post(server, {"input": ids, **options})
    as_text = post(server, {"input": text, **options})
    np.testing.assert_allclose(vectors(as_ids), vectors(as_text), atol=1e-6)
    assert as_ids.json()["usage"] == as_text.json()["usage"]
    assert spy.lengths
    assert max(spy.lengths) <= bound
