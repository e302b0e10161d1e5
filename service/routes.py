"""HTTP routes only: parse, call the runtime, serialise; the endpoint table. No torch here.

Handlers take a service.front.Call (the raw body, the runtime) and return a Reply of bytes already
serialised with orjson: no per-request Request or Response objects, no dependency solving.
"""

from __future__ import annotations

import asyncio
import base64
import gzip
from collections.abc import Awaitable
from typing import Any, TypeVar

import numpy as np
import orjson
from prometheus_client.exposition import gzip_accepted
from pydantic import BaseModel, ValidationError

from service import __version__, contract
from service.errors import (
    ClientDisconnectedError,
    InvalidRequestError,
    ModelNotFoundError,
    NotReadyError,
    describe_validation,
)
from service.front import Call, Endpoint, Reply
from service.metrics import CONTENT_TYPE
from service.model_types import MODEL_DEFAULT, ModelInfo, Truncation
from service.openapi import Accepted
from service.runtime import TOKEN_ID_MEANINGS, Embedded, Runtime, unit_rows
from service.schemas import (
    EmbeddingRequest,
    EmbeddingResponse,
    EmbeddingsRequest,
    EmbeddingsResponse,
    Inputs,
    ModelList,
    ModelObject,
    ServerInfo,
    SimilarityRequest,
    SimilarityResponse,
    Status,
    input_schema,
)
from service.settings import MAX_INPUTS_PER_REQUEST

T = TypeVar("T")
B = TypeVar("B", bound=BaseModel)
TRUNCATED_HEADER = "X-Truncated-Inputs"
_TRUNCATED = TRUNCATED_HEADER.lower().encode()
_WATCH_AFTER_S = 0.05


def json_reply(content: Any, headers: tuple[tuple[bytes, bytes], ...] = ()) -> Reply:
    return Reply(orjson.dumps(content, option=orjson.OPT_SERIALIZE_NUMPY), headers=headers)


def truncated_header(result: Embedded) -> tuple[tuple[bytes, bytes], ...]:
    return ((_TRUNCATED, str(result.truncated).encode()),)


async def until_disconnect(call: Call, work: Awaitable[T]) -> T:
    """Await `work`, cancelling it if the client disconnects first, so the batcher drops its inputs
    instead of spending the device on an answer nobody reads. The watcher (a task reading the
    connection) starts only once the work has taken _WATCH_AFTER_S: most requests are answered
    sooner, and a timer costs a fraction of a task (bench/NOTES.md); a client that goes away is
    still noticed within that delay."""
    handler = asyncio.current_task()
    assert handler is not None
    loop = asyncio.get_running_loop()
    disconnected = False
    watcher: asyncio.Task[None] | None = None

    async def watch() -> None:
        nonlocal disconnected
        while (await call.receive())["type"] != "http.disconnect":
            pass
        disconnected = True
        handler.cancel()

    def start_watching() -> None:
        nonlocal watcher
        watcher = loop.create_task(watch())

    timer = loop.call_later(_WATCH_AFTER_S, start_watching)
    try:
        return await work
    except asyncio.CancelledError:
        if not disconnected:
            raise
        handler.uncancel()  # the cancellation was ours: nobody is left to answer
        raise ClientDisconnectedError("the client closed the connection") from None
    finally:
        timer.cancel()
        if watcher is not None:
            watcher.cancel()


async def embed_inputs(
    call: Call,
    inputs: Inputs,
    prompt_name: str | None,
    cut: Truncation = MODEL_DEFAULT,
    normalize: bool | None = None,
) -> Embedded:
    return await until_disconnect(call, call.runtime.embed(inputs, prompt_name, cut, normalize))


def accepted_models(runtime: Runtime) -> list[str]:
    """The ids a request may name: the served name first, then the model id and the aliases."""
    encoder, _ = runtime.serving()
    served = runtime.settings.served_model_name or encoder.info.model_id
    names = [served, encoder.info.model_id, *runtime.settings.model_aliases]
    return list(dict.fromkeys(names))


def check_model(runtime: Runtime, requested: str | None) -> str:
    accepted = accepted_models(runtime)
    if requested is not None and requested not in accepted:
        raise ModelNotFoundError(
            f"the model {requested!r} does not exist on this server; it serves {accepted[0]!r}",
            param="model",
        )
    return accepted[0]


