"""Every way a text reaches the tokenizer is held to the character budget (service.textcut): the
model's own truncation, a request's own cut (truncate_prompt_tokens, truncation_side) and OpenAI
token ids decoded to text, through Runtime.prepare as the batcher calls it, on the tiny model. A
15 MB text that reached the tokenizer whole fails these; so do ids other than the whole text's."""

from __future__ import annotations

from pathlib import Path

import pytest
import tiktoken
from service_testkit import TINY_MAX_TOKENS, Spy, longest_read, spied, whole_text_ids

from service.batcher import Batcher
from service.encoder import Encoder, EncoderConfig
from service.metrics import Metrics
from service.model_types import MODEL_DEFAULT, InputTooLongError, Tokenized, Truncation
from service.openai_tokens import OpenAITokens
from service.runtime import Job, Runtime
from service.schemas import Inputs
from service.settings import Settings

UNIT = "the quick brown fox jumps over the lazy dog . "
TAIL = "the red fish ran to the big blue dog"
REPEATS = 330_000
HUGE = UNIT * REPEATS + TAIL  # 15.2 MB; its start and its end hold different words
KEEP = 10
CUTS = {
    "model default": MODEL_DEFAULT,
    "right": Truncation(max_tokens=KEEP, side="right"),
    "left": Truncation(max_tokens=KEEP, side="left"),
}


@pytest.fixture(scope="module")
def cl100k_ids(offline_tiktoken: Path) -> list[int]:
    """HUGE as a client sends it in OpenAI's token ids (ids concatenated decode to the texts
    concatenated, so the unit is encoded once)."""
    encoding = tiktoken.get_encoding("cl100k_base")
    return encoding.encode(UNIT) * REPEATS + encoding.encode(TAIL)


@pytest.fixture
def served(tiny_model_dir: Path) -> tuple[Runtime, Encoder, list[Spy]]:
    """A runtime as the lifespan builds it (token ids read as cl100k_base, the default), its
    encoder's tokenizers spied on; the batcher is only built: prepare is called directly."""
    encoder = Encoder.load(EncoderConfig(model=str(tiny_model_dir)))
    spies = spied(encoder._text)
    runtime = Runtime(Settings(), Metrics(), frozenset())
    runtime.encoder = encoder
    runtime.openai_tokens = OpenAITokens.load()
    runtime.batcher = Batcher(
        encoder.encode_ids,
        prepare=runtime.prepare,
        max_batch_tokens=4096,
        max_batch_size=32,
        max_queue_items=64,
    )
    return runtime, encoder, spies


def expected(encoder: Encoder, cut: Truncation) -> list[int]:
    """The ids of HUGE tokenised whole and cut as asked, from the part of it the cut keeps (the
    start repeats, and the end is far from where a 2,000-character part begins)."""
    prefix, suffix = encoder._prefix, encoder._suffix
    room = (cut.max_tokens or TINY_MAX_TOKENS) - len(prefix) - len(suffix)
    if cut.side == "right":
        content = whole_text_ids(encoder, HUGE[:2000])[:room]
    else:
        content = whole_text_ids(encoder, HUGE[-2000:])[-room:]
    return [*prefix, *content, *suffix]


@pytest.mark.parametrize("form", ["text", "cl100k token ids"])
@pytest.mark.parametrize("cut_name", list(CUTS))
def test_a_15_mb_input_is_cut_before_the_tokenizer_on_every_path(
    served: tuple[Runtime, Encoder, list[Spy]], cl100k_ids: list[int], form: str, cut_name: str
) -> None:
    runtime, encoder, spies = served
    cut = CUTS[cut_name]
    inputs = Inputs(texts=[HUGE]) if form == "text" else Inputs(token_ids=[cl100k_ids])
    (result,) = runtime.prepare([Job(inputs, None, cut)])
    assert isinstance(result, Tokenized), result
    assert longest_read(spies) <= encoder._text.first_cut_chars == 16 * TINY_MAX_TOKENS
    assert result.ids == [expected(encoder, cut)]
    assert result.truncated == [True]
    if cut.side == "left":  # the end of the text, not its beginning
        assert encoder._backend.decode(result.ids[0]).endswith("big blue dog")


def test_with_truncation_off_a_left_side_request_is_refused_from_its_cut(
    tiny_model_dir: Path,
) -> None:
    """truncation_side alone asks for no cut: over-long input is refused, as for the model's
    own truncation, from what the cut read."""
    strict = Encoder.load(EncoderConfig(model=str(tiny_model_dir), truncate=False))
    spies = spied(strict._text)
    with pytest.raises(InputTooLongError, match=r"input\[0\] has at least \d+ tokens"):
        strict.tokenize_cut([HUGE], None, Truncation(side="left"))
    assert longest_read(spies) <= strict._text.first_cut_chars
