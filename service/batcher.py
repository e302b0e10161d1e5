"""Dynamic batching on asyncio: many concurrent requests -> few large forward passes.

No torch, no FastAPI. Requests enqueue their (already tokenised) inputs and await a future. One
loop task forms batches whenever the device is free: it takes a window of the oldest queued inputs,
sorts it by length (so similar lengths share a batch and padding stays small), cuts it into batches
bounded by padded tokens (rows x longest row) and by item count, and runs them one after another on
a single worker thread (one model, one device). While a batch runs the queue fills, so under load
the next batch is full without any timer; `batch_wait_s` adds a short wait only when the queue
holds less than one batch (off by default). Every input of a window is served before any newer
input, so sorting cannot starve long inputs.

Device faults (service.model_types): a batch that runs out of device memory is retried in halves,
so only an input that does not fit alone fails; a failed device (DeviceFailedError) fails
everything queued, refuses new work, and is reported through `on_device_failure`.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections import deque
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Protocol

import numpy as np

from service.model_types import DeviceFailedError, DeviceOutOfMemoryError

log = logging.getLogger(__name__)

# Batches planned at once, in multiples of max_batch_size: large enough to sort usefully, small
# enough that a newly queued input waits at most a few batches.
_WINDOW_BATCHES = 4
# Event-loop iterations a request needs from "bytes received" to "inputs queued" (parse, validate,
# tokenise inline, enqueue), with one to spare.
_ARRIVAL_YIELDS = 3

RunBatch = Callable[[list[list[int]]], np.ndarray]


class Overloaded(Exception):  # noqa: N818 (the name the API docs use)
    """The queue is full: the client should retry later (HTTP 429)."""


class BatcherStopped(Exception):  # noqa: N818
    """The batcher no longer accepts work (draining or shut down: HTTP 503)."""


class BatchObserver(Protocol):
    def queue_changed(self, items: int, tokens: int) -> None: ...

    def batch_done(self, items: int, padded_tokens: int, tokens: int) -> None: ...


class _NullObserver:
    def queue_changed(self, items: int, tokens: int) -> None:
        pass

    def batch_done(self, items: int, padded_tokens: int, tokens: int) -> None:
        pass


@dataclass(eq=False)
class _Request:
    future: asyncio.Future[np.ndarray]
    size: int
    remaining: int
    queued_items: int
    queued_tokens: int
    out: np.ndarray | None = None


@dataclass(eq=False, slots=True)
class _Item:
    request: _Request
    index: int
    ids: list[int]


@dataclass
class _Queue:
    items: deque[_Item] = field(default_factory=deque)
    live_items: int = 0
    live_tokens: int = 0


class Batcher:
    def __init__(
        self,
        run_batch: RunBatch,
        *,
        max_batch_tokens: int,
        max_batch_size: int,
        max_queue_items: int,
        batch_wait_s: float = 0.0,
        observer: BatchObserver | None = None,
        on_device_failure: Callable[[DeviceFailedError], None] | None = None,
    ) -> None:
        self._run_batch = run_batch
        self._max_batch_tokens = max_batch_tokens
        self._max_batch_size = max_batch_size
        self._max_queue_items = max_queue_items
        self._batch_wait_s = batch_wait_s
        self._observer = observer or _NullObserver()
        self._queue = _Queue()
        self._has_work = asyncio.Event()
        self._stopping = False
        self._task: asyncio.Task[None] | None = None
        self._executor: ThreadPoolExecutor | None = None
        self._window: list[_Item] = []  # taken from the queue, not yet answered
        self._on_device_failure = on_device_failure or (lambda _: None)
        self._device_error: DeviceFailedError | None = None

    @property
    def queued_items(self) -> int:
        return self._queue.live_items

    @property
    def queued_tokens(self) -> int:
        return self._queue.live_tokens

    def start(self) -> None:
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="encoder")
        self._task = asyncio.get_running_loop().create_task(self._loop(), name="batcher")

    async def stop(self, drain_s: float) -> None:
        """Stop accepting work, finish what is queued within `drain_s`, then fail the rest."""
        self._stopping = True
        self._has_work.set()
        timed_out = False
        if self._task is not None:
            try:
                await asyncio.wait_for(asyncio.shield(self._task), drain_s)
            except TimeoutError:
                timed_out = True
                log.error("drain timeout (%.1fs): %d inputs not run", drain_s, self.queued_items)
                self._task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await self._task
        stopped = BatcherStopped("the server stopped before this input ran")
        for item in [*self._window, *self._queue.items]:
            self._fail(item.request, stopped)
        self._queue.items.clear()
        if self._executor is not None:
            # After a timeout the device thread may be stuck in a batch: do not wait for it.
            self._executor.shutdown(wait=not timed_out, cancel_futures=True)

    async def embed(self, token_ids: list[list[int]]) -> np.ndarray:
        """Embed the inputs (rows in input order). Raises Overloaded, BatcherStopped, or what the
        encoder raised for a batch holding one of these inputs."""
        request = self._enqueue(token_ids)
        try:
            return await request.future
        except asyncio.CancelledError:
            # The client went away: its inputs still queued are dropped when they reach the front.
            self._fail(request, None)
            raise

    def _enqueue(self, token_ids: list[list[int]]) -> _Request:
        if self._device_error is not None:
            raise self._device_error
        if self._stopping or self._task is None:
            raise BatcherStopped("the server is not accepting work")
        queue = self._queue
        n = len(token_ids)
        if queue.live_items and queue.live_items + n > self._max_queue_items:
            raise Overloaded(
                f"{queue.live_items} inputs are queued; this request's {n} would exceed the "
                f"queue limit of {self._max_queue_items}"
            )
        tokens = sum(len(ids) for ids in token_ids)
        future: asyncio.Future[np.ndarray] = asyncio.get_running_loop().create_future()
        request = _Request(future, n, n, n, tokens)
        queue.items.extend(_Item(request, i, ids) for i, ids in enumerate(token_ids))
        queue.live_items += n
        queue.live_tokens += tokens
        self._observer.queue_changed(queue.live_items, queue.live_tokens)
        self._has_work.set()
        return request

    def _fail(self, request: _Request, error: BaseException | None) -> None:
        """Finish a request early (error; cancelled when None) and forget its queued inputs."""
        if not request.future.done():
            if error is None:
                request.future.cancel()
            else:
                request.future.set_exception(error)
        if request.queued_items:
            self._queue.live_items -= request.queued_items
            self._queue.live_tokens -= request.queued_tokens
            request.queued_items = request.queued_tokens = 0
            self._observer.queue_changed(self._queue.live_items, self._queue.live_tokens)

    async def _loop(self) -> None:
        while True:
            if not self._queue.live_items:
                self._queue.items.clear()  # only inputs of finished requests can be left
                if self._stopping:
                    return
                self._has_work.clear()
                await self._has_work.wait()
                continue
            await self._gather_arrivals()
            self._window = self._take_window()
            for batch in self._plan(self._window):
                live = [item for item in batch if not item.request.future.done()]
                if live:
                    await self._execute(live)
            self._window = []

    async def _gather_arrivals(self) -> None:
        """Before a batch that is not full: let the event loop run a few iterations, so requests
        whose bytes have already arrived reach the queue (microseconds, no timer). Without this a
        burst of clients is served as one input, then the rest. Then the optional timed wait."""
        for _ in range(_ARRIVAL_YIELDS):
            if self._queue.live_items >= self._max_batch_size:
                return
            await asyncio.sleep(0)
        if self._batch_wait_s and self._queue.live_items < self._max_batch_size:
            await asyncio.sleep(self._batch_wait_s)

    def _take_window(self) -> list[_Item]:
        queue = self._queue
        window: list[_Item] = []
        limit = self._max_batch_size * _WINDOW_BATCHES
        while queue.items and len(window) < limit:
            item = queue.items.popleft()
            request = item.request
            if request.future.done():
                continue
            request.queued_items -= 1
            request.queued_tokens -= len(item.ids)
            queue.live_items -= 1
            queue.live_tokens -= len(item.ids)
            window.append(item)
        self._observer.queue_changed(queue.live_items, queue.live_tokens)
        return window

    def _plan(self, window: list[_Item]) -> list[list[_Item]]:
        """Sorted by length, cut where the next item would break the token budget or the size cap.
        An item longer than the whole budget still runs, alone."""
        window = sorted(window, key=lambda item: len(item.ids))
        batches: list[list[_Item]] = []
        current: list[_Item] = []
        for item in window:
            padded = (len(current) + 1) * len(item.ids)
            if current and (
                padded > self._max_batch_tokens or len(current) >= self._max_batch_size
            ):
                batches.append(current)
                current = []
            current.append(item)
        if current:
            batches.append(current)
        return batches

    async def _execute(self, batch: list[_Item]) -> None:
        ids = [item.ids for item in batch]
        loop = asyncio.get_running_loop()
        try:
            vectors = await loop.run_in_executor(self._executor, self._run_batch, ids)
        except DeviceOutOfMemoryError as exc:
            await self._retry_smaller(batch, exc)
            return
        except DeviceFailedError as exc:
            self._device_failed(batch, exc)
            return
        except Exception as exc:
            log.exception("batch of %d inputs failed", len(batch))
            for item in batch:
                self._fail(item.request, exc)
            return
        tokens = sum(len(x) for x in ids)
        self._observer.batch_done(len(batch), len(batch) * len(ids[-1]), tokens)
        for row, item in enumerate(batch):
            request = item.request
            if request.future.done():
                continue
            if request.out is None:
                request.out = np.empty((request.size, vectors.shape[1]), dtype=vectors.dtype)
            request.out[item.index] = vectors[row]
            request.remaining -= 1
            if request.remaining == 0:
                request.future.set_result(request.out)

    async def _retry_smaller(self, batch: list[_Item], exc: DeviceOutOfMemoryError) -> None:
        """Halves run one after the other (the encoder freed its cache): the batch's requests are
        served, only slower. An input that does not fit alone fails on its own."""
        if len(batch) == 1:
            log.error("one input does not fit in device memory: %s", exc)
            self._fail(batch[0].request, exc)
            return
        log.warning("%s; retrying as two batches of %d and %d", exc, *_halves(len(batch)))
        middle = len(batch) // 2
        for half in (batch[:middle], batch[middle:]):
            live = [item for item in half if not item.request.future.done()]
            if live:
                await self._execute(live)

    def _device_failed(self, batch: list[_Item], exc: DeviceFailedError) -> None:
        """Every later batch would fail too: answer everything queued now and take no more."""
        log.critical("device failed; refusing all work until the process restarts: %s", exc)
        self._device_error = exc
        for item in [*batch, *self._window, *self._queue.items]:
            self._fail(item.request, exc)
        self._queue.items.clear()
        self._on_device_failure(exc)


def _halves(n: int) -> tuple[int, int]:
    return n // 2, n - n // 2
