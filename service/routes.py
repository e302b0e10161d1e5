"""HTTP routes only: parse, call the runtime, serialise. No torch here."""

from __future__ import annotations

import asyncio
import base64
from collections.abc import Awaitable
from typing import Any, TypeVar

import numpy as np
import orjson
from fastapi.exceptions import RequestValidationError
from pydantic import BaseModel, ValidationError
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute, Route

from service import __version__, contract
from service.errors import (
    ClientDisconnectedError,
    InvalidRequestError,
    ModelNotFoundError,
    NotReadyError,
    error_response,
)
from service.metrics import CONTENT_TYPE
from service.model_types import ModelInfo
from service.runtime import Embedded, Runtime
from service.schemas import EmbeddingRequest, EmbeddingsRequest, Inputs, SimilarityRequest
from service.settings import MAX_INPUTS_PER_REQUEST

T = TypeVar("T")
B = TypeVar("B", bound=BaseModel)
TRUNCATED_HEADER = "X-Truncated-Inputs"
_JSON = "application/json"


def runtime_of(request: Request) -> Runtime:
    runtime: Runtime = request.app.state.runtime
    return runtime


def json_response(
    content: Any, status: int = 200, headers: dict[str, str] | None = None
) -> Response:
    body = orjson.dumps(content, option=orjson.OPT_SERIALIZE_NUMPY)
    return Response(body, status_code=status, media_type=_JSON, headers=headers)


async def until_disconnect(request: Request, work: Awaitable[T]) -> T:
    """Await `work`, cancelling it if the client disconnects first, so the batcher drops its inputs
    instead of spending the device on an answer nobody reads. One watcher task per request: the
    work itself runs in the request's own task."""
    handler = asyncio.current_task()
    assert handler is not None
    disconnected = False

    async def watch() -> None:
        nonlocal disconnected
        while (await request.receive())["type"] != "http.disconnect":
            pass
        disconnected = True
        handler.cancel()

    watcher = asyncio.get_running_loop().create_task(watch())
    try:
        return await work
    except asyncio.CancelledError:
        if not disconnected:
            raise
        handler.uncancel()  # the cancellation was ours: it becomes the error below
        raise ClientDisconnectedError("the client closed the connection") from None
    finally:
        watcher.cancel()


async def embed_inputs(request: Request, inputs: Inputs, prompt_name: str | None) -> Embedded:
    runtime = runtime_of(request)
    tokenized = await runtime.tokenize(inputs, runtime.prompt(prompt_name))
    limit = runtime.settings.max_request_tokens
    if tokenized.token_count > limit:
        raise InvalidRequestError(
            f"the request has {tokenized.token_count} tokens, over this server's limit of {limit} "
            "per request: split it into smaller requests",
            param="input",
        )
    return await until_disconnect(request, runtime.embed(tokenized))


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
    """OpenAI `dimensions`: keep the first N components, re-normalised when the model's vectors
    are (sentence-transformers' truncate_dim does the same)."""
    if dimensions is None or dimensions == vectors.shape[1]:
        return vectors
    head = vectors[:, :dimensions]
    if not normalize:
        return np.ascontiguousarray(head)
    norms = np.linalg.norm(head, axis=1, keepdims=True)
    return np.ascontiguousarray(head / np.maximum(norms, 1e-12), dtype=np.float32)


async def parse_body(request: Request, model: type[B]) -> B:
    """Validate the raw body with pydantic's own JSON parser, whatever the Content-Type (curl -d
    sends form encoding); errors become the same envelope as FastAPI's validation errors."""
    try:
        return model.model_validate_json(await request.body())
    except ValidationError as exc:
        raise RequestValidationError(exc.errors(include_url=False)) from None


async def create_embeddings(request: Request) -> Response:
    body = await parse_body(request, EmbeddingsRequest)
    runtime = runtime_of(request)
    served = check_model(runtime, body.model)
    encoder, _ = runtime.serving()
    check_dimensions(body.dimensions, encoder.info)  # before spending compute
    result = await embed_inputs(request, body.input, body.prompt_name)
    vectors = shorten(result.vectors, body.dimensions, encoder.info.normalize)
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
    return json_response(content, headers={TRUNCATED_HEADER: str(result.truncated)})


