"""Request bodies: the OpenAI embeddings contract and the two simple routes of GTE deployments.

Responses are built as dicts and serialised with orjson in service.routes (vectors are numpy rows:
orjson writes them directly, with no per-float Python objects).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated, Any, Literal

from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    JsonValue,
    StrictBool,
    StrictInt,
    StringConstraints,
    WithJsonSchema,
    field_validator,
)
from pydantic.config import JsonDict

from service.model_types import Side
from service.settings import MAX_INPUTS_PER_REQUEST, TokenIds

Text = Annotated[str, StringConstraints(strict=True)]
"""A text to embed; "" is one too (the model's special tokens alone, as sentence-transformers and
vLLM embed it), so a client's empty document does not fail its whole batch."""


def json_integer(value: object) -> object:
    """JSON Schema's integer: any number with no fractional part (`8.0` too, which JSON encoders
    write for whole floats), never a boolean or a string."""
    if isinstance(value, float) and value.is_integer():
        return int(value)
    return value


Integer = Annotated[StrictInt, BeforeValidator(json_integer)]


@dataclass(frozen=True)
class Inputs:
    """A request's inputs in one of two forms: texts, or token ids of this model's tokenizer."""

    texts: list[str] | None = None
    token_ids: list[list[int]] | None = None
    """Token ids: of OpenAI's tokenizer or of this model's, as the server's setting says."""

    def __len__(self) -> int:
        return len(self.texts if self.texts is not None else self.token_ids or [])


def _is_int(value: object) -> bool:
    if isinstance(value, float):
        return value.is_integer()
    return isinstance(value, int) and not isinstance(value, bool)


def _ints(values: list[Any]) -> list[int]:
    """Token ids as ints (a whole float such as 8.0 is the integer 8 in JSON)."""
    if all(type(value) is int for value in values):
        return values
    return [int(value) for value in values]


def parse_input(value: Any) -> Inputs:
    """OpenAI's `input`: a string, a list of strings, a list of token ids, or a list of those.
    An empty string is a text (OpenAI refuses it; sentence-transformers and vLLM embed it, and
    LangChain sends one for an empty document); an empty list of token ids is not."""
    if isinstance(value, str):
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
        return Inputs(token_ids=[_ints(value)])
    if len(value) > MAX_INPUTS_PER_REQUEST:
        raise ValueError(
            f"input has {len(value)} items; at most {MAX_INPUTS_PER_REQUEST} are allowed"
        )
    if all(isinstance(item, str) for item in value):
        return Inputs(texts=value)
    if all(isinstance(item, list) for item in value):
        for index, item in enumerate(value):
            if not item:
                raise ValueError(f"input[{index}] must not be an empty list of token ids")
            if not all(_is_int(token) for token in item):
                raise ValueError(f"input[{index}] must be a list of integer token ids")
        return Inputs(token_ids=[_ints(item) for item in value])
    raise ValueError(
        "input must be all strings, all token ids, or all lists of token ids (not a mix, "
        "no floats, booleans, nulls or objects)"
    )


def input_schema(token_ids: bool = True, max_token_id: int | None = None) -> dict[str, Any]:
    """`input` in /openapi.json (parsed by parse_input, not by a pydantic type): the token-id
    forms only where the server takes token ids, up to the largest id it reads."""
    token_id: dict[str, Any] = {"type": "integer", "minimum": 0}
    if max_token_id is not None:
        token_id["maximum"] = max_token_id
    ids = {"type": "array", "items": token_id, "minItems": 1}
    forms: list[dict[str, Any]] = [
        {"type": "string"},
        {
            "type": "array",
            "items": {"type": "string"},
            "minItems": 1,
            "maxItems": MAX_INPUTS_PER_REQUEST,
        },
    ]
    if token_ids:
        forms += [
            ids,
            {"type": "array", "items": ids, "minItems": 1, "maxItems": MAX_INPUTS_PER_REQUEST},
        ]
    return {
        "description": "Text to embed: a string, a list of strings, a list of token ids, or a "
        f"list of those (at most {MAX_INPUTS_PER_REQUEST} inputs). Token ids are OpenAI's "
        "(cl100k_base) or this model's own, as /info's token_ids says. An empty string is "
        "embedded as the model's special tokens alone (and the prompt), as sentence-transformers "
        "and vLLM do (OpenAI refuses it); with add_special_tokens false it is a 400 "
        "empty_input.",
        "anyOf": forms,
    }


INPUT_SCHEMA = input_schema()
"""`input` before the model has loaded (service.openapi then describes what it takes)."""


_SIDE_NAMES: dict[str, JsonValue] = {"left": ["left", "Left"], "right": ["right", "Right"]}
# truncation_side (vLLM) and truncation_direction (TEI) name the same thing: both may be sent,
# not with different values; and truncate=false (refuse) with truncate_prompt_tokens (cut) asks
# for two things at once.
_SIDES_DISAGREE: list[JsonValue] = [
    {
        "required": ["truncation_side", "truncation_direction"],
        "properties": {
            "truncation_side": {"const": side},
            "truncation_direction": {"enum": _SIDE_NAMES[other]},
        },
    }
    for side, other in (("left", "right"), ("right", "left"))
]
_REFUSE_AND_CUT: JsonDict = {
    "required": ["truncate", "truncate_prompt_tokens"],
    "properties": {
        "truncate": {"const": False},
        "truncate_prompt_tokens": {"type": "integer"},
    },
}
_OPTIONS_AGREE: JsonDict = {"not": {"anyOf": [*_SIDES_DISAGREE, _REFUSE_AND_CUT]}}


