"""Dynamic batching on asyncio: many concurrent requests -> few large forward passes.

No torch, no FastAPI. A request hands over its raw inputs and awaits a future. Two stages follow,
each an asyncio task that hands its work to one worker thread:

1. **Tokenise in bulk.** Whatever has arrived since the last call is prepared (tokenised and
   checked) in one call on the tokenizer thread: one Rust `encode_batch` over every text of every
   waiting request costs far less per text than a call per request, and it runs beside the event
   loop and the forward pass (the Rust tokenizer and torch both release the GIL). A request whose
   inputs fail (too long, bad token ids, over its token cap) fails alone.
2. **Batch fairly, cut by length.** When the device is free, a window of at most one batch of
   inputs (max_batch_size inputs, max_batch_tokens real tokens) is taken **round robin over the
   queued requests**, oldest first: one input of each request per pass, so a 2048-input request
   and a 1-input one each get a share and the small one waits behind at most the window that is
   running (about one batch), never behind the whole bulk request. The window is sorted by length
   and cut into length buckets where that lowers the padded work (`plan_batches`): a paragraph no
   longer pads 63 short queries to its length. Every input of a window runs before any newer
   input, so sorting cannot starve long inputs. Only requests about to be answered later than
   admission estimated (below) go before the round robin, in at most half of the window, one input
   each in turn, the earliest due first: under sustained load, newcomers would otherwise stretch
   every admitted request past its estimate.

While a window runs the queue fills, so under load the next window is full without any timer;
`batch_wait_s` adds a short wait only when less than one batch is queued (off by default).

Admission is by time (service.admission): a request is admitted only when the queued work it would
wait behind, at the device's measured seconds per token, fits `max_queue_seconds`; otherwise
Overloaded (429) with when to come back (after the work refused before it). So under overload the
queue holds about that much work and what it admits is answered in time, instead of everything
being answered late. Each admitted request is due when the estimate says it will be answered;
requests about to miss that go first (above), and one later than that by more than the
target without any of its inputs on the device (the device slowed, or the work was
underestimated) is shed with QueueTimeout (429), as are the queued inputs of a client that went
away: the device only runs work someone still waits for. `max_queue_items` bounds the inputs held
(memory) whatever the estimate says; a request larger than that is refused as too large (it could
never be admitted).

Device faults (service.model_types): a batch that runs out of device memory is retried in halves,
so only an input that does not fit alone fails; a failed device (DeviceFailedError) fails
everything queued, refuses new work, and is reported through `on_device_failure`.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import time
from collections import deque
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any, Generic, Protocol, TypeVar

import numpy as np

from service.admission import Promises, Throughput, TokensPerInput, retry_after_s, tokens_ahead
from service.model_types import DeviceFailedError, DeviceOutOfMemoryError, Tokenized

log = logging.getLogger(__name__)

# Event-loop iterations a request needs from "bytes received" to "inputs handed over" (parse,
# validate, enqueue), with one to spare.
_ARRIVAL_YIELDS = 3
WINDOW_SHARE = 0.5
"""The part of max_queue_seconds one window may take at the measured speed (_window_token_cap)."""
# Inputs prepared in one tokenizer call at most: bounds how long a call holds the thread while
# small requests queue behind it.
_PREPARE_MAX_INPUTS = 4096

R = TypeVar("R")
T = TypeVar("T")
RunBatch = Callable[[list[list[int]]], np.ndarray]
Prepare = Callable[[list[R]], list[Tokenized | Exception]]


class Overloaded(Exception):  # noqa: N818 (the name the API docs use)
    """The queue holds all the work the server can finish in time: retry later (HTTP 429)."""

    def __init__(self, message: str, retry_after_s: float = 1.0) -> None:
        super().__init__(message)
        self.retry_after_s = retry_after_s
        """When the queue is expected to have room (the Retry-After header)."""


class QueueTimeout(Overloaded):
    """Admitted, but none of the request's inputs reached the device by its deadline (HTTP 429)."""


class TooLargeForQueue(ValueError):  # noqa: N818
    """The request alone has more inputs than the queue holds: it can never run (HTTP 400)."""

    param = "input"


