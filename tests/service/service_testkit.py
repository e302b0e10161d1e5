"""Helpers for the service tests: a tiny random BERT built offline, live-server plumbing."""

from __future__ import annotations

import asyncio
import json
import os
import socket
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import uvicorn
from tokenizers import Tokenizer

from service.settings import Settings
from service.textcut import TextTokenizer

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
# Haystack decides at import whether to send usage events (haystack/telemetry/_telemetry.py): the
# client tests are offline.
os.environ.setdefault("HAYSTACK_TELEMETRY_ENABLED", "false")

TINY_MAX_TOKENS = 32
_ST = "sentence_transformers.models"
TINY_HIDDEN = 32
# Every word of the test texts, so none becomes [UNK].
_VOCAB_TEXT = (
    "the a an is are was of to and in on at for with cat dog bird fish sat ran mat hat red "
    "blue green big small quick brown fox jumps over lazy hello world text embedding server "
    "token model long input short sentence paraphrase unrelated weather today sunny rain"
)
_WORDS = _VOCAB_TEXT.split()


def build_tiny_bert(
    folder: Path,
    pooling_key: str = "pooling_mode_cls_token",
    max_tokens: int = TINY_MAX_TOKENS,
) -> Path:
    """A 2-layer random BERT with a word-level vocabulary, saved like a sentence-transformers model
    that reads `max_tokens` tokens.

    CLS pooling on purpose: it differs from the mean default, so a test can tell that the pooling
    really came from 1_Pooling/config.json.
    """
    import torch
    from transformers import BertConfig, BertModel, BertTokenizerFast

    torch.manual_seed(0)
    specials = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
    vocab = {token: i for i, token in enumerate(specials + list(dict.fromkeys(_WORDS)))}
    config = BertConfig(
        vocab_size=len(vocab),
        hidden_size=TINY_HIDDEN,
        num_hidden_layers=2,
        num_attention_heads=2,
        intermediate_size=64,
        max_position_embeddings=max(64, max_tokens),
    )
    BertModel(config).eval().save_pretrained(folder)
    # transformers 5.x: `vocab=` (a vocab_file= argument is silently ignored: every token [UNK]).
    tokenizer = BertTokenizerFast(
        vocab=vocab, do_lower_case=True, model_max_length=max(64, max_tokens)
    )
    tokenizer.save_pretrained(folder)
    (folder / "modules.json").write_text(
        json.dumps(
            [
                {
                    "idx": 0,
                    "name": "0",
                    "path": "",
                    "type": "sentence_transformers.models.Transformer",
                },
                {
                    "idx": 1,
                    "name": "1",
                    "path": "1_Pooling",
                    "type": f"{_ST}.Pooling",
                },
                {
                    "idx": 2,
                    "name": "2",
                    "path": "2_Normalize",
                    "type": "sentence_transformers.models.Normalize",
                },
            ]
        )
    )
    (folder / "1_Pooling").mkdir()
    (folder / "1_Pooling" / "config.json").write_text(
        json.dumps({"word_embedding_dimension": TINY_HIDDEN, pooling_key: True})
    )
    (folder / "sentence_bert_config.json").write_text(
        json.dumps({"max_seq_length": max_tokens, "do_lower_case": False})
    )
    return folder


def whole_text_ids(encoder: Any, text: str, special_tokens: bool = False) -> list[int]:
    """Every token of `text` as the encoder's tokenizer gives them without truncation: what the
    server's cuts must agree with (it never tokenises a long text whole itself)."""
    whole = Tokenizer.from_str(encoder._backend.to_str())
    whole.no_truncation()
    return list(whole.encode(text, add_special_tokens=special_tokens).ids)


class Spy:
    """A real tokenizer that records the length of every text it is asked to encode: a test of a
    cut fails if a long text reaches the tokenizer whole."""

    def __init__(self, tokenizer: Tokenizer) -> None:
        self.tokenizer = tokenizer
        self.lengths: list[int] = []

    def encode(self, text: str, *args: Any, **kwargs: Any) -> Any:
        self.lengths.append(len(text))
        return self.tokenizer.encode(text, *args, **kwargs)

    def encode_batch(self, texts: list[str], *args: Any, **kwargs: Any) -> Any:
        self.lengths.extend(map(len, texts))
        return self.tokenizer.encode_batch(texts, *args, **kwargs)


def spied(text_tokenizer: TextTokenizer) -> list[Spy]:
    """Spies in place of both tokenizers a TextTokenizer (service.textcut) encodes with."""
    spies = [Spy(text_tokenizer._truncating), Spy(text_tokenizer._full)]
    text_tokenizer._truncating, text_tokenizer._full = spies  # type: ignore[assignment]
    return spies


def longest_read(spies: list[Spy]) -> int:
    """The most characters any one encode call was given."""
    return max((length for spy in spies for length in spy.lengths), default=0)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def wait_ready(base_url: str, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if httpx.get(f"{base_url}/ready", timeout=2).status_code == 200:
                return
        except httpx.TransportError:
            pass
        time.sleep(0.05)
    raise TimeoutError(f"{base_url} not ready after {timeout}s")


def wait_listening(base_url: str, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            httpx.get(f"{base_url}/health", timeout=2)
            return
        except httpx.TransportError:
            time.sleep(0.05)
    raise TimeoutError(f"{base_url} not listening after {timeout}s")


async def raw_post(
    base_url: str, path: str, headers: str, body: bytes
) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    """Send a POST over a plain socket, exactly as given (`headers`: extra lines, each ending in
    CRLF), so a test can stop halfway or close before the answer."""
    host, port = base_url.removeprefix("http://").split(":")
    reader, writer = await asyncio.open_connection(host, int(port))
    writer.write(
        f"POST {path} HTTP/1.1\r\nHost: {host}\r\nContent-Type: application/json\r\n"
        f"{headers}\r\n".encode()
        + body
    )
    await writer.drain()
    return reader, writer


@dataclass
class LiveServer:
    base_url: str
    app: Any
    server: uvicorn.Server
    settings: Settings

    def metric(self, name: str, labels: dict[str, str] | None = None) -> float:
        value = self.app.state.runtime.metrics.registry.get_sample_value(name, labels or {})
        return 0.0 if value is None else float(value)
