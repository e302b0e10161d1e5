"""A minimal keep-alive HTTP/1.1 client on asyncio streams, for the load generator.

Why not httpx: client and server share the same two cores here, so every microsecond the client
spends per request is taken from the server under test. httpx costs several hundred microseconds of
Python per request; this client writes pre-encoded request bytes and reads only the status line,
headers and body, which is all a closed-loop load generator needs. It speaks just enough HTTP/1.1
for our servers (uvicorn): Content-Length and chunked bodies, `Connection: close`. Anything it
cannot parse raises `HttpError`."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from typing import Final

_MAX_HEADER_BYTES: Final = 64 * 1024


class HttpError(Exception):
    """The peer sent something this client cannot read as an HTTP/1.1 response, or hung up."""


@dataclass(frozen=True)
class Response:
    status: int
    headers: dict[str, str]
    body: bytes


def build_request(method: str, host: str, port: int, path: str, body: bytes | None = None) -> bytes:
    """The full request bytes, built once and sent many times."""
    lines = [f"{method} {path} HTTP/1.1", f"Host: {host}:{port}", "Accept: */*"]
    if body is not None:
        lines += ["Content-Type: application/json", f"Content-Length: {len(body)}"]
    head = ("\r\n".join(lines) + "\r\n\r\n").encode("ascii")
    return head + (body or b"")


class Connection:
    """One persistent connection; reconnects lazily after the peer closes it or an error."""

    def __init__(self, host: str, port: int) -> None:
        self.host = host
        self.port = port
        self._reader: asyncio.StreamReader | None = None
        self._writer: asyncio.StreamWriter | None = None

    async def send(self, request: bytes) -> Response:
        """Send pre-built request bytes and read the response; any error closes the connection."""
        try:
            if self._writer is None:
                self._reader, self._writer = await asyncio.open_connection(self.host, self.port)
            assert self._reader is not None
            self._writer.write(request)
            response = await _read_response(self._reader)
        except BaseException:
            # A half-read response leaves the stream unusable; cancellation (timeouts) included.
            self.close()
            raise
        if response.headers.get("connection", "").lower() == "close":
            self.close()
        return response

    def close(self) -> None:
        if self._writer is not None:
            self._writer.close()
        self._reader = self._writer = None


async def _read_response(reader: asyncio.StreamReader) -> Response:
    try:
        head = await reader.readuntil(b"\r\n\r\n")
    except asyncio.IncompleteReadError as exc:
        raise HttpError("connection closed before a response") from exc
    except asyncio.LimitOverrunError as exc:
        raise HttpError("response headers too long") from exc
    if len(head) > _MAX_HEADER_BYTES:
        raise HttpError("response headers too long")
    status_line, *header_lines = head.decode("latin-1").split("\r\n")
    parts = status_line.split(" ", 2)
    if len(parts) < 2 or not parts[0].startswith("HTTP/1.") or not parts[1].isdigit():
        raise HttpError(f"bad status line {status_line!r}")
    headers: dict[str, str] = {}
    for line in header_lines:
        if line:
            name, _, value = line.partition(":")
            headers[name.strip().lower()] = value.strip()
    try:
        body = await _read_body(reader, headers)
    except asyncio.IncompleteReadError as exc:
        raise HttpError("connection closed in the middle of a body") from exc
    return Response(int(parts[1]), headers, body)


async def _read_body(reader: asyncio.StreamReader, headers: dict[str, str]) -> bytes:
    if "chunked" in headers.get("transfer-encoding", "").lower():
        chunks: list[bytes] = []
        while True:
            size_line = await reader.readuntil(b"\r\n")
            size = int(size_line.split(b";", 1)[0].strip() or b"0", 16)
            if size == 0:
                await reader.readuntil(b"\r\n")  # the blank line after the last chunk (no trailers)
                return b"".join(chunks)
            chunks.append(await reader.readexactly(size))
            await reader.readexactly(2)
    length = headers.get("content-length")
    if length is None:
        raise HttpError("response has neither Content-Length nor chunked encoding")
    return await reader.readexactly(int(length))