class BatcherStopped(Exception):  # noqa: N818
    """The batcher no longer accepts work (draining or shut down: HTTP 503)."""


class BatchObserver(Protocol):
    def queue_changed(self, items: int, tokens: int, seconds: float) -> None: ...

    def batch_done(self, items: int, padded_tokens: int, tokens: int) -> None: ...

    def device_error(self, kind: str) -> None: ...


class _NullObserver:
    def queue_changed(self, items: int, tokens: int, seconds: float) -> None:
        pass

    def batch_done(self, items: int, padded_tokens: int, tokens: int) -> None:
        pass

    def device_error(self, kind: str) -> None:
        pass


@dataclass(eq=False, slots=True)
class _Request(Generic[R]):
    future: asyncio.Future[np.ndarray]
    raw: R
    size: int
    admitted_at: float
    per_input: float
    """Tokens per input: estimated until prepared, then counted."""
    wait_s: float = 0.0
    """The wait behind queued work estimated at admission."""
    due: float = math.inf
    """When it is expected to be answered: admission + wait + its own work (when estimated)."""
    prepared: Tokenized | None = None
    taken: int = 0
    """Inputs already taken into a window (the next one to take)."""
    remaining: int = 0
    """Inputs not yet answered."""
    queued_tokens: int = 0
    """Tokens of prepared inputs not yet taken into a window."""
    out: np.ndarray | None = None


@dataclass(eq=False, slots=True)
class _Item:
    request: _Request[Any]
    index: int
    ids: list[int]


@dataclass
class _Queue(Generic[R]):
    arrivals: list[_Request[R]] = field(default_factory=list)
    """Admitted, not yet prepared."""
    ready: deque[_Request[R]] = field(default_factory=deque)
    """Prepared, with inputs not yet taken, in round-robin order."""
    live_items: int = 0
    """Inputs admitted and not yet taken into a window (both stages)."""
    pending_items: int = 0
    """Of those, the inputs not prepared yet (stage 1)."""
    live_tokens: int = 0
    """Tokens of prepared inputs not yet taken."""
    pending_tokens: float = 0.0
    """Estimated tokens of the inputs not prepared yet."""
    per_input_sum: float = 0.0
    """Sum of per_input over the requests with inputs not yet taken (service.admission)."""


def _ids_as_prepared(raws: list[list[list[int]]]) -> list[Tokenized | Exception]:
    """The default preparation: raw inputs are already token ids (tests, in-process callers)."""
    return [Tokenized(ids, [False] * len(ids)) for ids in raws]