def check_dimensions(dimensions: int | None, model: ModelInfo) -> None:
    """OpenAI `dimensions` where truncating is what the model was trained for (Matryoshka), as
    vLLM does; the full size is always accepted (it changes nothing)."""
    full = model.dimension
    if dimensions is None or dimensions == full:
        return
    if dimensions > full:
        raise InvalidRequestError(
            f"dimensions must be between 1 and {full} for this model; got {dimensions}",
            param="dimensions",
        )
    if not model.matryoshka:
        raise InvalidRequestError(
            f"this model was not trained for shortened embeddings (Matryoshka representation "
            f"learning): its first {dimensions} components are not a useful embedding, so it "
            f"only returns all {full}; leave out dimensions (the operator can allow it with "
            f"{contract.ENV_PREFIX}MATRYOSHKA_DIMENSIONS)",
            param="dimensions",
        )
    allowed = model.matryoshka_dimensions
    if allowed is not None and dimensions not in allowed:
        choices = ", ".join(map(str, sorted({*allowed, full})))
        raise InvalidRequestError(
            f"this model was trained for dimensions {choices}; got {dimensions}",
            param="dimensions",
        )


def shorten(vectors: np.ndarray, dimensions: int | None, normalize: bool) -> np.ndarray:
    """OpenAI `dimensions`: keep the first N components, re-normalised when the vectors are
    (sentence-transformers' truncate_dim does the same)."""
    if dimensions is None or dimensions == vectors.shape[1]:
        return vectors
    head = vectors[:, :dimensions]
    return unit_rows(head) if normalize else np.ascontiguousarray(head)


def request_truncation(body: EmbeddingsRequest, model: ModelInfo, truncates: bool) -> Truncation:
    """How the request wants its inputs cut and framed: vLLM's `truncate_prompt_tokens`,
    `truncation_side` and `add_special_tokens` (vllm-project/vllm: vllm/entrypoints/pooling/base/
    protocol.py, PoolingBasicRequestMixin and CompletionRequestMixin, at 020638a6;
    vllm/renderers/params.py, TokenizeParams: -1 maps to the model's maximum, a limit over it is
    refused, the limit counts special tokens as HF's max_length does, at 1aa021e8), TEI's
    `truncation_direction` and `truncate` (huggingface/text-embeddings-inference v1.9.3,
    router/src/http/types.rs, TruncationDirection: left or right, either case; EmbedRequest's
    truncate). `truncates`: what the server does with over-long inputs by default; an option
    that asks for just that is no option (the request is then tokenised with the others)."""
    side = body.truncation_side
    direction = body.truncation_direction.lower() if body.truncation_direction else None
    if side is not None and direction is not None and side != direction:
        raise InvalidRequestError(
            f"truncation_side {side!r} and truncation_direction {direction!r} disagree; they "
            "are two names (vLLM's and TEI's) for the same choice: send one",
            param="truncation_side",
        )
    limit = body.truncate_prompt_tokens
    if limit is not None and body.truncate is False:
        raise InvalidRequestError(
            "truncate is false (refuse over-long inputs) but truncate_prompt_tokens asks for "
            "each input to be cut: send one of them",
            param="truncate",
        )
    if limit == -1:
        limit = model.max_tokens
    elif limit is not None and not model.special_tokens < limit <= model.max_tokens:
        # vLLM refuses a limit over the model's maximum as well (TokenizeParams.__post_init__).
        raise InvalidRequestError(
            f"truncate_prompt_tokens must be -1 (the model's maximum) or between "
            f"{model.special_tokens + 1} and {model.max_tokens} (this model's maximum; its "
            f"special tokens take {model.special_tokens}); got {limit}",
            param="truncate_prompt_tokens",
        )
    chosen = side or direction or "right"
    return Truncation(
        limit,
        "left" if chosen == "left" else "right",
        truncate=None if body.truncate == truncates else body.truncate,
        special_tokens=body.add_special_tokens is not False,
    )


