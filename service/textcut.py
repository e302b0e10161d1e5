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

Added tokens (special tokens such as `<mask>`, and any token added to a vocabulary) are matched
in the raw text before the normalizer and pre-tokenizer run (`extract_and_normalize` in
tokenizers/src/tokenizer/added_vocabulary.rs at v0.23.1), so a cut inside one splits it into
ordinary words, as many as its characters make: the settled part also stops before the last
`reach` characters of a right cut (the first of a left cut), twice the longest added token
(normalizers may compose characters). One with `lstrip` (RoBERTa's and XLM-R's `<mask>`) takes the
whitespace before it into its match, a run of any length, so with such a token the settled part
also stops before the whitespace that runs up to that point; `rstrip` is the mirror image for a
left cut.

The argument holds only for the families named above, so `uncovered` reads the tokenizer's own
description when the model loads (the normalizer, the pre-tokenizer, the model) and, for anything
else, the encoder tokenises every text whole: exactly the old cost, bounded by the request body
limit, said in /info (`limits.text_cut`) and logged at startup. Llama-3 and cl100k style regexes
are such a case: `\\p{N}{1,3}` groups a run of digits from its start, so a suffix that starts
inside the run groups all of it differently (`12 3 45 67 8 90` in the whole text, `3 4 5 67 8 90`
in its last ten characters). So is a tokenizer that does not split text into words at all (no
pre-tokenizer, or Metaspace with `split: false`): no cut of it ever settles.