class Batcher(Generic[R]):
    def __init__(
        self,
        run_batch: RunBatch,
        *,
        max_batch_tokens: int,
        max_batch_size: int,
        max_queue_items: int,
        max_queue_seconds: float | None = None,
        seconds_per_token: float | None = None,
        batch_wait_s: float = 0.0,
        pass_cost_tokens: int = 0,
        prepare: Prepare[R] | None = None,
        observer: BatchObserver | None = None,
        on_device_failure: Callable[[DeviceFailedError], None] | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        """`max_queue_seconds`: the latency target admission keeps (None: inputs are admitted up
        to `max_queue_items` only); `seconds_per_token`: the device's speed before any pass is
        measured (the warm-up's); `clock`: what deadlines are read from."""
        self._run_batch = run_batch
        self._prepare: Prepare[R] = prepare or _ids_as_prepared  # type: ignore[assignment]
        self._max_batch_tokens = max_batch_tokens
        self._max_batch_size = max_batch_size
        self._max_queue_items = max_queue_items
        self._max_queue_seconds = max_queue_seconds
        self._throughput = Throughput(seconds_per_token)
        self._tokens_per_input = TokensPerInput()
        self._clock = clock
        self._promises = Promises(clock())
        self._batch_wait_s = batch_wait_s
        self._pass_cost_tokens = pass_cost_tokens
        self._observer = observer or _NullObserver()
        self._queue: _Queue[R] = _Queue()
        self._has_arrivals = asyncio.Event()
        self._has_work = asyncio.Event()
        self._stopping = False
        self._task: asyncio.Task[None] | None = None
        self._prepare_task: asyncio.Task[None] | None = None
        self._executor: ThreadPoolExecutor | None = None
        self._tokenizer: ThreadPoolExecutor | None = None
        self._preparing: list[_Request[R]] = []
        self._window: list[_Item] = []  # taken from the queue, not yet answered
        self._window_tokens = 0  # of those, the tokens not run yet
        self._on_device_failure = on_device_failure or (lambda _: None)
        self._device_error: DeviceFailedError | None = None

    @property
    def queued_items(self) -> int:
        return self._queue.live_items

    @property
    def queued_tokens(self) -> int:
        return self._queue.live_tokens

    @property
    def seconds_per_token(self) -> float | None:
        """The device's measured speed with full windows, what a long queue runs in (None
        before the first window, without a prior)."""
        full = min(self._max_batch_tokens, self._max_batch_size * self._tokens_per_input.value)
        return self._throughput.seconds_per_token(full)

    def wait_s(self, inputs: int) -> float | None:
        """Estimated seconds a new request of `inputs` inputs waits behind queued work, the
        pass under way left out (None while the device's speed is unknown): what admission
        compares with the target. The running pass is committed whatever admission decides, and
        on a CPU one pass of max_batch_tokens alone can take longer than the target: counting
        it would refuse even the first request behind one bulk request."""
        seconds_per_token = self.seconds_per_token
        if seconds_per_token is None:
            return None
        queue = self._queue
        queued = queue.live_tokens + queue.pending_tokens
        return tokens_ahead(inputs, queued, queue.per_input_sum) * seconds_per_token

    def start(self) -> None:
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="encoder")
        self._tokenizer = ThreadPoolExecutor(max_workers=1, thread_name_prefix="tokenizer")
        loop = asyncio.get_running_loop()
        self._prepare_task = loop.create_task(self._prepare_loop(), name="batcher-prepare")
        self._task = loop.create_task(self._loop(), name="batcher")

    async def stop(self, drain_s: float) -> None:
        """Stop accepting work, finish what is queued within `drain_s`, then fail the rest."""
        self._stopping = True
        self._has_arrivals.set()
        self._has_work.set()
        timed_out = False
        tasks = [task for task in (self._prepare_task, self._task) if task is not None]
        if tasks:
            _, unfinished = await asyncio.wait(tasks, timeout=drain_s)
            if unfinished:
                timed_out = True
                log.error("drain timeout (%.1fs): %d inputs not run", drain_s, self.queued_items)
                for task in unfinished:
                    task.cancel()
                for task in unfinished:
                    with contextlib.suppress(asyncio.CancelledError):
                        await task
        stopped = BatcherStopped("the server stopped before this input ran")
        pending = [*self._preparing, *self._queue.arrivals, *self._queue.ready]
        for request in [*(item.request for item in self._window), *pending]:
            self._fail(request, stopped)
        self._queue.arrivals.clear()
        self._queue.ready.clear()
        for executor in (self._executor, self._tokenizer):
            if executor is not None:
                # After a timeout a thread may be stuck in a call: do not wait for it.
                executor.shutdown(wait=not timed_out, cancel_futures=True)

    async def embed(
        self, raw: R, size: int, tokens: float | None = None
    ) -> tuple[np.ndarray, Tokenized]:
        """Embed one request's `size` inputs: the vectors (rows in input order) and what preparing
        them found (token ids, truncation). `tokens`: what the caller expects them to have, the
        admission's estimate until they are tokenised (default: the mean of requests so far).
        Raises Overloaded, TooLargeForQueue, BatcherStopped, what `prepare` returned for this
        request, or what the encoder raised for a batch holding one of its inputs."""
        request = self._enqueue(raw, size, tokens)
        try:
            vectors = await request.future
        except asyncio.CancelledError:
            # The client went away: its inputs still queued are dropped when they reach the front.
            self._fail(request, None)
            raise
        assert request.prepared is not None
        return vectors, request.prepared

    def _enqueue(self, raw: R, size: int, expected_tokens: float | None) -> _Request[R]:
        if self._device_error is not None:
            raise self._device_error
        if self._stopping or self._task is None:
            raise BatcherStopped("the server is not accepting work")
        queue = self._queue
        limit = self._max_queue_items
        if size > limit:
            raise TooLargeForQueue(
                f"the request has {size} inputs and this server queues at most {limit}: "
                "split it into smaller requests"
            )
        if queue.live_items + size > limit:
            # Until enough inputs have left: that share of the queued work's time.
            excess = queue.live_items + size - limit
            share = self._queued_seconds() * excess / max(1, queue.live_items)
            raise Overloaded(
                f"{queue.live_items} inputs are queued; this request's {size} would exceed the "
                f"queue limit of {limit}",
                retry_after_s(share, 0.0),
            )
        per_input = expected_tokens / size if expected_tokens else self._tokens_per_input.value
        target = self._max_queue_seconds
        wait_s = self.wait_s(size)
        if target is not None and wait_s is not None and wait_s > target:
            tokens = size * per_input
            raise Overloaded(
                f"the server is at capacity: this request would wait about {wait_s:.1f} s for "
                f"queued work, over its target of {target:g} s",
                self._retry_after(wait_s - target, tokens),
            )
        future: asyncio.Future[np.ndarray] = asyncio.get_running_loop().create_future()
        request = _Request(future, raw, size, self._clock(), per_input, remaining=size)
        if wait_s is not None:
            request.wait_s = wait_s
            self._schedule(request, size * per_input)
        queue.arrivals.append(request)
        queue.live_items += size
        queue.pending_items += size
        queue.pending_tokens += size * per_input
        queue.per_input_sum += per_input
        self._report()
        self._has_arrivals.set()
        return request

    def _queued_seconds(self) -> float:
        """The queued work at the measured speed (0 while the speed is unknown)."""
        queue = self._queue
        seconds_per_token = self.seconds_per_token or 0.0
        return (queue.live_tokens + queue.pending_tokens) * seconds_per_token

    def _schedule(self, request: _Request[R], tokens: float) -> None:
        """When the request is due: admission + the pass under way + its wait + its own work."""
        seconds_per_token = self.seconds_per_token
        if seconds_per_token is not None and self._max_queue_seconds is not None:
            own_s = (self._window_tokens + tokens) * seconds_per_token
            request.due = request.admitted_at + request.wait_s + own_s

    def _report(self) -> None:
        queue = self._queue
        self._observer.queue_changed(queue.live_items, queue.live_tokens, self._queued_seconds())

    def _overdue(self, request: _Request[R], now: float) -> bool:
        """Untouched, and later than when it was due by more than the target: the estimate that
        admitted it was wrong (the device slowed), and its answer would come late anyway."""
        target = self._max_queue_seconds
        return target is not None and request.taken == 0 and now > request.due + target

    def _shed(self, request: _Request[R], now: float) -> None:
        waited = now - request.admitted_at
        message = (
            f"the request waited {waited:.1f} s in the queue without reaching the device (the "
            "server is slower than it estimated): retry later"
        )
        tokens = request.size * request.per_input
        excess_s = self._queued_seconds() - (self._max_queue_seconds or 0.0)
        self._fail(request, QueueTimeout(message, self._retry_after(excess_s, tokens)))

    def _retry_after(self, excess_s: float, tokens: float) -> float:
        """Retry-After for refused work of `tokens` tokens while the queue is `excess_s` over
        its target: after the queue and the work refused before it (service.admission)."""
        own_s = tokens * (self.seconds_per_token or 0.0)
        return self._promises.refuse(self._clock(), excess_s, own_s)

    def _fail(self, request: _Request[R], error: BaseException | None) -> None:
        """Finish a request early (error; cancelled when None) and forget its queued inputs."""
        if not request.future.done():
            if error is None:
                request.future.cancel()
            else:
                request.future.set_exception(error)
        untaken = request.size - request.taken
        if untaken:
            queue = self._queue
            if request.prepared is None:
                queue.pending_items -= untaken
                queue.pending_tokens -= untaken * request.per_input
            request.taken = request.size
            queue.live_items -= untaken
            queue.live_tokens -= request.queued_tokens
            queue.per_input_sum -= request.per_input
            request.queued_tokens = 0
            self._settle_sums()
            self._report()

    def _settle_sums(self) -> None:
        """Float sums drift by rounding: an empty queue resets them to exactly zero."""
        queue = self._queue
        if queue.pending_items == 0:
            queue.pending_tokens = 0.0
        if queue.live_items == 0:
            queue.per_input_sum = 0.0

    # --- Stage 1: prepare in bulk -----------------------------------------------------------------
    async def _prepare_loop(self) -> None:
        queue = self._queue
        loop = asyncio.get_running_loop()
        while True:
            if not queue.arrivals:
                if self._stopping:
                    return
                self._has_arrivals.clear()
                await self._has_arrivals.wait()
                continue
            # A burst of clients answered by the last batch sends its next requests together:
            # a few loop iterations let the rest of it arrive (microseconds, no timer), so it is
            # tokenised in one call and batched as one, not as its first request and the rest.
            for _ in range(_ARRIVAL_YIELDS):
                if self._pending_inputs() >= self._max_batch_size:
                    break
                await asyncio.sleep(0)
            # Kept in _preparing until answered: a drain that times out fails them from there.
            self._preparing = taken = self._take_arrivals()
            results: list[Tokenized | Exception] = []
            if taken:
                try:
                    results = await loop.run_in_executor(
                        self._tokenizer, self._prepare, [request.raw for request in taken]
                    )
                except Exception as exc:
                    log.exception("preparing %d requests failed", len(taken))
                    results = [exc] * len(taken)
            for request, result in zip(taken, results, strict=True):
                if request.future.done():
                    continue  # cancelled meanwhile; _fail already released its inputs
                if isinstance(result, Exception):
                    self._fail(request, result)
                    continue
                queue.pending_items -= request.size
                queue.pending_tokens -= request.size * request.per_input
                queue.per_input_sum -= request.per_input
                request.prepared = result
                request.queued_tokens = result.token_count
                request.per_input = result.token_count / request.size
                self._schedule(request, result.token_count)
                queue.per_input_sum += request.per_input
                self._tokens_per_input.record(result.token_count, request.size)
                queue.live_tokens += request.queued_tokens
                queue.ready.append(request)
            self._preparing = []
            self._settle_sums()
            self._report()
            self._has_work.set()

    def _take_arrivals(self) -> list[_Request[R]]:
        """The oldest arrivals, up to _PREPARE_MAX_INPUTS inputs (at least one request); those
        past their deadline are shed before they cost the tokenizer anything."""
        arrivals = self._queue.arrivals
        count = inputs = 0
        for request in arrivals:
            if count and inputs + request.size > _PREPARE_MAX_INPUTS:
                break
            count += 1
            inputs += request.size
        now = self._clock()
        taken = []
        for request in arrivals[:count]:
            if self._overdue(request, now):
                self._shed(request, now)
            elif not request.future.done():
                taken.append(request)
        del arrivals[:count]
        return taken

    # --- Stage 2: fair, length-cut batches --------------------------------------------------------
    async def _loop(self) -> None:
        queue = self._queue
        busy_since: float | None = None
        while True:
            if not queue.ready:
                if self._stopping and not queue.arrivals and not self._preparing:
                    return
                busy_since = None
                self._has_work.clear()
                await self._has_work.wait()
                continue
            # The speed admission needs is the device's as the queue sees it: from the end of
            # the last window (when work was waiting) to the end of this one, so the time spent
            # between passes (forming windows, the event loop's own work) counts too; but not the
            # time spent waiting for the tokenizer or the batch timer, which is no device's: one
            # 11 s tokenizer call read as an 11 s window made the device look 9.5x slower, and
            # admission held a tenth of its target until the estimate decayed.
            start = busy_since if busy_since is not None else time.perf_counter()
            waited = await self._gather_arrivals()
            self._window = self._take_window()
            self._window_tokens = sum(len(item.ids) for item in self._window)
            ran = 0
            for batch in plan_batches(
                self._window,
                _item_length,
                max_tokens=self._max_batch_tokens,
                max_rows=self._max_batch_size,
                pass_cost_tokens=self._pass_cost_tokens,
            ):
                live = [item for item in batch if not item.request.future.done()]
                if live:
                    await self._execute(live)
                    ran += sum(len(item.ids) for item in live)
                self._window_tokens -= sum(len(item.ids) for item in batch)
            self._window = []
            self._window_tokens = 0
            now = time.perf_counter()
            self._throughput.record(ran, now - start - waited)
            busy_since = now if queue.ready else None

    async def _gather_arrivals(self) -> float:
        """Before a window that is not full: let the event loop run a few iterations, so requests
        whose bytes have already arrived are handed over, and let the tokenizer call under way
        finish (a burst of clients is then one batch, not one input and the rest). Then the
        optional timed wait. Returns the seconds spent waiting for the tokenizer and the timer."""
        for _ in range(_ARRIVAL_YIELDS):
            if self._ready_items() >= self._max_batch_size:
                return 0.0
            await asyncio.sleep(0)
        began = time.perf_counter()
        if self._queue.arrivals or self._preparing:
            self._has_work.clear()
            await self._has_work.wait()  # set when the tokenizer call under way returns
        if self._batch_wait_s and self._ready_items() < self._max_batch_size:
            await asyncio.sleep(self._batch_wait_s)
        return time.perf_counter() - began

    def _pending_inputs(self) -> int:
        return sum(request.size for request in self._queue.arrivals)

    def _ready_items(self) -> int:
        return self._queue.live_items - self._queue.pending_items

    def _take_window(self) -> list[_Item]:
        """At most one batch of inputs: first, in up to half of it, the inputs of requests that
        would otherwise be answered after they are due, one each in turn, the earliest due first;
        then one input per queued request per pass (round robin). A request is due at its
        admission time plus the wait and the work admission estimated for it: round robin alone
        stretches every request's time by the others that arrive while it runs, so under
        sustained load it would miss the target that admitted it. Half, and in turn: a late bulk
        request given whole windows held every small request admitted behind it (admission
        counts one input of each request ahead, round robin's order) until they were shed."""
        queue = self._queue
        ready = queue.ready
        window: list[_Item] = []
        tokens = 0
        now = self._clock()
        cap = self._window_token_cap()
        late = deque(self._late(now))
        late_rows, late_tokens = max(1, self._max_batch_size // 2), cap // 2
        while late and len(window) < late_rows and tokens < late_tokens:
            request = late.popleft()
            added = self._take_one(request, window, tokens, cap)
            if not added:
                break
            tokens += added
            if request.taken < request.size:
                late.append(request)
        while ready and len(window) < self._max_batch_size:
            request = ready.popleft()
            if request.future.done() or request.taken == request.size:
                continue
            if self._overdue(request, now):
                self._shed(request, now)
                continue
            added = self._take_one(request, window, tokens, cap)
            if not added:
                ready.appendleft(request)
                break
            tokens += added
            if request.taken < request.size:
                ready.append(request)
        self._settle_sums()
        self._report()
        return window

    def _late(self, now: float) -> list[_Request[R]]:
        """Queued requests whose remaining work, started now, ends after they are due; the
        earliest due first. Those past their deadline untouched are shed instead."""
        seconds_per_token = self.seconds_per_token
        if seconds_per_token is None:
            return []
        late = []
        for request in self._queue.ready:
            if request.future.done() or request.taken == request.size:
                continue
            if self._overdue(request, now):
                self._shed(request, now)
            elif now + request.queued_tokens * seconds_per_token >= request.due:
                late.append(request)
        return sorted(late, key=lambda request: request.due)

    def _window_token_cap(self) -> int:
        """max_batch_tokens, or fewer: what the device runs in WINDOW_SHARE of
        max_queue_seconds at its measured speed. The window under way is committed and admission
        does not count it, so on a CPU a full window (32768 tokens: 11 s for 109 long texts on
        2 cores) held a request admitted for a 1 s wait for all of it. A GPU runs a full window
        well within the share, and keeps it."""
        target = self._max_queue_seconds
        within = None if target is None else self._throughput.tokens_within(target * WINDOW_SHARE)
        if within is None:
            return self._max_batch_tokens
        return max(1, min(self._max_batch_tokens, within))

    def _take_one(self, request: _Request[R], window: list[_Item], tokens: int, cap: int) -> int:
        """Move the request's next input into the window (holding `tokens` of at most `cap`) if
        it has room for it: the input's tokens, or 0. A first input always has room."""
        if len(window) >= self._max_batch_size:
            return 0
        assert request.prepared is not None
        ids = request.prepared.ids[request.taken]
        if window and tokens + len(ids) > cap:
            return 0
        window.append(_Item(request, request.taken, ids))
        request.taken += 1
        request.queued_tokens -= len(ids)
        queue = self._queue
        queue.live_items -= 1
        queue.live_tokens -= len(ids)
        if request.taken == request.size:
            queue.per_input_sum -= request.per_input
        return len(ids)

    async def _execute(self, batch: list[_Item]) -> None:
        ids = [item.ids for item in batch]
        loop = asyncio.get_running_loop()
        try:
            vectors = await loop.run_in_executor(self._executor, self._run_batch, ids)
        except DeviceOutOfMemoryError as exc:
            self._observer.device_error("out_of_memory")
            await self._retry_smaller(batch, exc)
            return
        except DeviceFailedError as exc:
            self._observer.device_error("device_failed")
            self._device_failed(batch, exc)
            return
        except Exception as exc:
            log.exception("batch of %d inputs failed", len(batch))
            for item in batch:
                self._fail(item.request, exc)
            return
        tokens = sum(len(x) for x in ids)
        self._observer.batch_done(len(batch), len(batch) * max(map(len, ids)), tokens)
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
        queue = self._queue
        requests = [*(item.request for item in (*batch, *self._window)), *queue.ready]
        for request in [*requests, *queue.arrivals, *self._preparing]:
            self._fail(request, exc)
        queue.ready.clear()
        queue.arrivals.clear()
        self._on_device_failure(exc)


def _halves(n: int) -> tuple[int, int]:
    return n // 2, n - n // 2


def plan_batches(
    window: Sequence[T],
    length: Callable[[T], int],
    *,
    max_tokens: int,
    max_rows: int,
    pass_cost_tokens: int,
) -> list[list[T]]:
    """The window sorted by `length` and cut into batches that minimise the padded tokens plus
    `pass_cost_tokens` per forward pass (the fixed cost of a pass, in padded-token equivalents),
    each within `max_rows` rows and `max_tokens` padded tokens (an input longer than the whole
    budget still runs, alone).

    Dynamic programming over the cut points between inputs of different lengths (cutting between
    equal lengths never lowers padding): O(distinct lengths^2), a few dozen here. Where padding
    costs more than another pass, the window splits; a pass cost above the window's padding keeps
    it whole."""
    items = sorted(window, key=length)
    lengths = [length(item) for item in items]
    n = len(items)
    if n == 0:
        return []
    # Candidate cut positions: the ends of runs of equal length, and the window's end.
    ends = [i for i in range(1, n) if lengths[i] != lengths[i - 1]] + [n]
    starts = [0, *ends[:-1]]
    best = [0.0] + [float("inf")] * len(ends)
    cut_from = [0] * (len(ends) + 1)
    for j, end in enumerate(ends, start=1):
        longest = lengths[end - 1]
        for i in range(j - 1, -1, -1):
            rows = end - starts[i]
            padded = rows * longest
            if (rows > max_rows or padded > max_tokens) and i < j - 1:
                break  # starting earlier only adds rows
            cost = best[i] + padded + pass_cost_tokens
            if cost < best[j]:
                best[j], cut_from[j] = cost, i
    bounds: list[tuple[int, int]] = []
    j = len(ends)
    while j:
        i = cut_from[j]
        bounds.append((starts[i], ends[j - 1]))
        j = i
    batches: list[list[T]] = []
    for lo, hi in reversed(bounds):
        # A run of equal lengths longer than the caps (one group, nothing to sort): cut by the caps.
        per = max(1, min(max_rows, max_tokens // max(1, lengths[hi - 1])))
        batches += [items[k : min(k + per, hi)] for k in range(lo, hi, per)]
    return batches


def _item_length(item: _Item) -> int:
    return len(item.ids)
