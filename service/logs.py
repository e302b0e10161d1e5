"""Logging with the request id on every line (set per request by service.front)."""

from __future__ import annotations

import asyncio
import contextvars
import logging
from typing import TextIO

request_id: contextvars.ContextVar[str] = contextvars.ContextVar("request_id", default="-")

FORMAT = "%(asctime)s %(levelname)s %(name)s [%(request_id)s] %(message)s"


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
    handler.setFormatter(logging.Formatter(FORMAT))
    handler.addFilter(RequestIdFilter())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    # uvicorn's own loggers propagate to ours, so their lines carry the request id field too.
    for name in ("uvicorn", "uvicorn.error"):
        logging.getLogger(name).handlers[:] = []
        logging.getLogger(name).propagate = True
