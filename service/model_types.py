"""Data and errors the encoder produces, importable without torch (routes never import torch)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal


@dataclass(frozen=True)
class ModelInfo:
    model_id: str
    revision: str
    path: str
    dimension: int
    max_tokens: int
    pooling: str
    device: str
    dtype: str
    attention: str
    vocab_size: int
    dtype_requested: str = "auto"
    """What the settings asked for; `dtype` is what it resolved to."""
    model_dtype: str | None = None
    """The dtype the model's config.json declares (`dtype`/`torch_dtype`), if any."""
    normalize: bool = True
    """Rows are L2-normalised (the model's modules.json has a Normalize step, or a setting)."""
    normalize_source: str = "modules.json"
    matryoshka: bool = False
    """The model was trained so that the first N components are an embedding too."""
    matryoshka_dimensions: tuple[int, ...] | None = None
    """The N it was trained for; None with `matryoshka`: any N."""
    matryoshka_source: str = "config.json"
    prompts: dict[str, str] = field(default_factory=dict)
    """Named prompts (config_sentence_transformers.json, plus settings): text put before inputs."""
    default_prompt_name: str | None = None
    default_prompt: str | None = None
    """The prompt used when a request names none (None: inputs are embedded as sent)."""
    special_tokens: int = 0
    """Special tokens the tokenizer puts around every sequence ([CLS] and [SEP] for BERT)."""


Side = Literal["left", "right"]


@dataclass(frozen=True, slots=True)
class Truncation:
    """How a request wants its inputs cut and framed (vLLM's `truncate_prompt_tokens`,
    `truncation_side` and `add_special_tokens`, TEI's `truncation_direction` and `truncate`). The
    special tokens and the prompt are always kept; the input's own tokens are cut from `side`."""

    max_tokens: int | None = None
    """Tokens per input at most, special tokens and prompt included; None: the model's maximum,
    with over-long inputs refused instead when the server does not truncate."""
    side: Side = "right"
    """right keeps the input's first tokens, left its last."""
    truncate: bool | None = None
    """TEI's `truncate`: True cuts an over-long input even where the server refuses them, False
    refuses it (400 context_length_exceeded) even where the server cuts them; None: as the
    server does."""
    special_tokens: bool = True
    """vLLM's `add_special_tokens`: False embeds a text's tokens (after the prompt's) without the
    model's special tokens ([CLS], [SEP]), each input then holding up to max_tokens of its own."""

    def may_cut(self, server_truncates: bool) -> bool:
        """Whether an over-long input is cut (else refused): as the request says, else as the
        server does; a request's own limit is always a request to cut."""
        if self.truncate is not None:
            return self.truncate
        return server_truncates or self.max_tokens is not None


MODEL_DEFAULT = Truncation()


@dataclass(frozen=True)
class Tokenized:
    ids: list[list[int]]
    """Token ids with the model's special tokens, at most max_tokens each."""
    truncated: list[bool]

    @property
    def token_count(self) -> int:
        return sum(len(ids) for ids in self.ids)

    @property
    def truncated_count(self) -> int:
        return sum(self.truncated)


class InputTooLongError(ValueError):
    """An input exceeds max_tokens and truncation is off."""

    param = "input"

    def __init__(self, index: int, tokens: int, max_tokens: int, at_least: bool = False) -> None:
        count = f"at least {tokens} tokens" if at_least else f"{tokens} tokens"
        super().__init__(
            f"input[{index}] has {count}, over the model's maximum of {max_tokens} "
            "(truncation is disabled on this server)"
        )
        self.index = index


class SparseTextError(ValueError):
    """A text whose first characters (last, for a left-side cut) hold too few words to know the
    tokens the model would see without tokenising all of it (service.textcut): whitespace or
    control-character padding, or words thousands of characters long."""

    param = "input"

    def __init__(self, index: int, scanned_chars: int, tokens: int, side: Side = "right") -> None:
        end = "first" if side == "right" else "last"
        super().__init__(
            f"input[{index}]: its {end} {scanned_chars} characters do not hold the {tokens} "
            "tokens the model reads of it, so the server would have to tokenise all of it (it is "
            "mostly whitespace or control characters, or words thousands of characters long); "
            "remove the padding or split the text"
        )
        self.index = index


class TokenIdError(ValueError):
    """A client-supplied token id is outside this model's vocabulary."""

    param = "input"


class EmptyInputError(ValueError):
    """An input that leaves the model nothing to read: an empty text without special tokens
    (add_special_tokens=false) or a prompt."""

    param = "input"

    def __init__(self, index: int) -> None:
        super().__init__(
            f"input[{index}] is empty and add_special_tokens is false: the model would read no "
            "token at all; send text, or leave add_special_tokens at true (an empty text is then "
            "embedded as the model's special tokens alone)"
        )
        self.index = index


class DeviceOutOfMemoryError(RuntimeError):
    """A forward pass ran out of device memory; the encoder freed its cache. A smaller batch may
    fit (the batcher retries in halves); one input alone that does not fit fails with this."""


class DeviceFailedError(RuntimeError):
    """The device is unusable (a CUDA error poisons the process's context: every later call
    fails). Only a new process recovers: the server fails its liveness probe."""


class NonFiniteEmbeddingError(RuntimeError):
    """The model produced NaN or infinity (typically float16 overflow): never sent as a vector."""

    def __init__(self, index: int, dtype: str) -> None:
        super().__init__(
            f"the model produced a non-finite (NaN or infinite) embedding for input[{index}] "
            f"running in {dtype}; the server does not return it. A float16 overflow is the "
            "usual cause: the operator can set EMBED_DTYPE=float32 (or bfloat16)"
        )
        self.index = index