def accepted_values(runtime: Runtime) -> Accepted:
    """What the loaded model accepts, for /openapi.json: exactly what the checks of this module
    and the runtime serve (model names, prompt names, Matryoshka sizes, truncation limits, token
    ids of the tokenizer that reads them); they refuse the rest with a 4xx."""
    encoder, _ = runtime.serving()
    model = encoder.info
    names = accepted_models(runtime)
    prompts = {"type": "string", "enum": sorted(model.prompts)}
    prompt = _or_null(prompts) if model.prompts else {"type": "null"}
    limits = {"type": "integer", "minimum": model.special_tokens + 1, "maximum": model.max_tokens}
    embeddings = {
        "model": _or_null({"type": "string", "enum": names}),
        "prompt_name": prompt,
        "dimensions": _or_null(_dimensions(model)),
        "truncate_prompt_tokens": _or_null({"anyOf": [{"const": -1}, limits]}),
        "input": input_schema(**_token_ids(runtime)),
    }
    return Accepted(
        properties={
            EmbeddingsRequest.__name__: embeddings,
            EmbeddingRequest.__name__: {"prompt_name": prompt},
            SimilarityRequest.__name__: {"prompt_name": prompt},
        },
        path_params={"model": {"type": "string", "enum": names}},
    )


def _or_null(schema: dict[str, Any]) -> dict[str, Any]:
    return {"anyOf": [schema, {"type": "null"}]}


def _dimensions(model: ModelInfo) -> dict[str, Any]:
    """The `dimensions` check_dimensions serves."""
    if not model.matryoshka:
        return {"type": "integer", "enum": [model.dimension]}
    if model.matryoshka_dimensions is None:
        return {"type": "integer", "minimum": 1, "maximum": model.dimension}
    return {"type": "integer", "enum": sorted({*model.matryoshka_dimensions, model.dimension})}


def _token_ids(runtime: Runtime) -> dict[str, Any]:
    """input_schema's arguments: whether token ids are taken, and the largest id read."""
    mode = runtime.settings.token_ids
    if mode == "reject":
        return {"token_ids": False}
    if mode == "model":
        encoder, _ = runtime.serving()
        return {"max_token_id": encoder.info.vocab_size - 1}
    assert runtime.openai_tokens is not None
    return {"max_token_id": runtime.openai_tokens.regular_tokens - 1}


def parse_body(call: Call, model: type[B]) -> B:
    """Validate the raw body with pydantic's own JSON parser, whatever the Content-Type (curl -d
    sends form encoding); a 400 naming the field, like the framework's validation errors."""
    try:
        return model.model_validate_json(call.body)
    except ValidationError as exc:
        raise describe_validation(exc.errors(include_url=False)) from None


async def create_embeddings(call: Call) -> Reply:
    body = parse_body(call, EmbeddingsRequest)
    runtime = call.runtime
    served = check_model(runtime, body.model)
    encoder, _ = runtime.serving()
    model = encoder.info
    check_dimensions(body.dimensions, model)  # before spending compute
    cut = request_truncation(body, model, runtime.settings.truncate)
    normalize = model.normalize if body.normalize is None else body.normalize
    result = await embed_inputs(call, body.input, body.prompt_name, cut, normalize)
    vectors = shorten(result.vectors, body.dimensions, normalize)
    if body.encoding_format == "base64":
        # The openai SDK's default: little-endian float32 bytes, base64 (4 bytes per float,
        # ~3x smaller than JSON numbers and no float formatting).
        little = vectors.astype("<f4", copy=False)
        data: list[dict[str, Any]] = [
            {"object": "embedding", "index": i, "embedding": base64.b64encode(row).decode()}
            for i, row in enumerate(little)
        ]
    else:
        data = [
            {"object": "embedding", "index": i, "embedding": row} for i, row in enumerate(vectors)
        ]
    content = {
        "object": "list",
        "data": data,
        "model": served,
        "usage": {
            "prompt_tokens": result.tokens,
            "total_tokens": result.tokens,
            # An extension field (the openai SDK keeps unknown fields): inputs cut to max_tokens.
            "truncated_inputs": result.truncated,
        },
    }
    return json_reply(content, truncated_header(result))


async def create_embedding(call: Call) -> Reply:
    body = parse_body(call, EmbeddingRequest)
    result = await embed_inputs(call, Inputs(texts=[body.text]), body.prompt_name)
    content = {"embedding": result.vectors[0], "dimension": int(result.vectors.shape[1])}
    return json_reply(content, truncated_header(result))


async def similarity(call: Call) -> Reply:
    body = parse_body(call, SimilarityRequest)
    texts = Inputs(texts=[body.source_text, *body.candidates])
    # Unit rows whatever the model does: cosine similarity is then the dot product.
    result = await embed_inputs(call, texts, body.prompt_name, normalize=True)
    vectors = result.vectors
    scores = vectors[1:] @ vectors[0]
    return json_reply({"similarities": scores.astype(np.float64)}, truncated_header(result))


