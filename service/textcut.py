"""Bounded tokenisation of text: an input costs a bounded amount of tokenizer work and memory,
whatever its length, and the model still sees exactly the token ids it would see if the whole text
were tokenised. No torch, no asyncio.

Tokenising a whole 15 MB text took 13.7 s and ~2 GB here (the Rust tokenizer builds every token
and keeps thousands of overflow segments) to keep its first 256. Instead each text longer than a
character budget is cut, the cut is tokenised, and the cut is accepted only where the tokenizer's
own word boundaries prove that it changed nothing the model sees. A text is cut where the model
reads it: its beginning for the model's own truncation and a request's right-side cut, its end
for a left-side cut (`truncation_side=left` keeps an input's last tokens).

Why a checked cut keeps every token (the argument the tests exercise): a Hugging Face tokenizer
runs normalizer -> pre-tokenizer -> model -> post-processor (tokenizers/src/tokenizer/mod.rs,
`encode_single_sequence` at v0.23.1). The normalizers of the models served here act on one
character, or one combining sequence, at a time (BertNormalizer: clean_text filters and maps single
characters, handle_chinese_chars pads single ideographs, strip_accents is NFD then a filter of
non-spacing marks, lowercase maps each character: tokenizers/src/normalizers/bert.rs and
`NormalizedString::lowercase` at v0.23.1). So the normalised form of a prefix of the text is a
prefix of the normalised text, except possibly for its last combining sequence. The pre-tokenizer
splits the normalised string into words by local rules: BertPreTokenizer splits on whitespace and
isolates punctuation (tokenizers/src/pre_tokenizers/bert.rs); the byte-level regex of GPT-2 style
tokenizers looks at most one character ahead (`\\s+(?!\\S)`); Metaspace splits before each `▁`.
Hence every word of the prefix except the last one (the word the cut falls in) is a word of the
whole text, in the same place; the word before it is left out too, as a margin for a rule that
looks past a word's end (a lookahead, a combining sequence). The model tokenises each word on its
own (WordPiece, BPE, Unigram and WordLevel all run per word: `do_tokenize` in
tokenizers/src/tokenizer/mod.rs), so those words have the same tokens as in the whole text, and
`Encoding.word_ids` says which tokens they are. So if the settled words (all but the last two) of
the cut hold more than `keep` tokens (`content_limit`, the model's maximum without its special
tokens, for the model's own truncation):
- the first `keep` tokens of the whole text are exactly those of the cut, and
- the whole text has more than `keep` tokens, so it is cut: the tokenizer's truncation (right
  side, stride 0: tokenizers/src/utils/truncation.rs) reports it truncated, as before;
and the ids are the special-token template around those tokens, which is what the truncating
tokenizer returns for the whole text. Otherwise the cut is doubled and checked again; a text no
longer than the cut is tokenised whole, the old way.

The left side is the mirror image: a suffix of the text, whose first two words are the unsettled
ones. The normalised suffix is a suffix of the normalised text except possibly for its first
combining sequence. BertPreTokenizer decides each word boundary by the two characters beside it,
so every word of the suffix but its first is a word of the whole text; Metaspace's boundaries are
the `▁`s, and the `▁` it puts before the text goes to the first word only. The regexes of GPT-2
and Qwen2 have no lookbehind, so once the suffix's matching starts a match where the whole
text's matching starts one, every later match is the same; and each of their alternatives runs to
the end of a run of one kind of character (letters, digits, other symbols, whitespace up to the
last blank before a word, a newline run), where the whole text's matches end too, except a
contraction (`'s`, `'ll`, ...), which stops inside the letters it starts, and a single digit
(Qwen2), which is a match of its own wherever the matching starts. So the suffix's first match
may be part of a word, its second the rest of the letters after a contraction, and from its third
word on every word is one of the whole text's, in the same place, with the same tokens. The end
of the text is in the suffix, so if its settled words hold more than `keep` tokens, the last `keep`
tokens of the whole text are exactly those of the suffix, and the whole text is cut.

The budget: `first_cut_chars` per text (16 characters per model token: ~4x what English prose and
~16x what Chinese needs, so a real text is settled at the first try) and at most `scan_chars`
(1024 per model token, at most 1 Mi characters) for a text that is mostly whitespace, control
characters or words thousands of characters long: such a text has too few words to settle within
that, and tokenising all of it would cost what this module avoids (15 MB of spaces: 0.9 GB), so
it is refused (SparseTextError, a 400) rather than silently changed.
"""

from __future__ import annotations

from bisect import bisect_left
from dataclasses import dataclass
from typing import Any, Final

from tokenizers import Tokenizer

from service.model_types import InputTooLongError, Side, SparseTextError, Tokenized

FIRST_CUT_CHARS_PER_TOKEN: Final = 16
SCAN_CHARS_PER_TOKEN: Final = 1024
MAX_SCAN_CHARS: Final = 1 << 20
_UNSETTLED_WORDS: Final = 2
"""Words at the cut end of a cut that the rest of the text may still change (see the module doc)."""


@dataclass(frozen=True)
class Content:
    """A text's own tokens (no special tokens), as many as a cut of it needs."""

    ids: list[int]
    whole: bool
    """All of the text's tokens. Otherwise more than the `keep` asked for, and exactly the whole
    text's first tokens (side right) or its last ones (side left)."""


