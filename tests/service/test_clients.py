"""The clients people put in front of an OpenAI-compatible embedding server, each with its
defaults, against a live server on the real all-MiniLM-L6-v2: every one gives the vectors plain
text gives (cosine >= 0.999) on short queries, sentences and non-Latin text. LangChain's
OpenAIEmbeddings sends cl100k_base token ids by default (tiktoken, offline here)."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import httpx
import numpy as np
import openai
import pytest
from haystack import Document
from haystack.components.embedders import OpenAIDocumentEmbedder, OpenAITextEmbedder
from haystack.utils import Secret
from langchain_openai import OpenAIEmbeddings
from service_testkit import LiveServer

from service import contract
from service.encoder import Encoder

MODEL = contract.EMBEDDED_DEFAULT_MODEL
QUERIES = [
    "capital of france",
    "cheap flights to tokyo",
    "how do I reset my password?",
    "python list comprehension",
]
SENTENCES = [
    "A man is eating food.",
    "The new movie is awesome, and the audience loved every minute of it.",
    "Stocks fell sharply on Tuesday after the central bank raised interest rates again.",
]
NON_LATIN = [
    "今天天气很好",  # Chinese
    "東京の天気は晴れです",  # Japanese
    "Привет, как дела?",  # Russian
    "مرحبا بالعالم",  # Arabic
    "Καλημέρα κόσμε",  # Greek
    "नमस्ते दुनिया",  # Hindi
    "naïve café, 🎉 emoji",
]
TEXTS = [*QUERIES, *SENTENCES, *NON_LATIN]


@pytest.fixture(scope="module")
def server(start_server: Callable[..., LiveServer], minilm_encoder: Encoder) -> LiveServer:
    return start_server(minilm_encoder)


@pytest.fixture(scope="module")
def plain(server: LiveServer) -> np.ndarray:
    """What the server gives the texts sent as text."""
    response = httpx.post(
        f"{server.base_url}{contract.EMBEDDINGS_PATH}",
        json={"input": TEXTS, "model": MODEL, "encoding_format": "float"},
        timeout=60,
    )
    assert response.status_code == 200, response.text
    return np.array([d["embedding"] for d in response.json()["data"]])


def assert_same_vectors(got: list[list[float]], expected: np.ndarray) -> None:
    vectors = np.asarray(got, dtype=np.float64)
    assert vectors.shape == expected.shape
    cosine = np.sum(vectors * expected, axis=1) / (
        np.linalg.norm(vectors, axis=1) * np.linalg.norm(expected, axis=1)
    )
    worst = int(np.argmin(cosine))
    assert cosine[worst] >= 0.999, f"{TEXTS[worst]!r}: cosine {cosine[worst]:.4f}"


def langchain(base_url: str) -> OpenAIEmbeddings:
    """Every setting but the two a user must give at its default."""
    return OpenAIEmbeddings(base_url=f"{base_url}/v1", model=MODEL, api_key="unused")


def test_langchain_with_its_defaults(
    server: LiveServer, plain: np.ndarray, offline_tiktoken: Path
) -> None:
    embeddings = langchain(server.base_url)
    assert embeddings.check_embedding_ctx_length  # token ids, not text
    assert_same_vectors(embeddings.embed_documents(TEXTS), plain)
    assert_same_vectors([embeddings.embed_query(text) for text in TEXTS], plain)


def test_langchain_defaults_send_token_ids_that_a_refusing_server_names(
    start_server: Callable[..., LiveServer], minilm_encoder: Encoder, offline_tiktoken: Path
) -> None:
    refusing = start_server(minilm_encoder, token_ids="reject")
    with pytest.raises(openai.BadRequestError) as refused:
        langchain(refusing.base_url).embed_query("capital of france")
    assert "check_embedding_ctx_length=False" in str(refused.value)
    text_mode = OpenAIEmbeddings(
        base_url=f"{refusing.base_url}/v1",
        model=MODEL,
        api_key="unused",
        check_embedding_ctx_length=False,
    )
    assert len(text_mode.embed_query("capital of france")) == minilm_encoder.info.dimension


def test_haystack_text_and_document_embedders(server: LiveServer, plain: np.ndarray) -> None:
    options = {"api_key": Secret.from_token("unused"), "model": MODEL}
    base = f"{server.base_url}/v1"
    text = OpenAITextEmbedder(api_base_url=base, **options)
    assert_same_vectors([text.run(text=t)["embedding"] for t in TEXTS], plain)
    documents = OpenAIDocumentEmbedder(api_base_url=base, **options).run(
        documents=[Document(content=t) for t in TEXTS]
    )["documents"]
    assert_same_vectors([d.embedding for d in documents], plain)


def test_langchain_past_8191_tokens_averages_chunks_unless_told_to_send_the_text(
    server: LiveServer, offline_tiktoken: Path
) -> None:
    """The README's limit: LangChain's defaults split a text of over embedding_ctx_length (8191)
    cl100k_base tokens into chunks, embed each and return their token-weighted average
    (langchain_openai/embeddings/base.py, _process_batched_chunked_embeddings), which is not the
    text's vector; either workaround the README gives sends the whole text as one input."""
    import tiktoken

    food, stocks = "A man is eating food. " * 1000, "Stocks fell sharply on Tuesday. " * 1000
    cl100k = tiktoken.get_encoding("cl100k_base")
    # The first chunk holds all of the food and the start of the stocks, the second only stocks.
    assert (
        len(cl100k.encode_ordinary(food)) + 256 < 8191 < len(cl100k.encode_ordinary(food + stocks))
    )
    text = food + stocks
    response = httpx.post(
        f"{server.base_url}{contract.EMBEDDINGS_PATH}", json={"input": text}, timeout=60
    )
    whole = np.array([response.json()["data"][0]["embedding"]])
    averaged = langchain(server.base_url).embed_query(text)
    assert cosine(averaged, whole[0]) < 0.99
    for workaround in ({"check_embedding_ctx_length": False}, {"embedding_ctx_length": 10**9}):
        client = OpenAIEmbeddings(
            base_url=f"{server.base_url}/v1", model=MODEL, api_key="unused", **workaround
        )
        assert_same_vectors([client.embed_query(text)], whole)


