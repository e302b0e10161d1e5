"""The framework floor: the least a server on our HTTP stack (uvicorn + httptools + uvloop +
Starlette) can do per embeddings request. It reads the body, parses the same JSON, and answers the
OpenAI response shape with one fixed base64 vector, with no model, no batching, no logging and no
metrics. What our server spends per request beyond it is its own overhead (bench/overhead.py).

    python -m bench.floor_server --host 127.0.0.1 --port 8002 [--dimension 32]
"""

from __future__ import annotations

import argparse
import base64

import numpy as np
import orjson
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route


def create_app(dimension: int) -> Starlette:
    vector = np.ones(dimension, dtype="<f4") / np.sqrt(dimension, dtype=np.float32)
    encoded = base64.b64encode(vector.tobytes()).decode()

    async def embeddings(request: Request) -> Response:
        body = orjson.loads(await request.body())
        texts = body["input"] if isinstance(body["input"], list) else [body["input"]]
        content = {
            "object": "list",
            "data": [
                {"object": "embedding", "index": i, "embedding": encoded} for i in range(len(texts))
            ],
            "model": body.get("model") or "floor",
            "usage": {"prompt_tokens": 0, "total_tokens": 0},
        }
        return Response(orjson.dumps(content), media_type="application/json")

    async def ready(_: Request) -> Response:
        return Response(b'{"status":"ready"}', media_type="application/json")

    return Starlette(
        routes=[
            Route("/v1/embeddings", embeddings, methods=["POST"]),
            Route("/ready", ready, methods=["GET"]),
        ]
    )


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.floor_server", description=__doc__)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8002)
    parser.add_argument("--dimension", type=int, default=32, help="length of the fixed vector")
    args = parser.parse_args()

    import uvicorn

    uvicorn.run(
        create_app(args.dimension),
        host=args.host,
        port=args.port,
        loop="uvloop",
        http="httptools",
        log_level="warning",
        access_log=False,
    )


if __name__ == "__main__":
    main()
