"""What the lifespan builds and the routes use: the encoder, the batcher, the metrics, the phase.

Imports no torch: the encoder is reached through the EncoderLike protocol, so routes stay light.
"""

from __future__ import annotations

import asyncio
import enum
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from functools import partial
from typing import Protocol

import numpy as np

from service import contract
from service.admission import TextTokens
from service.batcher import Batcher
from service.errors import InvalidRequestError, NotReadyError
from service.metrics import Metrics
from service.model_types import (
    MODEL_DEFAULT,
    DeviceFailedError,
    EmptyInputError,
    InputTooLongError,
    ModelInfo,
    NonFiniteEmbeddingError,
    Side,
    SparseTextError,
    TokenIdError,
    Tokenized,
    Truncation,
)
from service.openai_tokens import OpenAITokens
from service.schemas import Inputs
from service.settings import MAX_INPUTS_PER_REQUEST, Settings

log = logging.getLogger(__name__)


class EncoderLike(Protocol):
    info: ModelInfo
    seconds_per_token: float | None
    """The device's speed as the warm-up measured it (None without a warm-up)."""
    text_chars: int
    """The most characters of one text its tokenizer reads (service.textcut's scan budget)."""
    read_whole: str | None
    """Why every text is read whole (service.textcut.uncovered), or None."""

    def tokenize(self, texts: list[str], prompt: str | None = None) -> Tokenized: ...

    def tokenize_cut(self, texts: list[str], prompt: str | None, cut: Truncation) -> Tokenized: ...

    def tokenize_ids(
        self,
        token_ids: list[list[int]],
        prompt: str | None = None,
        cut: Truncation = MODEL_DEFAULT,
        *,
        complete: bool = False,
    ) -> Tokenized: ...

    def encode_ids(self, batch: list[list[int]], normalize: bool | None = None) -> np.ndarray: ...


TOKEN_ID_MEANINGS: dict[str, str] = {
    "cl100k_base": "OpenAI's tokenizer cl100k_base, as the OpenAI API reads them: decoded to "
    "text, then embedded like text",
    "model": "this model's tokenizer, each list the complete sequence (special tokens included "
    "where the client put them), as vLLM and TEI read them",
    "reject": "refused: send text",
}
"""What token-id input means under each EMBED_TOKEN_IDS (/info)."""
REJECTED_TOKEN_IDS = (
    "this server does not take token ids (EMBED_TOKEN_IDS=reject): send the text itself. "
    "LangChain's OpenAIEmbeddings sends token ids unless it is built with "
    "check_embedding_ctx_length=False"
)


class Phase(enum.Enum):
    LOADING = "loading"
    READY = "ready"
    DRAINING = "draining"
    FAILED = "failed"


