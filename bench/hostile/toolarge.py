"""413: a body over the limit is refused, and the server stops reading it.

A 100 MB body, by Content-Length and chunked, streamed until the server answers: its answer,
how much was sent before it, and whether it closed the connection (a server that keeps reading
takes the whole 100 MB, and the client only hears back at the end).
"""

from __future__ import annotations

from bench.hostile.common import (
    HostileOptions,
    ScenarioResult,
    running_server,
    status_of,
    stream_until_answered,
)
from service import contract

BODY_BYTES = 100_000_000
PIECE = b"x" * 65536


def run(options: HostileOptions) -> ScenarioResult:
    result = ScenarioResult("413 closing")
    request = f"POST {contract.EMBEDDINGS_PATH} HTTP/1.1\r\nHost: x\r\n".encode()
    with running_server(options, "toolarge") as server:
        for framing, head, piece, tail in (
            ("Content-Length", b"Content-Length: %d\r\n\r\n" % BODY_BYTES, PIECE, b""),
            (
                "chunked",
                b"Transfer-Encoding: chunked\r\n\r\n",
                b"%x\r\n" % len(PIECE) + PIECE + b"\r\n",
                b"0\r\n\r\n",
            ),
        ):
            exchange = stream_until_answered(server.port, request + head, piece, BODY_BYTES, tail)
            closes = b"connection: close" in exchange.answer.lower()
            result.add(
                f"100 MB body ({framing})",
                f"{status_of(exchange.answer)}, {exchange.ending()} (the client had written "
                f"{exchange.sent / 1e6:.1f} MB by then); "
                + ("Connection: close" if closes else "no Connection: close"),
            )
    return result
