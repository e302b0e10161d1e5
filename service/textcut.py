"""Bounded tokenisation of text: an input costs a bounded amount of tokenizer work and memory,
whatever its length, and the model still sees exactly the token ids it would see if the whole text
were tokenised. No torch, no asyncio.

Tokenising a whole 15 MB text took 13.7 s and ~2 GB here (the Rust tokenizer builds every token
and keeps thousands of overflow segments) to keep its first 256. Instead each text longer than a
character budget is cut, the cut is tokenised, and the cut is accepted only where the tokenizer's
own word boundaries prove that it changed nothing the model sees.

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
the cut hold more than `content_limit` tokens:
- the first `content_limit` tokens of the whole text are exactly those of the cut, and
- the whole text has more than `content_limit` tokens, so the tokenizer's truncation (right side,
  stride 0: tokenizers/src/utils/truncation.rs) cuts it: it is reported truncated, as before;
and the ids are the special-token template around those tokens, which is what the truncating
tokenizer returns for the whole text. Otherwise the cut is doubled and checked again; a text no
longer than the cut is tokenised whole, the old way.

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

from service.model_types import InputTooLongError, SparseTextError, Tokenized

FIRST_CUT_CHARS_PER_TOKEN: Final = 16
SCAN_CHARS_PER_TOKEN: Final = 1024
MAX_SCAN_CHARS: Final = 1 << 20
_UNSETTLED_WORDS: Final = 2
"""Words at the end of a cut that the rest of the text may still change (see the module doc)."""


@dataclass(frozen=True)
class _Cut:
    ids: list[int]
    truncated: bool
    seen: int
    """Tokens known (special tokens included): all of them, or a lower bound for a cut text."""


class TextTokenizer:
    """Texts -> Tokenized with the model's special tokens, at most `max_tokens` ids each.

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
        """Raises InputTooLongError (truncation off) or SparseTextError for the first bad text."""
        ids: list[list[int]] = [[] for _ in texts]
        truncated = [False] * len(texts)
        short = [i for i, text in enumerate(texts) if len(text) <= self.first_cut_chars]
        encodings = self._truncating.encode_batch([texts[i] for i in short])
        for i, encoding in zip(short, encodings, strict=True):
            ids[i], truncated[i] = encoding.ids, bool(encoding.overflowing)
        seen: dict[int, int] = {}
        long = [i for i, text in enumerate(texts) if len(text) > self.first_cut_chars]
        if long:
            firsts = self._full.encode_batch(
                [texts[i][: self.first_cut_chars] for i in long], add_special_tokens=False
            )
            for i, first in zip(long, firsts, strict=True):
                cut = self._settle(texts[i], first)
                if cut is None:
                    raise SparseTextError(i, self.scan_chars, self._content_limit)
                ids[i], truncated[i], seen[i] = cut.ids, cut.truncated, cut.seen
        if not self._truncate and any(truncated):
            index = truncated.index(True)
            if index in seen:
                # Refused early: the settled part of its cut already holds too many tokens.
                raise InputTooLongError(index, seen[index], self._max_tokens, at_least=True)
            full = len(self._full.encode(texts[index], add_special_tokens=True).ids)
            raise InputTooLongError(index, full, self._max_tokens)
        return Tokenized(ids, truncated)

    def _settle(self, text: str, encoding: Any) -> _Cut | None:
        """The text's ids from growing cuts (the first one already encoded), or None when not even
        `scan_chars` characters settle them."""
        size = self.first_cut_chars
        while True:
            cut = self._settled(encoding.ids, encoding.word_ids)
            if cut is not None:
                return cut
            if size >= self.scan_chars:
                return None
            size = min(2 * size, self.scan_chars)
            if size >= len(text):
                whole = self._truncating.encode(text)
                return _Cut(whole.ids, bool(whole.overflowing), len(whole.ids))
            encoding = self._full.encode(text[:size], add_special_tokens=False)

    def _settled(self, content: list[int], word_ids: list[int]) -> _Cut | None:
        """The ids the model sees, when the settled words of a cut (content tokens, no special
        tokens) hold more than content_limit tokens; else None."""
        if len(content) <= self._content_limit:
            return None
        # Content tokens (no special tokens) all come from words, in order: ids never None.
        settled = bisect_left(word_ids, word_ids[-1] - _UNSETTLED_WORDS + 1)
        if settled <= self._content_limit:
            return None
        ids = [*self._prefix, *content[: self._content_limit], *self._suffix]
        return _Cut(ids, True, settled + len(self._prefix) + len(self._suffix))
