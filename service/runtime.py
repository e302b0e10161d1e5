"""What the lifespan builds and the routes use: the encoder, the batcher, the metrics, the phase.

Imports no torch: the encoder is reached through the EncoderLike protocol, so routes stay light.
"""

from __future__ import annotations

import enum
import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol, TypeVar

import numpy as np

from service.batcher import Batcher
from service.errors import InvalidRequestError, NotReadyError
from service.metrics import Metrics
from service.model_types import InputTooLongError, ModelInfo, TokenIdError, Tokenized
from service.schemas import Inputs
from service.settings import Settings

log = logging.getLogger(__name__)
T = TypeVar("T")


class EncoderLike(Protocol):
    info: ModelInfo

    def tokenize(self, texts: list[str]) -> Tokenized: ...

    def tokenize_ids(self, token_ids: list[list[int]]) -> Tokenized: ...

    def encode_ids(self, batch: list[list[int]]) -> np.ndarray: ...


class Phase(enum.Enum):
    LOADING = "loading"
    READY = "ready"
    DRAINING = "draining"
    FAILED = "failed"


@dataclass(frozen=True)
class Embedded:
    vectors: np.ndarray
    tokens: int
    truncated: int


class Runtime:
    def __init__(self, settings: Settings, metrics: Metrics, api_keys: frozenset[str]) -> None:
        self.settings = settings
        self.metrics = metrics
        self.api_keys = api_keys
        self.phase = Phase.LOADING
        self.encoder: EncoderLike | None = None
        self.batcher: Batcher[Inputs] | None = None
        self.load_error: BaseException | None = None
        # Called when the model cannot load; `python -m service` makes it stop the server (exit 1).
        self.on_fatal: Callable[[], None] = lambda: None

    @property
    def ready(self) -> bool:
        return self.phase is Phase.READY

    def set_phase(self, phase: Phase) -> None:
        if self.phase is not phase:
            log.info("phase %s -> %s", self.phase.value, phase.value)
        self.phase = phase
        self.metrics.ready.set(1 if phase is Phase.READY else 0)

    def start_draining(self) -> None:
        """SIGTERM: /ready turns 503 at once; requests are still served until the process stops."""
        if self.phase is not Phase.FAILED:
            self.set_phase(Phase.DRAINING)

    def serving(self) -> tuple[EncoderLike, Batcher[Inputs]]:
        """The encoder and batcher, or NotReadyError while the model loads (or failed to)."""
        if self.encoder is None or self.batcher is None:
            raise NotReadyError(f"the model is not loaded yet (phase: {self.phase.value})")
        return self.encoder, self.batcher

    def prepare(self, requests: list[Inputs]) -> list[Tokenized | Exception]:
        """The batcher's stage 1, on its tokenizer thread: every text of every request in one
        Rust `encode_batch` call (per text several times cheaper than a call per request), token
        ids checked per request, and each request's token cap. A request's failure is its own."""
        encoder, _ = self.serving()
        results: list[Tokenized | Exception] = [_NOT_PREPARED] * len(requests)
        texts = [i for i, inputs in enumerate(requests) if inputs.texts is not None]
        if texts:
            try:
                everything = encoder.tokenize([t for i in texts for t in requests[i].texts or ()])
            except InputTooLongError:
                # Only with truncation off: find whose, one request at a time.
                for i in texts:
                    results[i] = _attempt(encoder.tokenize, requests[i].texts or [])
            else:
                start = 0
                for i in texts:
                    end = start + len(requests[i])
                    results[i] = Tokenized(
                        everything.ids[start:end], everything.truncated[start:end]
                    )
                    start = end
        for i, inputs in enumerate(requests):
            if inputs.token_ids is not None:
                results[i] = _attempt(encoder.tokenize_ids, inputs.token_ids)
        limit = self.settings.max_request_tokens
        for i, result in enumerate(results):
            if isinstance(result, Tokenized) and result.token_count > limit:
                results[i] = InvalidRequestError(
                    f"the request has {result.token_count} tokens, over this server's limit of "
                    f"{limit} per request: split it into smaller requests",
                    param="input",
                )
        return results

    async def embed(self, inputs: Inputs) -> Embedded:
        _, batcher = self.serving()
        vectors, tokenized = await batcher.embed(inputs, len(inputs))
        if tokenized.truncated_count:
            self.metrics.truncated.inc(tokenized.truncated_count)
        return Embedded(vectors, tokenized.token_count, tokenized.truncated_count)


_NOT_PREPARED = RuntimeError("not prepared")


def _attempt(call: Callable[[list[T]], Tokenized], inputs: list[T]) -> Tokenized | Exception:
    try:
        return call(inputs)
    except (InputTooLongError, TokenIdError) as exc:
        return exc
