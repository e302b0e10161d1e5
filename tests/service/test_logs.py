"""The log handler: lines logged on the event loop are written together once per iteration, in
order with lines from other threads, and none is lost at shutdown; one record is one line, whatever
a client sent."""

from __future__ import annotations

import asyncio
import io
import logging
import sys
import threading
import time
from collections.abc import Callable

import httpx
from service_testkit import LiveServer

from service.encoder import Encoder
from service.logs import (
    FORMAT,
    EscapingFormatter,
    LoopBatchingHandler,
    RequestIdFilter,
    escape_controls,
)


class CountingStream(io.StringIO):
    def __init__(self) -> None:
        super().__init__()
        self.writes = 0

    def write(self, text: str) -> int:
        self.writes += 1
        return super().write(text)


def _logger(stream: CountingStream) -> tuple[logging.Logger, LoopBatchingHandler]:
    handler = LoopBatchingHandler(stream)
    handler.setFormatter(logging.Formatter("%(message)s"))
    logger = logging.getLogger(f"test-logs-{id(stream)}")
    logger.propagate = False
    logger.handlers[:] = [handler]
    logger.setLevel(logging.INFO)
    return logger, handler


def test_lines_of_one_loop_iteration_are_one_write_in_order() -> None:
    stream = CountingStream()
    logger, _ = _logger(stream)

    async def requests() -> None:
        for i in range(50):
            logger.info("request %d", i)
        assert stream.getvalue() == ""  # kept until the iteration ends
        await asyncio.sleep(0)
        await asyncio.sleep(0)

    asyncio.run(requests())
    assert stream.getvalue().splitlines() == [f"request {i}" for i in range(50)]
    assert stream.writes == 1


def test_a_line_from_another_thread_writes_what_the_loop_kept_first() -> None:
    stream = CountingStream()
    logger, _ = _logger(stream)

    async def mixed() -> None:
        logger.info("loop 1")
        worker = threading.Thread(target=logger.info, args=("thread",))
        worker.start()
        worker.join()
        logger.info("loop 2")
        await asyncio.sleep(0)

    asyncio.run(mixed())
    assert stream.getvalue().splitlines() == ["loop 1", "thread", "loop 2"]


def test_flush_writes_what_is_kept_when_the_loop_never_ran_again() -> None:
    stream = CountingStream()
    logger, handler = _logger(stream)

    loop = asyncio.new_event_loop()

    def last_words() -> None:
        logger.info("stopping")
        loop.stop()  # this iteration is the last: the scheduled write never runs

    loop.call_soon(last_words)
    loop.run_forever()
    loop.close()
    assert stream.getvalue() == ""
    handler.flush()  # what logging.shutdown() does at exit
    assert stream.getvalue() == "stopping\n"


# --- one record, one line -------------------------------------------------------------------
def test_control_characters_in_a_message_are_escaped() -> None:
    record = logging.makeLogRecord(
        {"msg": "GET %s 404", "args": ("/x\n2026-12-08 00:00:00,000 ERROR forged\x1b[31m\u2028",)}
    )
    record.request_id = "-"
    line = EscapingFormatter(FORMAT).format(record)
    for control in ("\n", "\x1b", "\u2028"):
        assert control not in line
    assert line.endswith("GET /x\\n2026-12-08 00:00:00,000 ERROR forged\\x1b[31m\\u2028 404")
    assert escape_controls("plain text, ünïcode 今天") == "plain text, ünïcode 今天"


def test_a_traceback_keeps_its_lines() -> None:
    try:
        raise ValueError("boom")
    except ValueError:
        record = logging.makeLogRecord({"msg": "failed", "exc_info": sys.exc_info()})
    record.request_id = "-"
    lines = EscapingFormatter(FORMAT).format(record).splitlines()
    assert lines[0].endswith("failed")
    assert lines[1] == "Traceback (most recent call last):"


def test_a_path_cannot_forge_a_log_line(
    start_server: Callable[..., LiveServer], tiny_encoder: Encoder
) -> None:
    """The access line logs the decoded path: %0a ended the line and the rest of the path read
    as an ERROR line of its own, with a raw ESC for the terminal."""
    server = start_server(tiny_encoder, access_log=True)
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.setFormatter(EscapingFormatter(FORMAT))
    handler.addFilter(RequestIdFilter())
    access = logging.getLogger("service.access")
    access.addHandler(handler)
    level = access.level
    access.setLevel(logging.INFO)
    try:
        forged = "/x%0a2026-12-08%2000:00:00,000%20ERROR%20service%20forged%1b[31m"
        response = httpx.get(server.base_url + forged, headers={"x-request-id": "forge-1"})
        assert response.status_code == 404
        for _ in range(1000):  # the line is written after the answer: wait for it
            if "forge-1" in stream.getvalue():
                break
            time.sleep(0.01)
    finally:
        access.removeHandler(handler)
        access.setLevel(level)
    lines = [line for line in stream.getvalue().splitlines() if line]
    assert len(lines) == 1, lines
    escaped = "GET /x\\n2026-12-08 00:00:00,000 ERROR service forged\\x1b[31m 404"
    assert f"[forge-1] {escaped}" in lines[0]