_OK = Reply(b'{"status":"ok"}')
_READY = Reply(b'{"status":"ready"}')


async def health(call: Call) -> Reply:
    """Liveness: 503 once the device failed (a poisoned CUDA context never recovers in-process),
    so the kubelet restarts the container."""
    error = call.runtime.device_error
    if error is not None:
        raise error
    return _OK


async def list_models(call: Call) -> Reply:
    runtime = call.runtime
    data = [_model_object(runtime, name) for name in accepted_models(runtime)]
    return json_reply({"object": "list", "data": data})


MODEL_PATH = contract.MODELS_PATH + "/{model}"
METRICS_PORT_PATHS = (contract.HEALTH_PATH, contract.READY_PATH, contract.METRICS_PATH)
"""What the metrics listener (EMBED_METRICS_PORT) serves: the kubelet's probes and Prometheus."""


async def retrieve_model(call: Call) -> Reply:
    runtime = call.runtime
    # Hub ids contain a slash (sentence-transformers/all-MiniLM-L6-v2): the rest of the path.
    name = call.scope["path_params"]["model"]
    check_model(runtime, name)  # 404 model_not_found for any other name
    return json_reply(_model_object(runtime, name))


def _model_object(runtime: Runtime, name: str) -> dict[str, Any]:
    """OpenAI's Model object (https://platform.openai.com/docs/api-reference/models/object)."""
    return {"id": name, "object": "model", "created": runtime.created, "owned_by": "gpu-inference"}


async def ready(call: Call) -> Reply:
    runtime = call.runtime
    if runtime.ready:
        return _READY
    raise NotReadyError(f"not ready: {runtime.phase.value}")


async def info(call: Call) -> Reply:
    runtime = call.runtime
    encoder, batcher = runtime.serving()
    s = runtime.settings
    model = encoder.info
    return json_reply(
        {
            "model": s.served_model_name or model.model_id,
            "model_id": model.model_id,
            "aliases": s.model_aliases,
            "revision": model.revision,
            "dimension": model.dimension,
            "max_tokens": model.max_tokens,
            "pooling": model.pooling,
            "device": model.device,
            "dtype": model.dtype,
            "dtype_requested": model.dtype_requested,
            "model_dtype": model.model_dtype,
            "attention": model.attention,
            "normalize": model.normalize,
            "normalize_source": model.normalize_source,
            "matryoshka": model.matryoshka,
            "matryoshka_dimensions": model.matryoshka_dimensions,
            "matryoshka_source": model.matryoshka_source,
            "prompts": model.prompts,
            "default_prompt_name": model.default_prompt_name,
            "default_prompt": model.default_prompt,
            "token_ids": s.token_ids,
            "token_ids_meaning": TOKEN_ID_MEANINGS[s.token_ids],
            "phase": runtime.phase.value,
            "limits": {
                "max_inputs": MAX_INPUTS_PER_REQUEST,
                "max_request_tokens": runtime.request_token_limit(),
                "max_request_bytes": s.max_request_bytes,
                "max_batch_tokens": s.max_batch_tokens,
                "max_batch_size": s.max_batch_size,
                "max_queue_items": s.max_queue_items,
                "max_queue_seconds": s.max_queue_seconds,
                "seconds_per_token": batcher.seconds_per_token,
                "pass_cost_tokens": runtime.pass_cost_tokens,
                "truncate": s.truncate,
                "text_chars": None if encoder.read_whole else encoder.text_chars,
                "text_read_whole": encoder.read_whole,
            },
            "http": {
                "header_timeout_seconds": s.header_timeout_seconds,
                "body_timeout_seconds": s.body_timeout_seconds,
                "keep_alive_timeout_seconds": s.keep_alive_timeout_seconds,
                "max_header_bytes": s.max_header_bytes,
                "max_headers": s.max_headers,
                "max_connections": runtime.max_connections,
                "max_connections_configured": s.max_connections,
                "metrics_port": s.metrics_port,
            },
            "version": __version__,
        }
    )