async def create_embedding(request: Request) -> Response:
    body = await parse_body(request, EmbeddingRequest)
    result = await embed_inputs(request, Inputs(texts=[body.text]), body.prompt_name)
    content = {"embedding": result.vectors[0], "dimension": int(result.vectors.shape[1])}
    return json_response(content, headers={TRUNCATED_HEADER: str(result.truncated)})


async def similarity(request: Request) -> Response:
    body = await parse_body(request, SimilarityRequest)
    texts = Inputs(texts=[body.source_text, *body.candidates])
    result = await embed_inputs(request, texts, body.prompt_name)
    vectors = result.vectors
    encoder, _ = runtime_of(request).serving()
    if not encoder.info.normalize:  # normalised rows: cosine similarity is the dot product
        vectors = vectors / np.maximum(np.linalg.norm(vectors, axis=1, keepdims=True), 1e-12)
    scores = vectors[1:] @ vectors[0]
    return json_response(
        {"similarities": scores.astype(np.float64)},
        headers={TRUNCATED_HEADER: str(result.truncated)},
    )


async def health(request: Request) -> Response:
    """Liveness: 503 once the device failed (a poisoned CUDA context never recovers in-process),
    so the kubelet restarts the container."""
    error = runtime_of(request).device_error
    if error is not None:
        return error_response(error)
    return json_response({"status": "ok"})


async def list_models(request: Request) -> Response:
    runtime = runtime_of(request)
    data = [_model_object(runtime, name) for name in accepted_models(runtime)]
    return json_response({"object": "list", "data": data})


async def retrieve_model(request: Request) -> Response:
    runtime = runtime_of(request)
    name = request.path_params["model"]
    check_model(runtime, name)  # 404 model_not_found for any other name
    return json_response(_model_object(runtime, name))


def _model_object(runtime: Runtime, name: str) -> dict[str, Any]:
    """OpenAI's Model object (https://platform.openai.com/docs/api-reference/models/object)."""
    return {"id": name, "object": "model", "created": runtime.created, "owned_by": "gpu-inference"}


async def ready(request: Request) -> Response:
    runtime = runtime_of(request)
    if runtime.ready:
        return json_response({"status": "ready"})
    return error_response(NotReadyError(f"not ready: {runtime.phase.value}"))


async def info(request: Request) -> Response:
    runtime = runtime_of(request)
    encoder, _ = runtime.serving()
    s = runtime.settings
    model = encoder.info
    return json_response(
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
            "prompts": model.prompts,
            "default_prompt_name": model.default_prompt_name,
            "default_prompt": model.default_prompt,
            "phase": runtime.phase.value,
            "limits": {
                "max_inputs": MAX_INPUTS_PER_REQUEST,
                "max_request_tokens": s.max_request_tokens,
                "max_request_bytes": s.max_request_bytes,
                "max_batch_tokens": s.max_batch_tokens,
                "max_batch_size": s.max_batch_size,
                "max_queue_items": s.max_queue_items,
                "truncate": s.truncate,
            },
            "version": __version__,
        }
    )


async def metrics(request: Request) -> Response:
    return Response(runtime_of(request).metrics.render(), media_type=CONTENT_TYPE)


# Plain Starlette routes, not FastAPI's APIRoute: the handlers read and validate the raw body
# themselves (parse_body), so FastAPI's per-request dependency solving and parameter parsing
# would be pure overhead, measured at a fifth of the HTTP path's CPU (bench/NOTES.md).
ROUTES: list[BaseRoute] = [
    Route(contract.EMBEDDINGS_PATH, create_embeddings, methods=["POST"]),
    Route(contract.MODELS_PATH, list_models, methods=["GET"]),
    # Hub ids contain a slash (sentence-transformers/all-MiniLM-L6-v2): a path parameter.
    Route(contract.MODELS_PATH + "/{model:path}", retrieve_model, methods=["GET"]),
    Route(contract.EMBEDDING_PATH, create_embedding, methods=["POST"]),
    Route(contract.SIMILARITY_PATH, similarity, methods=["POST"]),
    Route(contract.HEALTH_PATH, health, methods=["GET"]),
    Route(contract.READY_PATH, ready, methods=["GET"]),
    Route(contract.INFO_PATH, info, methods=["GET"]),
    Route(contract.METRICS_PATH, metrics, methods=["GET"]),
]
