"""A fixed, seeded corpus of short and long English inputs, with each input's token count.

The words are drawn from a fixed list so that the corpus is the same on every machine and run for a
given seed, and so that the tokenizer sees ordinary word pieces (random characters would blow up the
token count and measure nothing a client sends). Token counts come from the model's own tokenizer,
so tokens/s means the same for the limit, our server and the naive server."""

from __future__ import annotations

import random
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Final, Literal

CorpusKind = Literal["short", "mixed", "long"]
CORPUS_KINDS: Final[tuple[CorpusKind, ...]] = ("short", "mixed", "long")

SHORT_WORDS: Final = (6, 16)
"""A search query or a chat message: about 10-20 tokens."""
LONG_WORDS: Final = (100, 160)
"""A paragraph of a document: about 130-210 tokens, under the 256-token limit of small models."""
MIXED_LONG_SHARE: Final = 0.2
"""In the mixed corpus, one input in five is a paragraph: the spread that makes padding matter."""

_WORD_TEXT: Final = """
the of and to in is was for on that with as by at from it an be this are which or his her had
not but have were all they one their been has more when who will would there can if what so
about into than other some time could them these then two may only first new like over such city
river house music school water light market system report question answer people world country
company service model data network energy garden morning evening winter summer history science
language student teacher doctor engine station window letter travel bridge mountain forest
island ocean weather kitchen number price order signal memory program quickly slowly carefully
always never often together between against during without build write read find open close
carry choose measure explain improve follow describe green bright quiet heavy simple early
recent strong public private useful careful ancient
"""
_WORDS: Final = tuple(_WORD_TEXT.split())


@dataclass(frozen=True)
class Item:
    text: str
    tokens: int
    """Tokens the model sees for this text, special tokens included, after truncation."""


def _sentence(rng: random.Random, words: tuple[int, int]) -> str:
    count = rng.randint(*words)
    text = " ".join(rng.choice(_WORDS) for _ in range(count))
    return text[0].upper() + text[1:] + "."


def make_texts(kind: CorpusKind, size: int, seed: int) -> list[str]:
    """`size` texts of the given kind, the same for the same (kind, size, seed)."""
    if kind not in CORPUS_KINDS:
        raise ValueError(f"corpus kind {kind!r} is not one of {', '.join(CORPUS_KINDS)}")
    if size < 1:
        raise ValueError(f"corpus size must be >= 1, got {size}")
    rng = random.Random(f"{kind}:{seed}")
    long_share = {"short": 0.0, "mixed": MIXED_LONG_SHARE, "long": 1.0}[kind]
    return [
        _sentence(rng, LONG_WORDS if rng.random() < long_share else SHORT_WORDS)
        for _ in range(size)
    ]


def make_corpus(
    kind: CorpusKind, size: int, seed: int, count_tokens: Callable[[Sequence[str]], list[int]]
) -> list[Item]:
    """The corpus with token counts from `count_tokens` (see `tokenizer_counter`)."""
    texts = make_texts(kind, size, seed)
    counts = count_tokens(texts)
    return [Item(text, tokens) for text, tokens in zip(texts, counts, strict=True)]


def tokenizer_counter(model_path: str, max_tokens: int) -> Callable[[Sequence[str]], list[int]]:
    """Token counts with the model's own tokenizer, truncated like the server truncates."""
    from transformers import AutoTokenizer  # heavy import: only when a corpus is built

    tokenizer = AutoTokenizer.from_pretrained(model_path)

    def count(texts: Sequence[str]) -> list[int]:
        encoded = tokenizer(list(texts), truncation=True, max_length=max_tokens)
        return [len(ids) for ids in encoded["input_ids"]]

    return count