@dataclass(frozen=True, slots=True)
class Job:
    """What the batcher prepares for one request: its inputs, the prompt put before each, and
    how the request wants them cut."""

    inputs: Inputs
    prompt: str | None
    cut: Truncation = MODEL_DEFAULT


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
        self.created = int(time.time())
        """When this server started (the `created` of its /v1/models entries)."""
        self.encoder: EncoderLike | None = None
        self.openai_tokens: OpenAITokens | None = None
        """cl100k_base's decoder, loaded with the model when token ids are read as OpenAI's."""
        self.batcher: Batcher[Job] | None = None
        self.load_error: BaseException | None = None
        # Set when the device failed (a poisoned CUDA context): /health turns 503 so the kubelet
        # restarts the container; nothing else recovers it.
        self.device_error: DeviceFailedError | None = None
        self.pass_cost_tokens = 0
        """A forward pass's fixed cost in padded tokens (the setting, or the device's default)."""
        self.text_tokens: TextTokens | None = None
        """Tokens a request is expected to have before it is tokenised (set once loaded)."""
        self.max_connections: int | None = None
        """The HTTP layer's connection limit in effect (service.httpserver.server_config); None
        when the app is not served by it (in-process test clients)."""
        # Called when the model cannot load; `python -m service` makes it stop the server (exit 1).
        self.on_fatal: Callable[[], None] = lambda: None
        self._stopping: asyncio.Task[None] | None = None

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

    def connection_limit_set(self, limit: int) -> None:
        """The HTTP layer settled on `limit` connections (/info, inference_max_connections)."""
        self.max_connections = limit
        self.metrics.max_connections.set(limit)

    def device_failed(self, error: DeviceFailedError) -> None:
        """The batcher's report of a dead device: not ready, not alive."""
        self.device_error = error
        self.set_phase(Phase.FAILED)

    def serving(self) -> tuple[EncoderLike, Batcher[Job]]:
        """The encoder and batcher, or NotReadyError while the model loads (or failed to)."""
        if self.encoder is None or self.batcher is None:
            raise NotReadyError(f"the model is not loaded yet (phase: {self.phase.value})")
        return self.encoder, self.batcher

    def prompt(self, name: str | None) -> str | None:
        """The text of the named prompt (400 for an unknown name), or the default one."""
        encoder, _ = self.serving()
        info = encoder.info
        if name is None:
            return info.default_prompt
        if name not in info.prompts:
            known = ", ".join(repr(n) for n in sorted(info.prompts))
            raise InvalidRequestError(
                f"prompt_name {name!r} is not one of this model's prompts"
                + (f" ({known})" if known else " (it has none)")
                + f"; see {contract.INFO_PATH}",
                param="prompt_name",
            )
        return info.prompts[name] or None

    def prepare(self, jobs: list[Job]) -> list[Tokenized | Exception]:
        """The batcher's stage 1, on its tokenizer thread: the texts of every request with the
        same prompt in one Rust `encode_batch` call (one call per request costs several times
        more CPU per text, and held the event loop), OpenAI token ids decoded to their text
        first, the model's own token ids checked per request, and each request's token cap. A
        request that asks for its own cut is tokenised alone. A request's failure is its own."""
        encoder, _ = self.serving()
        results: list[Tokenized | Exception] = [_NOT_PREPARED] * len(jobs)
        texts_of: dict[int, list[str]] = {}
        by_prompt: dict[str | None, list[int]] = {}
        for i, job in enumerate(jobs):
            try:
                texts = self._texts(job.inputs, job.cut.side, encoder.text_chars)
            except TokenIdError as exc:
                results[i] = exc
                continue
            if texts is None:  # the model's own ids
                ids = job.inputs.token_ids or []
                tokenize = partial(encoder.tokenize_ids, ids, job.prompt, job.cut, complete=True)
                results[i] = _attempt(tokenize)
            elif job.cut != MODEL_DEFAULT:
                results[i] = _attempt(partial(encoder.tokenize_cut, texts, job.prompt, job.cut))
            else:
                texts_of[i] = texts
                by_prompt.setdefault(job.prompt, []).append(i)
        for prompt, members in by_prompt.items():
            texts = [text for i in members for text in texts_of[i]]
            try:
                everything = encoder.tokenize(texts, prompt)
            except (InputTooLongError, SparseTextError):
                # A text refused (too long with truncation off, or too sparse to cut): find
                # whose, one request at a time.
                for i in members:
                    results[i] = _attempt(partial(encoder.tokenize, texts_of[i], prompt))
                continue
            start = 0
            for i in members:
                end = start + len(texts_of[i])
                results[i] = Tokenized(everything.ids[start:end], everything.truncated[start:end])
                start = end
            self._learn_tokens_per_char(texts, prompt, everything)
        limit = self.request_token_limit()
        for i, result in enumerate(results):
            if isinstance(result, Tokenized) and result.token_count > limit:
                results[i] = InvalidRequestError(
                    f"the request has {result.token_count} tokens, over this server's limit of "
                    f"{limit} per request: split it into smaller requests",
                    param="input",
                )
        return results

    def request_token_limit(self) -> int:
        """EMBED_MAX_REQUEST_TOKENS, or unset the most a request can hold: every input at the
        model's maximum (settings.py says why)."""
        configured = self.settings.max_request_tokens
        if configured is not None:
            return configured
        encoder, _ = self.serving()
        return MAX_INPUTS_PER_REQUEST * encoder.info.max_tokens

    def _learn_tokens_per_char(
        self, texts: list[str], prompt: str | None, tokenized: Tokenized
    ) -> None:
        estimator = self.text_tokens
        if estimator is None:
            return
        extra = len(prompt or "")
        chars = tokens = 0
        for text, ids, cut in zip(texts, tokenized.ids, tokenized.truncated, strict=True):
            if not cut:
                chars += len(text) + extra
                tokens += len(ids) - estimator.special_tokens
        estimator.record(chars, tokens)

    def expected_tokens(self, job: Job) -> float | None:
        """The job's tokens as admission estimates them before the tokenizer has seen it."""
        estimator = self.text_tokens
        if estimator is None:
            return None
        cap = estimator.max_tokens if job.cut.max_tokens is None else job.cut.max_tokens
        prompt_chars = len(job.prompt or "")
        if job.inputs.texts is not None:
            lengths = [len(text) + prompt_chars for text in job.inputs.texts]
            return estimator.estimate(lengths, cap)
        # A token id counts as one token: exact for the model's own ids, close for OpenAI's
        # (cl100k_base ids, decoded and tokenised again); only the prompt's text is estimated.
        prompt = prompt_chars * estimator.per_char
        special = estimator.special_tokens
        return sum(min(cap, len(ids) + prompt + special) for ids in job.inputs.token_ids or ())

    def _texts(self, inputs: Inputs, side: Side, chars: int) -> list[str] | None:
        """The inputs as texts: OpenAI token ids decoded (cl100k_base), each only as far as the
        tokenizer will read it from `side` (`chars` characters); None for the model's own ids,
        which the encoder takes as they are."""
        if inputs.texts is not None:
            return inputs.texts
        if self.settings.token_ids != "cl100k_base":
            return None
        assert self.openai_tokens is not None  # loaded with the model in this mode
        return self.openai_tokens.decode(inputs.token_ids or [], chars, side)

    async def embed(
        self,
        inputs: Inputs,
        prompt_name: str | None = None,
        cut: Truncation = MODEL_DEFAULT,
        normalize: bool | None = None,
    ) -> Embedded:
        """Embed a request's inputs, cut as `cut` says, L2-normalised when `normalize` (None: as
        the model's files say). The encoder returns pooled vectors as they are (the batcher's
        passes mix requests), so normalising is per request, here."""
        encoder, batcher = self.serving()
        if inputs.token_ids is not None and self.settings.token_ids == "reject":
            raise InvalidRequestError(REJECTED_TOKEN_IDS, param="input")
        job = Job(inputs, self.prompt(prompt_name), cut)
        vectors, tokenized = await batcher.embed(job, len(inputs), self.expected_tokens(job))
        finite = np.isfinite(vectors).all(axis=1)
        if not finite.all():
            # orjson writes NaN as null and base64 carries the bytes: neither may go out as a 200.
            error = NonFiniteEmbeddingError(int(np.argmin(finite)), encoder.info.dtype)
            log.error("%s", error)
            raise error
        if encoder.info.normalize if normalize is None else normalize:
            vectors = unit_rows(vectors)
        if tokenized.truncated_count:
            self.metrics.truncated.inc(tokenized.truncated_count)
        return Embedded(vectors, tokenized.token_count, tokenized.truncated_count)

    def stop_batcher(self) -> asyncio.Task[None] | None:
        """Start the batcher's drain (once): queued work finishes within drain_timeout_seconds,
        the rest is answered 503. `python -m service` starts it as the listener closes, so it ends
        inside uvicorn's graceful-shutdown window; the lifespan awaits it."""
        if self._stopping is None and self.batcher is not None:
            drain = self.batcher.stop(self.settings.drain_timeout_seconds)
            self._stopping = asyncio.get_running_loop().create_task(drain, name="drain")
        return self._stopping


_NOT_PREPARED = RuntimeError("not prepared")


def _attempt(tokenize: Callable[[], Tokenized]) -> Tokenized | Exception:
    try:
        return tokenize()
    except (InputTooLongError, SparseTextError, TokenIdError, EmptyInputError) as exc:
        return exc


def unit_rows(vectors: np.ndarray) -> np.ndarray:
    """Rows L2-normalised (as torch.nn.functional.normalize: a zero row stays zero)."""
    norms = np.linalg.norm(vectors, axis=1, keepdims=True)
    return np.ascontiguousarray(vectors / np.maximum(norms, 1e-12), dtype=np.float32)