def cosine(a: list[float], b: np.ndarray) -> float:
    return float(np.dot(a, b) / (np.linalg.norm(a) * np.linalg.norm(b)))


def test_an_empty_document_is_embedded_not_a_failed_batch(
    server: LiveServer, plain: np.ndarray, minilm_encoder: Encoder, offline_tiktoken: Path
) -> None:
    """LangChain embeds an empty document by sending input="" (its empty_embedding fallback,
    langchain_openai/embeddings/base.py); Haystack sends "" in the batch. Both failed with a 400
    for the whole call: "" is now embedded as the model's special tokens alone, which is what
    sentence-transformers gives for it."""
    empty = minilm_encoder.encode([""])[0]
    texts = [*TEXTS[:3], ""]
    vectors = langchain(server.base_url).embed_documents(texts)
    assert_same_vectors(vectors[:3], plain[:3])
    assert cosine(vectors[3], empty) >= 0.999
    options = {"api_key": Secret.from_token("unused"), "model": MODEL}
    documents = OpenAIDocumentEmbedder(api_base_url=f"{server.base_url}/v1", **options).run(
        documents=[Document(content=t) for t in texts]
    )["documents"]
    assert_same_vectors([d.embedding for d in documents[:3]], plain[:3])
    assert cosine(documents[3].embedding, empty) >= 0.999


def test_openai_sdk_with_its_defaults(server: LiveServer, plain: np.ndarray) -> None:
    client = openai.OpenAI(base_url=f"{server.base_url}/v1", api_key="unused", max_retries=0)
    response = client.embeddings.create(model=MODEL, input=TEXTS)  # base64, as the SDK asks
    assert_same_vectors([d.embedding for d in response.data], plain)
