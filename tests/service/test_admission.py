"""service.admission on its own: the device speed fit, Retry-After spreading, and the token
estimate of a request the tokenizer has not seen yet."""

from __future__ import annotations

import pytest

from service.admission import MAX_PROMISED_S, Promises, TextTokens, Throughput
from service.metrics import Metrics
from service.model_types import Tokenized, Truncation
from service.runtime import Job, Runtime
from service.schemas import Inputs
from service.settings import Settings


def test_the_speed_of_full_windows_is_not_taken_from_small_ones() -> None:
    """A window of a few short inputs is mostly a fixed cost: its seconds per token are ten times
    those of a full window. The fit of fixed + per-token parts gives full windows their own."""
    throughput = Throughput(prior_seconds_per_token=1.0)
    assert throughput.seconds_per_token(4000) == 1.0  # the prior, until a window is measured
    for _ in range(10):
        throughput.record(tokens=40, seconds=0.05 + 40 * 1e-4)
        throughput.record(tokens=4000, seconds=0.05 + 4000 * 1e-4)
    assert throughput.fit() == pytest.approx((0.05, 1e-4))
    assert throughput.seconds_per_token(4000) == pytest.approx(1e-4 + 0.05 / 4000)
    for _ in range(100):  # the device got 4x slower
        throughput.record(tokens=40, seconds=4 * (0.05 + 40 * 1e-4))
        throughput.record(tokens=4000, seconds=4 * (0.05 + 4000 * 1e-4))
    assert throughput.seconds_per_token(4000) == pytest.approx(4 * (1e-4 + 0.05 / 4000), rel=0.01)
    assert Throughput().seconds_per_token(4000) is None


def test_refused_clients_are_told_to_come_back_one_after_another() -> None:
    """Each refusal's Retry-After counts the work refused before it, so clients that honour it
    return spread over the time the device needs for them, not all at the next second."""
    promises = Promises(now=0.0)
    first = promises.refuse(now=0.0, excess_s=0.5, work_s=2.0)
    second = promises.refuse(now=0.0, excess_s=0.5, work_s=2.0)
    third = promises.refuse(now=0.0, excess_s=0.5, work_s=2.0)
    assert (first, second, third) == (1.0, 2.5, 4.5)
    assert promises.refuse(now=3.0, excess_s=0.5, work_s=2.0) == 3.5  # 3 s of it drained
    assert promises.refuse(now=100.0, excess_s=0.0, work_s=1.0) == 1.0  # all of it drained
    for _ in range(200):  # clients that never wait as told cannot push it out without bound
        last = promises.refuse(now=100.0, excess_s=0.0, work_s=1.0)
    assert last == MAX_PROMISED_S


def test_a_request_is_estimated_from_its_characters_before_it_is_tokenised() -> None:
    """48 two-letter inputs are ~200 tokens, not 48 x a fixed guess per input; a long text is at
    most the model's maximum; the rate follows what the tokenizer really gave."""
    runtime = Runtime(Settings(), Metrics(), frozenset())
    runtime.text_tokens = TextTokens(max_tokens=256)
    short = runtime.expected_tokens(Job(Inputs(texts=["hi"] * 48), None))
    assert short == pytest.approx(48 * (2 * 0.3 + 2))
    assert runtime.expected_tokens(Job(Inputs(texts=["x" * 100_000]), None)) == 256
    cut = Truncation(max_tokens=16)  # the request's own cut caps each input
    assert runtime.expected_tokens(Job(Inputs(texts=["x" * 100_000]), None, cut)) == 16
    assert runtime.expected_tokens(Job(Inputs(token_ids=[[7] * 300]), None, cut)) == 16
    ids = runtime.expected_tokens(Job(Inputs(token_ids=[[7] * 10, [7] * 300]), None))
    assert ids == 12 + 256  # token ids are counted, special tokens added, capped
    chinese = ["中文字符测试" * 5] * 20  # one token a character, untruncated
    for _ in range(50):
        runtime._learn_tokens_per_char(chinese, None, Tokenized([[0] * 32] * 20, [False] * 20))
    assert runtime.text_tokens.per_char == pytest.approx(1.0, rel=0.01)
    # Truncated inputs say nothing about the rate (their tokens were capped).
    runtime._learn_tokens_per_char(["x" * 9000], None, Tokenized([[0] * 256], [True]))
    assert runtime.text_tokens.per_char == pytest.approx(1.0, rel=0.01)