The budget: `first_cut_chars` per text (16 characters per model token: ~4x what English prose and
~16x what Chinese needs, so a real text is settled at the first try) and at most `scan_chars`
(1024 per model token, at most 1 Mi characters) for a text that is mostly whitespace, control
characters or words thousands of characters long: such a text has too few words to settle within
that, and tokenising all of it would cost what this module avoids (15 MB of spaces: 0.9 GB), so
it is refused (SparseTextError, a 400) rather than silently changed.
"""

from __future__ import annotations

import json
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
UNCUT: Final = 1 << 62
"""The character budget of a tokenizer the argument does not cover: every text is read whole."""

# The families the module doc argues for, as tokenizers' JSON descriptions name them (tokenizers
# v0.23.1, bindings/python: `Tokenizer.to_str`). Normalizers that act on a character or a combining
# sequence at a time; Precompiled is SentencePiece's character map (XLM-R, multilingual e5), which
# also maps one grapheme at a time (tokenizers/src/normalizers/precompiled.rs, `normalize` walks
# the string grapheme by grapheme, with unicode_segmentation).
_NORMALIZERS: Final = frozenset(
    {"BertNormalizer", "Lowercase", "NFC", "NFD", "NFKC", "NFKD", "StripAccents", "Precompiled"}
)
# Pre-tokenizers whose words run to the end of a run of one kind of character or to a fixed
# delimiter, with at most a one-character lookahead.
_SPLITTERS: Final = frozenset(
    {
        "BertPreTokenizer",
        "Whitespace",
        "WhitespaceSplit",
        "Punctuation",
        "Digits",
        "CharDelimiterSplit",
    }
)
GPT2_REGEX: Final = r"'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+"
QWEN2_REGEX: Final = (
    r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*"
    r"|\s*[\r\n]+|\s+(?!\S)|\s+"
)
"""The regexes of a Split pre-tokenizer the argument covers (Qwen2's: tokenizer.json of
Qwen/Qwen2-7B; GPT-2's, which ByteLevel uses with use_regex)."""
_MODELS: Final = frozenset({"WordPiece", "BPE", "Unigram", "WordLevel"})


def uncovered(tokenizer: Tokenizer) -> str | None:
    """Why the cut argument (module doc) does not cover this tokenizer, or None when it does."""
    return _uncovered(json.loads(tokenizer.to_str()))


def _uncovered(spec: dict[str, Any]) -> str | None:
    """`uncovered`, from the tokenizer's JSON description."""
    model = spec["model"]["type"]
    if model not in _MODELS:
        return f"model {model}"
    for normalizer in _flatten(spec.get("normalizer"), "normalizers"):
        kind = normalizer["type"]
        literal = kind == "Replace" and "String" in normalizer["pattern"]
        if kind not in _NORMALIZERS and not literal:
            return f"normalizer {kind}" + (" with a regex" if kind == "Replace" else "")
    splits = False
    for pre in _flatten(spec.get("pre_tokenizer"), "pretokenizers"):
        kind = pre["type"]
        if kind == "Split":
            pattern = pre["pattern"]
            if "Regex" in pattern and pattern["Regex"] not in (GPT2_REGEX, QWEN2_REGEX):
                return f"pre-tokenizer Split with the regex {pattern['Regex']!r}"
            splits = True
        elif kind == "ByteLevel":
            splits = splits or bool(pre.get("use_regex", True))
        elif kind == "Metaspace":
            splits = splits or bool(pre.get("split", True))
        elif kind in _SPLITTERS:
            splits = True
        else:
            return f"pre-tokenizer {kind}"
    if not splits:
        return "no pre-tokenizer splits the text into words"
    return None


def _flatten(node: dict[str, Any] | None, key: str) -> list[dict[str, Any]]:
    if node is None:
        return []
    if node["type"] == "Sequence":
        return [leaf for child in node[key] for leaf in _flatten(child, key)]
    return [node]


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
        description = truncating.to_str()
        full = Tokenizer.from_str(description)
        full.no_truncation()
        full.no_padding()
        self._full = full
        self._max_tokens = max_tokens
        self._prefix = prefix
        self._suffix = suffix
        self._content_limit = max_tokens - len(prefix) - len(suffix)
        self._truncate = truncate
        spec = json.loads(description)  # a vocabulary of 250k tokens is ~17 MB: read it once
        self.uncovered = _uncovered(spec)
        """Why texts are read whole (module doc), or None: they are cut."""
        added = spec.get("added_tokens") or []
        self._reach = 2 * max((len(token["content"]) for token in added), default=0)
        self._lstrip = any(token.get("lstrip") for token in added)
        self._rstrip = any(token.get("rstrip") for token in added)
        if self.uncovered is None:
            self.first_cut_chars = FIRST_CUT_CHARS_PER_TOKEN * max_tokens
            self.scan_chars = max(
                self.first_cut_chars, min(SCAN_CHARS_PER_TOKEN * max_tokens, MAX_SCAN_CHARS)
            )
        else:
            self.first_cut_chars = self.scan_chars = UNCUT

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
            settled = self._settled(_cut(text, size, side), encoding, keep, side)
            if settled is not None:
                return Content(settled, whole=False)
            if size >= self.scan_chars:
                return None
            size = min(2 * size, self.scan_chars)
            if size >= len(text):
                return Content(self._full.encode(text, add_special_tokens=False).ids, whole=True)
            encoding = self._full.encode(_cut(text, size, side), add_special_tokens=False)

    def _settled(self, cut: str, encoding: Any, keep: int, side: Side) -> list[int] | None:
        """The tokens of a cut's settled words, when they are more than `keep`; else None. The
        settled words are all but the two at the cut end, and none within `reach` characters of
        it or of the whitespace before (after) those, which an added token may still take
        (module doc)."""
        content, word_ids, offsets = encoding.ids, encoding.word_ids, encoding.offsets
        bound = _settled_words(word_ids, keep, side)
        if bound is None:
            return None
        if side == "right":
            limit = len(cut) - self._reach
            while self._lstrip and limit > 0 and cut[limit - 1].isspace():
                limit -= 1
            # The tokens that reach past the limit: their words and the rest are unsettled.
            first = bound
            while first > 0 and offsets[first - 1][1] > limit:
                first -= 1
            end = bisect_left(word_ids, word_ids[first]) if first < bound else bound
            return content[:end] if end > keep else None
        limit = self._reach
        while self._rstrip and limit < len(cut) and cut[limit].isspace():
            limit += 1
        after = bound
        while after < len(content) and offsets[after][0] < limit:
            after += 1
        start = bisect_left(word_ids, word_ids[after - 1] + 1) if after > bound else bound
        return content[start:] if len(content) - start > keep else None


def _cut(text: str, size: int, side: Side) -> str:
    return text[:size] if side == "right" else text[-size:]


def _settled_words(word_ids: list[int], keep: int, side: Side) -> int | None:
    """Where the settled words of a cut's content end (right) or start (left), all but the two at
    its cut end; None when they do not hold more than `keep` tokens. Content tokens (no special
    tokens) all come from words, in order, so `word_ids` holds no None and never decreases."""
    if len(word_ids) <= keep:
        return None
    if side == "right":
        end = bisect_left(word_ids, word_ids[-1] - _UNSETTLED_WORDS + 1)
        return end if end > keep else None
    start = bisect_left(word_ids, word_ids[0] + _UNSETTLED_WORDS)
    return start if len(word_ids) - start > keep else None