class TextTokenizer:
    """Texts -> Tokenized with the model's special tokens, at most `max_tokens` ids each; or each
    text's own tokens, as many as a request's cut keeps (`content`).

    `truncating` is the model's Rust tokenizer with truncation at max_tokens and no padding;
    `prefix`/`suffix` are the special tokens it puts around one sequence. Thread-safe (the Rust
    tokenizers are)."""

    def __init__(
        self,
        truncating: Tokenizer,
        *,
        max_tokens: int,
        prefix: list[int],
        suffix: list[int],
        truncate: bool,
    ) -> None:
        self._truncating = truncating
        full = Tokenizer.from_str(truncating.to_str())
        full.no_truncation()
        full.no_padding()
        self._full = full
        self._max_tokens = max_tokens
        self._prefix = prefix
        self._suffix = suffix
        self._content_limit = max_tokens - len(prefix) - len(suffix)
        self._truncate = truncate
        self.first_cut_chars = FIRST_CUT_CHARS_PER_TOKEN * max_tokens
        self.scan_chars = max(
            self.first_cut_chars, min(SCAN_CHARS_PER_TOKEN * max_tokens, MAX_SCAN_CHARS)
        )

    def tokenize(self, texts: list[str]) -> Tokenized:
        """The model's own truncation (its first tokens). Raises InputTooLongError (truncation
        off) or SparseTextError for the first bad text."""
        ids: list[list[int]] = [[] for _ in texts]
        truncated = [False] * len(texts)
        short = [i for i, text in enumerate(texts) if len(text) <= self.first_cut_chars]
        encodings = self._truncating.encode_batch([texts[i] for i in short])
        for i, encoding in zip(short, encodings, strict=True):
            ids[i], truncated[i] = encoding.ids, bool(encoding.overflowing)
        limit, specials = self._content_limit, len(self._prefix) + len(self._suffix)
        counted: dict[int, Content] = {}
        for i, content in self._long(texts, limit, "right"):
            ids[i] = [*self._prefix, *content.ids[:limit], *self._suffix]
            truncated[i] = len(content.ids) > limit
            counted[i] = content
        if not self._truncate and any(truncated):
            index = truncated.index(True)
            if index not in counted:
                full = len(self._full.encode(texts[index], add_special_tokens=True).ids)
                raise InputTooLongError(index, full, self._max_tokens)
            # A cut text is refused from its cut: its settled words already hold too many tokens.
            refused = counted[index]
            count = len(refused.ids) + specials
            raise InputTooLongError(index, count, self._max_tokens, at_least=not refused.whole)
        return Tokenized(ids, truncated)

    def content(self, texts: list[str], keep: int, side: Side) -> list[Content]:
        """Each text's own tokens, enough to keep `keep` of them from `side`: all of them, or
        more than `keep` that are exactly the whole text's first (right) or last (left) ones.
        Raises SparseTextError for the first text too sparse to cut."""
        found = dict(self._long(texts, keep, side))
        short = [text for i, text in enumerate(texts) if i not in found]
        wholes = iter(self._full.encode_batch(short, add_special_tokens=False))
        return [
            found[i] if i in found else Content(next(wholes).ids, whole=True)
            for i in range(len(texts))
        ]

    def _long(self, texts: list[str], keep: int, side: Side) -> list[tuple[int, Content]]:
        """The content of each text longer than the first cut, from growing cuts at `side`."""
        long = [i for i, text in enumerate(texts) if len(text) > self.first_cut_chars]
        if not long:
            return []
        firsts = self._full.encode_batch(
            [_cut(texts[i], self.first_cut_chars, side) for i in long], add_special_tokens=False
        )
        found = []
        for i, first in zip(long, firsts, strict=True):
            content = self._settle(texts[i], first, keep, side)
            if content is None:
                raise SparseTextError(i, self.scan_chars, keep, side)
            found.append((i, content))
        return found

    def _settle(self, text: str, encoding: Any, keep: int, side: Side) -> Content | None:
        """The text's content from growing cuts (the first one already encoded), or None when not
        even `scan_chars` characters settle it."""
        size = self.first_cut_chars
        while True:
            settled = _settled(encoding.ids, encoding.word_ids, keep, side)
            if settled is not None:
                return Content(settled, whole=False)
            if size >= self.scan_chars:
                return None
            size = min(2 * size, self.scan_chars)
            if size >= len(text):
                return Content(self._full.encode(text, add_special_tokens=False).ids, whole=True)
            encoding = self._full.encode(_cut(text, size, side), add_special_tokens=False)


def _cut(text: str, size: int, side: Side) -> str:
    return text[:size] if side == "right" else text[-size:]


def _settled(content: list[int], word_ids: list[int], keep: int, side: Side) -> list[int] | None:
    """The tokens of a cut's settled words (all but the two at its cut end), when they are more
    than `keep`; else None. Content tokens (no special tokens) all come from words, in order, so
    `word_ids` holds no None and never decreases."""
    if len(content) <= keep:
        return None
    if side == "right":
        end = bisect_left(word_ids, word_ids[-1] - _UNSETTLED_WORDS + 1)
        return content[:end] if end > keep else None
    start = bisect_left(word_ids, word_ids[0] + _UNSETTLED_WORDS)
    return content[start:] if len(content) - start > keep else None