class EmbeddingsRequest(BaseModel):
    """POST /v1/embeddings (https://platform.openai.com/docs/api-reference/embeddings/create),
    with the options of vLLM and TEI that change the vectors: honoured, never ignored."""

    model_config = ConfigDict(
        extra="ignore", protected_namespaces=(), json_schema_extra=_OPTIONS_AGREE
    )

    input: Annotated[Inputs, WithJsonSchema(INPUT_SCHEMA)]
    # Optional here (OpenAI requires it): a client of a one-model server may leave it out.
    model: str | None = None
    encoding_format: Literal["float", "base64"] | None = "float"
    dimensions: Integer | None = Field(None, ge=1)
    user: str | None = None  # accepted for compatibility, ignored
    # An extension (as TEI's and sentence-transformers' `prompt_name`): one of the model's prompts,
    # put before every input; unset: the server's default prompt, if any.
    prompt_name: str | None = None
    truncate_prompt_tokens: Integer | None = Field(
        None,
        ge=-1,
        description="vLLM's option: cut every input to at most this many tokens, special tokens "
        "and prompt included (-1: the model's maximum). The cut is reported like any truncation "
        "and happens even on a server that refuses over-long inputs.",
    )
    truncation_side: Side | None = Field(
        None,
        description="vLLM's option: the end an over-long input is cut from; right (the default) "
        "keeps its first tokens, left its last. The special tokens and the prompt are kept.",
    )
    truncation_direction: Literal["left", "right", "Left", "Right"] | None = Field(
        None, description="TEI's name for truncation_side."
    )
    # TEI's /embed `normalize` (v1.9.3 router/src/http/types.rs, EmbedRequest; default true
    # there). vLLM had one too and now refuses it for `use_activation` (vllm/entrypoints/pooling/
    # base/protocol.py, reject_removed_pooling_parameters): here it means what TEI's means.
    normalize: StrictBool | None = Field(
        None,
        description="TEI's option: true returns unit-length vectors, false the pooled vectors "
        "as they are. Unset: as the model's own files say (/info's normalize).",
    )
    # TEI's /embed `truncate` (v1.9.3 router/src/http/types.rs, EmbedRequest: Option<bool>;
    # router/src/http/server.rs, embed: `req.truncate.unwrap_or(info.auto_truncate)`; an
    # over-long input without it is a validation error, core/src/tokenization.rs, encode_input).
    # TEI's own /v1/embeddings takes no `truncate`; clients that send it to an OpenAI route
    # (TEI's /embed clients pointed here) mean TEI's.
    truncate: StrictBool | None = Field(
        None,
        description="TEI's option: true cuts over-long inputs to the model's maximum even on a "
        "server that refuses them; false refuses them (400 context_length_exceeded) even on a "
        "server that cuts them. Unset: as the server does (/info's limits.truncate). May not "
        "be false with truncate_prompt_tokens.",
    )
    # vLLM's `add_special_tokens` for completion-style input (vllm/entrypoints/pooling/base/
    # protocol.py, CompletionRequestMixin, default True, at 020638a6): False tokenises text
    # without the tokenizer's special tokens. Token ids are sequences as they are (vLLM adds
    # nothing to them either), so it changes text only, including cl100k_base ids decoded to text.
    add_special_tokens: StrictBool | None = Field(
        None,
        description="vLLM's option: false embeds each text's tokens (after the prompt's) without "
        "the model's special tokens ([CLS], [SEP]), up to the model's maximum of its own; "
        "usage counts what was embedded. Unset or true: with them. Token ids of this model "
        "(EMBED_TOKEN_IDS=model) are taken as they are either way.",
    )

    @field_validator("input", mode="plain")
    @classmethod
    def _parse_input(cls, value: Any) -> Inputs:
        return parse_input(value)


class EmbeddingRequest(BaseModel):
    """POST /v1/embedding: {"text": ...} -> {"embedding": [...]}."""

    model_config = ConfigDict(extra="ignore")

    text: Text
    prompt_name: str | None = None


class SimilarityRequest(BaseModel):
    """POST /v1/similarity: cosine similarity of each candidate to source_text, in order."""

    model_config = ConfigDict(extra="ignore")

    source_text: Text
    candidates: list[Text] = Field(min_length=1, max_length=MAX_INPUTS_PER_REQUEST - 1)
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
    text_chars: int | None = Field(
        description="The most characters of one text the tokenizer reads: a longer text is cut "
        "where that provably changes none of the tokens the model sees (null: read whole)."
    )
    text_read_whole: str | None = Field(
        description="Why every text is tokenised whole: the model's tokenizer is outside the "
        "families the cut is proven for (null: texts are cut to text_chars)."
    )


class HttpLimitsInfo(BaseModel):
    """The HTTP layer's limits (service.httpserver), as configured and as in effect."""

    header_timeout_seconds: float
    body_timeout_seconds: float
    keep_alive_timeout_seconds: int
    max_header_bytes: int
    max_headers: int
    max_connections: int | None = Field(
        description="The API port's connection limit in effect: EMBED_MAX_CONNECTIONS, or fewer "
        "when the process may not open that many files (also inference_max_connections); null "
        "when the app is not served by this server's HTTP layer (an in-process test client)."
    )
    max_connections_configured: int
    metrics_port: int = Field(
        description="The port of /metrics and the probes for the kubelet (0: none; they are "
        "served on the API port too)."
    )


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
    token_ids: TokenIds = Field(
        description="What token-id input means (EMBED_TOKEN_IDS): OpenAI's tokenizer "
        "cl100k_base, this model's own ids as complete sequences, or refused."
    )
    token_ids_meaning: str
    phase: str
    limits: Limits
    http: HttpLimitsInfo
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
