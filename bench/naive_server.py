"""The naive baseline: the FastAPI embedding server of the common tutorial, one forward pass per
request.

It is what the benchmark compares our server with, so it is deliberately the usual design and no
worse: a sync route (FastAPI runs it in its thread pool, so requests overlap but are never batched
together), plain transformers with the same model, pooling and truncation as our server, L2
normalisation, and the OpenAI request/response shape so the load generator sends both servers
identical bytes. Its uvicorn access log is off while our server's is on by default: any doubt about
logging cost goes in the baseline's favour, and the comparison measures batching.

    python -m bench.naive_server --host 127.0.0.1 --port 8001 [--model PATH]
"""

from __future__ import annotations

import argparse
import base64
from typing import Any, Literal

import torch
import torch.nn.functional as F  # noqa: N812 (the conventional alias)
from fastapi import FastAPI
from pydantic import BaseModel, Field
from transformers import AutoModel, AutoTokenizer

from bench.modelfiles import Pooling, default_model_path, max_tokens, pooling_mode


class EmbeddingRequest(BaseModel):
    input: str | list[str] = Field(min_length=1)
    model: str | None = None
    encoding_format: Literal["float", "base64"] = "float"


def pool(hidden: torch.Tensor, attention_mask: torch.Tensor, mode: Pooling) -> torch.Tensor:
    if mode == "cls":
        return hidden[:, 0]
    mask = attention_mask.unsqueeze(-1).to(hidden.dtype)
    return (hidden * mask).sum(dim=1) / mask.sum(dim=1).clamp(min=1e-9)


def create_app(model_path: str) -> FastAPI:
    tokenizer = AutoTokenizer.from_pretrained(model_path)
    model = AutoModel.from_pretrained(model_path).eval()
    mode = pooling_mode(model_path)
    limit = max_tokens(model_path)
    app = FastAPI(title="naive embedding server (benchmark baseline)")

    @app.get("/health")
    def health() -> dict[str, str]:
        return {"status": "ok"}

    @app.get("/ready")
    def ready() -> dict[str, str]:
        # The model is loaded before the app exists, so serving means ready.
        return {"status": "ready"}

    @app.post("/v1/embeddings")
    def embeddings(request: EmbeddingRequest) -> dict[str, Any]:
        texts = [request.input] if isinstance(request.input, str) else request.input
        batch = tokenizer(
            texts, padding=True, truncation=True, max_length=limit, return_tensors="pt"
        )
        with torch.inference_mode():
            hidden = model(**batch).last_hidden_state
            vectors = F.normalize(pool(hidden, batch["attention_mask"], mode), dim=-1)
        tokens = int(batch["attention_mask"].sum())
        return {
            "object": "list",
            "data": [
                {
                    "object": "embedding",
                    "index": i,
                    "embedding": _encode(v, request.encoding_format),
                }
                for i, v in enumerate(vectors)
            ],
            "model": request.model or model_path,
            "usage": {"prompt_tokens": tokens, "total_tokens": tokens},
        }

    return app


def _encode(vector: torch.Tensor, encoding_format: str) -> list[float] | str:
    if encoding_format == "base64":
        return base64.b64encode(vector.numpy().astype("<f4").tobytes()).decode("ascii")
    return vector.tolist()


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.naive_server", description=__doc__)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8001)
    parser.add_argument("--model", default=None, help="model folder (default: bundled MiniLM)")
    args = parser.parse_args()

    import uvicorn

    app = create_app(args.model or default_model_path())
    uvicorn.run(app, host=args.host, port=args.port, log_level="warning", access_log=False)


if __name__ == "__main__":
    main()
