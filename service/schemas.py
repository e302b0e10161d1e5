"""Request bodies: the OpenAI embeddings contract and the two simple routes of GTE deployments.

Responses are built as dicts and serialised with orjson in service.routes (vectors are numpy rows:
orjson writes them directly, with no per-float Python objects).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated, Any, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    StrictInt,
    StringConstraints,
    WithJsonSchema,
    field_validator,
)

from service.settings import MAX_INPUTS_PER_REQUEST

NonEmptyText = Annotated[str, StringConstraints(min_length=1, strict=True)]


@dataclass(frozen=True)
class Inputs:
    """A request's inputs in one of two forms: texts, or token ids of this model's tokenizer."""

    texts: list[str] | None = None
    token_ids: list[list[int]] | None = None

    def __len__(self) -> int:
        return len(self.texts if self.texts is not None else self.token_ids or [])


def _is_int(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def parse_input(value: Any) -> Inputs:
    """OpenAI's `input`: a string, a list of strings, a list of token ids, or a list of those."""
    if isinstance(value, str):
        if not value:
            raise ValueError("input must not be an empty string")
        return Inputs(texts=[value])
    if not isinstance(value, list):
        raise ValueError(
            "input must be a string, a list of strings, a list of token ids (integers) or a list "
            f"of lists of token ids; got {type(value).__name__}"
        )
    if not value:
        raise ValueError("input must not be an empty list")
    if all(_is_int(item) for item in value):
        # One input given as token ids: its length is bounded by the model's maximum (truncated
        # or refused by the encoder), not by the number of inputs per request.
        return Inputs(token_ids=[value])
    if len(value) > MAX_INPUTS_PER_REQUEST:
        raise ValueError(
            f"input has {len(value)} items; at most {MAX_INPUTS_PER_REQUEST} are allowed"
        )
    if all(isinstance(item, str) for item in value):
        for index, item in enumerate(value):
            if not item:
                raise ValueError(f"input[{index}] must not be an empty string")
        return Inputs(texts=value)
    if all(isinstance(item, list) for item in value):
        for index, item in enumerate(value):
            if not item:
                raise ValueError(f"input[{index}] must not be an empty list of token ids")
            if not all(_is_int(token) for token in item):
                raise ValueError(f"input[{index}] must be a list of integer token ids")
        return Inputs(token_ids=value)
    raise ValueError(
        "input must be all strings, all token ids, or all lists of token ids (not a mix, "
        "no floats, booleans, nulls or objects)"
    )


_TOKEN_IDS = {"type": "array", "items": {"type": "integer", "minimum": 0}, "minItems": 1}
INPUT_SCHEMA: dict[str, Any] = {
    "description": "Text to embed: a string, a list of strings, a list of token ids of this "
    f"model's tokenizer, or a list of those (at most {MAX_INPUTS_PER_REQUEST} inputs).",
    "anyOf": [
        {"type": "string", "minLength": 1},
        {
            "type": "array",
            "items": {"type": "string", "minLength": 1},
            "minItems": 1,
            "maxItems": MAX_INPUTS_PER_REQUEST,
        },
        _TOKEN_IDS,
        {"type": "array", "items": _TOKEN_IDS, "minItems": 1, "maxItems": MAX_INPUTS_PER_REQUEST},
    ],
}
"""`input` in /openapi.json (it is parsed by parse_input, not by a pydantic type)."""


class EmbeddingsRequest(BaseModel):
    """POST /v1/embeddings (https://platform.openai.com/docs/api-reference/embeddings/create)."""

    model_config = ConfigDict(extra="ignore", protected_namespaces=())

    input: Annotated[Inputs, WithJsonSchema(INPUT_SCHEMA)]
    # Optional here (OpenAI requires it): a client of a one-model server may leave it out.
    model: str | None = None
    encoding_format: Literal["float", "base64"] | None = "float"
    dimensions: StrictInt | None = Field(None, ge=1)
    user: str | None = None  # accepted for compatibility, ignored
    # An extension (as TEI's and sentence-transformers' `prompt_name`): one of the model's prompts,
    # put before every input; unset: the server's default prompt, if any.
    prompt_name: str | None = None

    @field_validator("input", mode="plain")
    @classmethod
    def _parse_input(cls, value: Any) -> Inputs:
        return parse_input(value)


class EmbeddingRequest(BaseModel):
    """POST /v1/embedding: {"text": ...} -> {"embedding": [...]}."""

    model_config = ConfigDict(extra="ignore")

    text: NonEmptyText
    prompt_name: str | None = None


class SimilarityRequest(BaseModel):
    """POST /v1/similarity: cosine similarity of each candidate to source_text, in order."""

    model_config = ConfigDict(extra="ignore")

    source_text: NonEmptyText
    candidates: list[NonEmptyText] = Field(min_length=1, max_length=MAX_INPUTS_PER_REQUEST - 1)
    prompt_name: str | None = None
    """Applies to the source and every candidate alike."""


# --- Responses ---------------------------------------------------------------------------------
# Built as dicts and serialised with orjson by service.routes; these models describe them in
# /openapi.json (the schemathesis test checks real responses against them).
class Embedding(BaseModel):
    object: Literal["embedding"]
    index: int
    embedding: list[float] | str = Field(
        description="The vector: numbers, or with encoding_format=base64 the little-endian "
        "float32 bytes in base64."
    )


class Usage(BaseModel):
    prompt_tokens: int
    total_tokens: int
    truncated_inputs: int = Field(description="Inputs cut to the model's maximum length.")


class EmbeddingsResponse(BaseModel):
    object: Literal["list"]
    data: list[Embedding]
    model: str
    usage: Usage


class EmbeddingResponse(BaseModel):
    embedding: list[float]
    dimension: int


class SimilarityResponse(BaseModel):
    similarities: list[float] = Field(description="Cosine similarity per candidate, in order.")


class Status(BaseModel):
    status: str


class Limits(BaseModel):
    max_inputs: int
    max_request_tokens: int
    max_request_bytes: int
    max_batch_tokens: int
    max_batch_size: int
    max_queue_items: int
    max_queue_seconds: float = Field(
        description="Admission's latency target: the longest a request is expected to wait for "
        "queued work before it is refused with 429."
    )
    seconds_per_token: float | None = Field(
        description="The device's measured seconds per token that admission estimates with "
        "(null before any forward pass)."
    )
    pass_cost_tokens: int = Field(
        description="A forward pass's fixed cost in padded tokens: where cutting a window into "
        "length buckets pays off."
    )
    truncate: bool


class ServerInfo(BaseModel):
    model_config = ConfigDict(protected_namespaces=())

    model: str
    model_id: str
    aliases: list[str]
    revision: str
    dimension: int
    max_tokens: int
    pooling: str
    device: str
    dtype: str
    dtype_requested: str
    model_dtype: str | None
    attention: str
    normalize: bool
    normalize_source: str
    matryoshka: bool
    matryoshka_dimensions: list[int] | None
    matryoshka_source: str
    """config.json (the model's declaration) or setting (EMBED_MATRYOSHKA_DIMENSIONS)."""
    prompts: dict[str, str]
    default_prompt_name: str | None
    default_prompt: str | None
    phase: str
    limits: Limits
    version: str


class ModelObject(BaseModel):
    id: str
    object: Literal["model"]
    created: int
    owned_by: str


class ModelList(BaseModel):
    object: Literal["list"]
    data: list[ModelObject]


class ErrorDetail(BaseModel):
    message: str
    type: str
    param: str | None
    code: str | None


class ErrorEnvelope(BaseModel):
    """Every error: OpenAI's envelope."""

    error: ErrorDetail
