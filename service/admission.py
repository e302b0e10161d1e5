"""How long queued work will take, from what the device has measurably done: the batcher admits a
request only when the work it would wait behind fits the latency target. No asyncio, no torch.

Admitting by a fixed count of inputs (4096 before) let the queue hold 15-25 s of work on a CPU, so
under overload every admitted request finished near its client's timeout and goodput collapsed. A
time target adapts to the device, the model and the input lengths: the same setting holds a few
hundred inputs on a CPU and thousands on a GPU.

The estimate is deliberately simple: device seconds per token, measured over the last full
windows (real tokens over wall time, so padding, a pass's fixed cost and the time between passes
are included at today's mix of lengths), times the tokens a new request would wait behind. Under
round robin (service.batcher) a request of n inputs waits, per queued request j, for at most
min(n, inputs of j) of j's inputs; summed, that is at most min(all queued tokens, n x the sum over
queued requests of their tokens per input), which is what `tokens_ahead` returns: one short query
behind a 2048-input request waits for one of its inputs, not all of them, and is admitted while
the bulk request runs.
"""

from __future__ import annotations

from typing import Final

PASS_DECAY: Final = 0.95
"""Weight of the past per measured window: the fit follows the last ~20 windows, so a change of
device speed or of input lengths shows within a few seconds under load."""
TOKENS_PER_INPUT_DECAY: Final = 0.95
MAX_PROMISED_S: Final = 60.0
"""The most Retry-After grows to for work already refused: clients that retry sooner than told
must not push every later client's Retry-After out without bound, and the openai SDK gives up
instead of retrying past 120 s (MAX_RETRY_AFTER_DELAY in openai/_constants.py, 3.63)."""


class Throughput:
    """A window's seconds as a fixed part plus a part per token, fitted (least squares, the
    recent windows weighing most) over the windows the batcher measured.

    A window of a few short inputs is mostly the fixed part (the pass's setup, the time between
    passes); dividing its seconds by its tokens made the device look several times slower than
    it is with full windows, which is when admission matters (the queue is long), and the
    refusals that followed kept the windows small. The fit separates the two; the seconds per
    token admission uses are those of a full window."""

    def __init__(self, prior_seconds_per_token: float | None = None) -> None:
        self._prior = prior_seconds_per_token
        # Decayed sums of 1, x (tokens), y (seconds), x^2 and x*y over the measured windows.
        self._n = self._x = self._y = self._xx = self._xy = 0.0

    def record(self, tokens: int, seconds: float) -> None:
        if tokens <= 0 or seconds <= 0:
            return
        d = PASS_DECAY
        self._n = self._n * d + 1
        self._x = self._x * d + tokens
        self._y = self._y * d + seconds
        self._xx = self._xx * d + tokens * tokens
        self._xy = self._xy * d + tokens * seconds

    def fit(self) -> tuple[float, float] | None:
        """(fixed seconds per window, seconds per token); None before any window or prior."""
        if not self._n:
            return None if self._prior is None else (0.0, self._prior)
        spread = self._n * self._xx - self._x * self._x
        if spread > 1e-9 * self._n * self._xx:
            per_token = (self._n * self._xy - self._x * self._y) / spread
            fixed = (self._y - per_token * self._x) / self._n
            if per_token > 0 and fixed >= 0:
                return fixed, per_token
        # Windows all of one size, or a fit that noise made meaningless: the plain ratio.
        return 0.0, self._y / self._x

    def tokens_within(self, seconds: float) -> int | None:
        """The most tokens one window runs in `seconds` (None before any window or prior)."""
        fit = self.fit()
        if fit is None:
            return None
        fixed, per_token = fit
        return max(0, int((seconds - fixed) / per_token))

    def seconds_per_token(self, window_tokens: float) -> float | None:
        """Seconds per token of windows of `window_tokens` tokens (the fixed part shared)."""
        fit = self.fit()
        if fit is None:
            return None
        fixed, per_token = fit
        return per_token + fixed / max(window_tokens, 1.0)


class TextTokens:
    """The tokens a request will have, before it is tokenised: its characters x the tokens per
    character of the texts tokenised so far (untruncated ones), each input at most the model's
    maximum. Admission counts a request from its arrival, and a burst arrives before the
    tokenizer has seen it: a fixed guess per input made 48 two-letter inputs look like 3 s of
    work on a warm-started CPU server."""

    def __init__(self, max_tokens: int, special_tokens: int = 2, per_char: float = 0.3) -> None:
        self.max_tokens = max_tokens
        self.special_tokens = special_tokens
        self.per_char = per_char
        """Start: English prose (~4 characters a token); Chinese is ~1."""

    def estimate(self, lengths: list[int], cap: int | None = None) -> float:
        """Tokens of texts of these lengths in characters, each at most `cap` (a request's own
        cut), else the model's maximum."""
        most = self.max_tokens if cap is None else cap
        return sum(min(most, n * self.per_char + self.special_tokens) for n in lengths)

    def record(self, chars: int, tokens: int) -> None:
        """What tokenising `chars` characters of untruncated text gave (special tokens out)."""
        if chars > 0:
            weight = TOKENS_PER_INPUT_DECAY ** min(chars / 64, 100)
            self.per_char = self.per_char * weight + (tokens / chars) * (1 - weight)


class TokensPerInput:
    """The running mean of tokens per input of the requests prepared so far: the estimate for a
    request that is admitted but not tokenised yet (a guess until the first one)."""

    def __init__(self, initial: float = 16.0) -> None:
        self.value = initial
        self._seen = False

    def record(self, tokens: int, inputs: int) -> None:
        if inputs <= 0:
            return
        weight = TOKENS_PER_INPUT_DECAY**inputs if self._seen else 0.0
        self.value = self.value * weight + (tokens / inputs) * (1 - weight)
        self._seen = True


def tokens_ahead(inputs: int, queued_tokens: float, per_input_sum: float) -> float:
    """An upper bound of the queued tokens a new request of `inputs` inputs waits behind under
    round robin (module doc): `per_input_sum` is the sum, over the queued requests, of their
    tokens per input."""
    return min(queued_tokens, inputs * per_input_sum)


def retry_after_s(wait_s: float, max_wait_s: float) -> float:
    """When the queue will have drained enough for the refused request to fit: the excess wait,
    at least one second (Retry-After counts whole seconds)."""
    return max(1.0, wait_s - max_wait_s)


class Promises:
    """The work refused clients were told to bring back, draining at the device's pace: each
    refusal's Retry-After is when the queue will have room for it *after* the work refused
    before it, so clients that honour Retry-After come back spread over the time the device
    needs for them instead of all at the next second (512 clients told "1" came back ~450 times a
    second for ~12 admissions, and the refusals' own CPU slowed the device)."""

    def __init__(self, now: float) -> None:
        self._seconds = 0.0
        self._at = now

    def refuse(self, now: float, excess_s: float, work_s: float) -> float:
        """The Retry-After of a request with `work_s` seconds of work, refused now while the
        queue is `excess_s` over its target."""
        self._seconds = max(0.0, self._seconds - (now - self._at))
        self._at = now
        retry = max(1.0, excess_s + self._seconds)
        self._seconds = min(MAX_PROMISED_S, self._seconds + work_s)
        return retry
