"""Data and errors the encoder produces, importable without torch (routes never import torch)."""

from __future__ import annotations

from dataclasses import dataclass


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

    def __init__(self, index: int, tokens: int, max_tokens: int) -> None:
        super().__init__(
            f"input[{index}] has {tokens} tokens, over the model's maximum of {max_tokens} "
            "(truncation is disabled on this server)"
        )
        self.index = index


class TokenIdError(ValueError):
    """A client-supplied token id is outside this model's vocabulary."""

    param = "input"
