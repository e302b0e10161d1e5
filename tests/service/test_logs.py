"""The log handler: lines logged on the event loop are written together once per iteration, in
order with lines from other threads, and none is lost at shutdown."""

from __future__ import annotations

import asyncio
import io
import logging
import threading

from service.logs import LoopBatchingHandler


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
