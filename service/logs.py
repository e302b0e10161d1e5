"""Logging with the request id on every line (set per request by service.front), one line per
record: control characters in a message are escaped, so text a client sent (a path, a model name
quoted in an error) can neither start a forged line nor send terminal escapes to whoever reads the
log."""

from __future__ import annotations

import asyncio
import contextvars
import logging
import random
import re
from collections.abc import Iterable
from typing import TextIO

request_id: contextvars.ContextVar[str] = contextvars.ContextVar("request_id", default="-")

FORMAT = "%(asctime)s %(levelname)s %(name)s [%(request_id)s] %(message)s"
_REQUEST_ID = re.compile(r"^[A-Za-z0-9._:-]{1,128}$")
# C0 and C1 controls, DEL, and the characters a terminal or log viewer takes as a line break or a
# change of text direction (U+2028/2029, the bidirectional embeddings, overrides and isolates).
_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f\u2028\u2029\u202a-\u202e\u2066-\u2069]")
_NAMED = {"\n": "\\n", "\r": "\\r", "\t": "\\t"}


def escape_controls(text: str) -> str:
    """`text` with each control character written as an escape (\\n, \\x1b, \\u2028)."""
    if not _CONTROL.search(text):
        return text
    return _CONTROL.sub(_escaped, text)


def _escaped(match: re.Match[str]) -> str:
    char = match.group()
    named = _NAMED.get(char)
    if named is not None:
        return named
    code = ord(char)
    return f"\\x{code:02x}" if code < 0x100 else f"\\u{code:04x}"


def request_id_of(headers: Iterable[tuple[bytes, bytes]]) -> str:
    """The client's X-Request-ID when it is a valid one, else a new id."""
    for name, value in headers:
        if name == b"x-request-id":
            candidate = value.decode("latin-1")
            if _REQUEST_ID.match(candidate):
                return candidate
    # 128 random bits like uuid4, without a urandom syscall per request (~40 us here).
    return f"{random.getrandbits(128):032x}"


class EscapingFormatter(logging.Formatter):
    """FORMAT with the message's control characters escaped (escape_controls). A traceback, which
    the formatter appends after the message, keeps its lines."""

    def formatMessage(self, record: logging.LogRecord) -> str:  # noqa: N802 (logging's name)
        record.message = escape_controls(record.message)
        return super().formatMessage(record)


class RequestIdFilter(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        record.request_id = request_id.get()
        return True


class LoopBatchingHandler(logging.StreamHandler[TextIO]):
    """A stream handler that writes the lines logged on the event loop once per loop iteration.

    With the access log on, every request logs a line; written and flushed one by one, each is a
    write(2) on the event loop, about a tenth of a request's CPU on the tiny-model bench
    (bench/NOTES.md). Here lines logged from the loop's thread are kept and written together by a
    callback at the end of the iteration; lines from other threads (or with no loop running)
    first write what is kept, then themselves, so the order holds. At most one iteration's lines
    are lost if the process is killed outright; logging.shutdown() flushes the rest."""

    def __init__(self, stream: TextIO | None = None) -> None:
        super().__init__(stream)
        self._kept: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:  # called with self.lock held
        try:
            line = self.format(record) + self.terminator
        except Exception:
            self.handleError(record)
            return
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:
            self._kept.append(line)
            self._write_kept()
            return
        if not self._kept:
            loop.call_soon(self.flush)
        self._kept.append(line)

    def flush(self) -> None:
        self.acquire()
        try:
            self._write_kept()
            super().flush()
        finally:
            self.release()

    def _write_kept(self) -> None:
        if self._kept:
            text = "".join(self._kept)
            self._kept.clear()
            try:
                self.stream.write(text)
                self.stream.flush()
            except Exception:  # logging must never raise into the server
                self.handleError(logging.makeLogRecord({"msg": text}))


def configure(level: str) -> None:
    # FORMAT uses none of these record fields; collecting them costs a frame walk and three lookups
    # per line, i.e. per request with the access log on (logging HOWTO, "Optimization").
    logging._srcfile = None
    logging.logThreads = False
    logging.logProcesses = False
    logging.logMultiprocessing = False
    handler = LoopBatchingHandler()
    handler.setFormatter(EscapingFormatter(FORMAT))
    handler.addFilter(RequestIdFilter())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    # uvicorn's own loggers propagate to ours, so their lines carry the request id field too.
    for name in ("uvicorn", "uvicorn.error"):
        logging.getLogger(name).handlers[:] = []
        logging.getLogger(name).propagate = True