async def metrics(call: Call) -> Reply:
    """The exposition format the scraper asks for (Prometheus prefers OpenMetrics), gzipped when
    it accepts that: what prometheus_client's own server did (exposition.py, _bake_output), the
    one EMBED_METRICS_PORT ran before the probes joined it."""
    accept = accept_encoding = ""
    for name, value in call.scope["headers"]:
        if name == b"accept":
            accept = value.decode("latin-1")
        elif name == b"accept-encoding":
            accept_encoding = value.decode("latin-1")
    body, media_type = call.runtime.metrics.render_for(accept)
    if gzip_accepted(accept_encoding):
        return Reply(gzip.compress(body), media_type=media_type.encode(), headers=_GZIP)
    return Reply(body, media_type=media_type.encode())


_GZIP = ((b"content-encoding", b"gzip"),)


# Error statuses (the OpenAI envelope) by kind of route, besides 500.
# 408: the body did not arrive in time (service.httpserver); the HTTP layer's refusals of any
# route are added to every operation by service.openapi.
_EMBED_ERRORS = (400, 401, 404, 408, 413, 429, 503)
_TEXT_ERRORS = (400, 401, 408, 413, 429, 503)
_TRUNCATED_DOC = (TRUNCATED_HEADER,)


def unprefixed(path: str) -> str:
    """The OpenAI route without /v1: where a client whose base URL lacks /v1 calls it (TEI serves
    /embeddings beside /v1/embeddings, router/src/http/server.rs; infinity serves /embeddings and
    /models with no prefix by default, infinity_server.py)."""
    return path.removeprefix(contract.OPENAI_BASE_PATH)


ENDPOINTS: tuple[Endpoint, ...] = (
    Endpoint(
        "POST",
        contract.EMBEDDINGS_PATH,
        create_embeddings,
        "Create embeddings (OpenAI-compatible)",
        "Embeds one or many inputs, as the OpenAI embeddings API does; the openai SDK works as "
        "is. Inputs over the model's maximum length are truncated and counted in "
        "usage.truncated_inputs (or refused with 400 when truncation is off).",
        request=EmbeddingsRequest,
        response=EmbeddingsResponse,
        errors=_EMBED_ERRORS,
        tags=("embeddings",),
        headers=_TRUNCATED_DOC,
        aliases=(unprefixed(contract.EMBEDDINGS_PATH),),
        inference=True,
        needs_key=True,
    ),
    Endpoint(
        "GET",
        contract.MODELS_PATH,
        list_models,
        "List the served model (OpenAI-compatible): its name, model id and aliases",
        response=ModelList,
        errors=(401, 503),
        tags=("models",),
        aliases=(unprefixed(contract.MODELS_PATH),),
        needs_key=True,
    ),
    Endpoint(
        "GET",
        MODEL_PATH,
        retrieve_model,
        "Retrieve a model by any of its accepted names (OpenAI-compatible)",
        response=ModelObject,
        errors=(401, 404, 503),
        tags=("models",),
        path_params=("model",),
        aliases=(unprefixed(MODEL_PATH),),
        needs_key=True,
    ),
    Endpoint(
        "POST",
        contract.EMBEDDING_PATH,
        create_embedding,
        "Embed one text",
        request=EmbeddingRequest,
        response=EmbeddingResponse,
        errors=_TEXT_ERRORS,
        tags=("embeddings",),
        headers=_TRUNCATED_DOC,
        inference=True,
        needs_key=True,
    ),
    Endpoint(
        "POST",
        contract.SIMILARITY_PATH,
        similarity,
        "Cosine similarity of candidates to a source text",
        request=SimilarityRequest,
        response=SimilarityResponse,
        errors=_TEXT_ERRORS,
        tags=("embeddings",),
        headers=_TRUNCATED_DOC,
        inference=True,
        needs_key=True,
    ),
    Endpoint(
        "GET",
        contract.HEALTH_PATH,
        health,
        "Liveness: the process serves HTTP and its device works",
        response=Status,
        errors=(503,),
        tags=("probes",),
    ),
    Endpoint(
        "GET",
        contract.READY_PATH,
        ready,
        "Readiness: the model is loaded and the server is not draining",
        response=Status,
        errors=(503,),
        tags=("probes",),
    ),
    Endpoint(
        "GET",
        contract.INFO_PATH,
        info,
        "The served model, its limits and the server version",
        response=ServerInfo,
        errors=(503,),
        tags=("server",),
    ),
    Endpoint(
        "GET",
        contract.METRICS_PATH,
        metrics,
        "Prometheus metrics (text exposition format)",
        media_type=CONTENT_TYPE,
        tags=("server",),
    ),
)
