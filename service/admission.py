"""How long queued work will take, from what the device has measurably done: the batcher admits a
request only when the work it would wait behind fits the latency target. No asyncio, no torch.

Admitting by a fixed count of inputs (4096 before) let the queue hold 15-25 s of work on a CPU, so
under overload every admitted request finished near its client's timeout and goodput collapsed. A
time target adapts to the device, the model and the input lengths: the same setting holds a few
hundred inputs on a CPU and thousands on a GPU.

The estimate is deliberately simple: device seconds per token, measured over the last passes
(real tokens, so padding and a pass's fixed cost are included at today's mix), times the tokens a
new request would wait behind. Under round robin (service.batcher) a request of n inputs waits,
per queued request j, for at most min(n, inputs of j) of j's inputs; summed, that is at most
min(all queued tokens, n x the sum over queued requests of their tokens per input), which is what
`tokens_ahead` returns: one short query behind a 2048-input request waits for one of its inputs,
not all of them, and is admitted while the bulk request runs.
"""

from __future__ import annotations

from typing import Final

PASS_DECAY: Final = 0.9
"""Weight of the past per measured pass: the estimate follows the last ~10 passes, so a change of
load (batch size, lengths) or of device speed shows within a second or two under load."""
TOKENS_PER_INPUT_DECAY: Final = 0.95


class Throughput:
    """Device seconds per real token over the recent passes (None until one is known)."""

    def __init__(self, prior_seconds_per_token: float | None = None) -> None:
        self._prior = prior_seconds_per_token
        # Decayed sums of the measured passes' seconds and tokens.
        self._seconds = 0.0
        self._tokens = 0.0

    def record(self, tokens: int, seconds: float) -> None:
        if tokens <= 0 or seconds <= 0:
            return
        self._seconds = self._seconds * PASS_DECAY + seconds
        self._tokens = self._tokens * PASS_DECAY + tokens

    @property
    def seconds_per_token(self) -> float | None:
        """The measured speed; the prior (the warm-up's) until a pass has been measured."""
        return self._seconds / self._tokens if self._tokens else self._prior


class TokensPerInput:
    """The running mean of tokens per input of the requests prepared so far: the estimate for a
    request that is admitted but not tokenised yet."""

    def __init__(self, initial: float = 16.0) -> None:
        self.value = initial

    def record(self, tokens: int, inputs: int) -> None:
        if inputs > 0:
            weight = TOKENS_PER_INPUT_DECAY**inputs
            self.value = self.value * weight + (tokens / inputs) * (1 - weight)


def tokens_ahead(inputs: int, queued_tokens: float, per_input_sum: float) -> float:
    """An upper bound of the queued tokens a new request of `inputs` inputs waits behind under
    round robin (module doc): `per_input_sum` is the sum, over the queued requests, of their
    tokens per input."""
    return min(queued_tokens, inputs * per_input_sum)


def retry_after_s(wait_s: float, max_wait_s: float) -> float:
    """When the queue will have drained enough for the refused request to fit: the excess wait,
    at least one second (Retry-After counts whole seconds)."""
    return max(1.0, wait_s - max_wait_s)
