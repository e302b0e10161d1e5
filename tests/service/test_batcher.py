"""The batcher on its own: a deterministic batch function stands in for the device where a test
needs to hold it busy or make it fail; the parity test runs the real (tiny) encoder."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable
from typing import Any

import numpy as np
import pytest

from service import batcher as batcher_module
from service.batcher import (
    Batcher,
    BatcherStopped,
    Overloaded,
    QueueTimeout,
    TooLargeForQueue,
    plan_batches,
)
from service.encoder import Encoder
from service.model_types import DeviceFailedError, DeviceOutOfMemoryError, Tokenized

POISON = 1_000_000
pytestmark = pytest.mark.anyio


class Device:
    """Embeds [sum(ids), len(ids)]; records every batch; can be held busy or made to fail."""

    def __init__(self) -> None:
        self.batches: list[list[list[int]]] = []
        self.release = threading.Event()
        self.release.set()
        self.started = threading.Event()

    def __call__(self, batch: list[list[int]]) -> np.ndarray:
        self.started.set()
        self.release.wait(10)
        self.batches.append(batch)
        if any(POISON in ids for ids in batch):
            raise RuntimeError("device error")
        return np.array([[sum(ids), len(ids)] for ids in batch], dtype=np.float32)


def expected(ids: list[list[int]]) -> np.ndarray:
    return np.array([[sum(x), len(x)] for x in ids], dtype=np.float32)


def make(device: Device, **kwargs: int | float) -> Batcher:
    options: dict = {"max_batch_tokens": 64, "max_batch_size": 8, "max_queue_items": 1000}
    options.update(kwargs)
    batcher = Batcher(device, **options)
    batcher.start()
    return batcher


async def vectors(batcher: Batcher, ids: list[list[int]]) -> np.ndarray:
    """Token ids in (the batcher's default preparation), vectors out."""
    result, prepared = await batcher.embed(ids, len(ids))
    assert prepared.ids == ids
    return result


async def wait_started(device: Device) -> None:
    await asyncio.to_thread(device.started.wait, 5)


async def test_token_budget_and_size_cap_hold_and_padding_is_sorted_away() -> None:
    device = Device()
    device.release.clear()
    batcher = make(device, max_batch_tokens=64, max_batch_size=8)
    blocker = asyncio.create_task(vectors(batcher, [[1]]))
    await wait_started(device)
    rng = np.random.default_rng(0)
    requests = [
        [list(range(1, int(n) + 1)) for n in rng.integers(1, 30, size=int(k))]
        for k in rng.integers(1, 12, size=20)
    ]
    tasks = [asyncio.create_task(vectors(batcher, r)) for r in requests]
    # Every request queued and prepared before the device frees up: one window holds them all.
    total = sum(len(ids) for r in requests for ids in r)
    await eventually(lambda: batcher.queued_tokens == total)
    device.release.set()
    results = await asyncio.gather(blocker, *tasks)
    for request, result in zip(requests, results[1:], strict=True):
        np.testing.assert_array_equal(result, expected(request))
    for batch in device.batches:
        assert len(batch) <= 8
        if len(batch) > 1:
            assert len(batch) * max(map(len, batch)) <= 64, [len(x) for x in batch]
    # Sorted windows: each batch holds similar lengths, so padding stays a small share.
    real = sum(len(x) for b in device.batches for x in b)
    padded = sum(len(b) * max(map(len, b)) for b in device.batches)
    assert padded < 1.5 * real
    await batcher.stop(5)


async def test_split_request_is_reassembled_in_order() -> None:
    device = Device()
    batcher = make(device, max_batch_size=4, max_batch_tokens=10_000)
    ids = [[i] * (1 + (i * 7) % 23) for i in range(50)]  # 50 inputs of shuffled lengths
    result = await vectors(batcher, ids)
    np.testing.assert_array_equal(result, expected(ids))
    assert len(device.batches) >= 13
    await batcher.stop(5)


async def test_matches_the_encoder_item_by_item(tiny_encoder: Encoder) -> None:
    batcher = Batcher(
        tiny_encoder.encode_ids, max_batch_tokens=256, max_batch_size=4, max_queue_items=100
    )
    batcher.start()
    texts = ["the cat sat on the mat", "hello", "a big red dog ran over the lazy fox today", "rain"]
    ids = tiny_encoder.tokenize(texts * 3).ids
    batched = await vectors(batcher, ids)
    one_by_one = np.vstack([tiny_encoder.encode_ids([x]) for x in ids])
    np.testing.assert_allclose(batched, one_by_one, atol=1e-5)
    await batcher.stop(5)


async def test_full_queue_raises_overloaded_then_recovers() -> None:
    device = Device()
    device.release.clear()
    batcher = make(device, max_queue_items=10, max_batch_size=2)
    running = asyncio.create_task(vectors(batcher, [[1]]))
    await wait_started(device)
    queued = asyncio.create_task(vectors(batcher, [[2]] * 8))
    await asyncio.sleep(0)
    assert batcher.queued_items == 8
    with pytest.raises(Overloaded):
        await vectors(batcher, [[3]] * 3)
    device.release.set()
    await asyncio.gather(running, queued)
    assert batcher.queued_items == 0
    np.testing.assert_array_equal(await vectors(batcher, [[3]] * 3), expected([[3]] * 3))
    await batcher.stop(5)


async def test_admission_counts_the_request_itself_even_when_the_queue_is_empty() -> None:
    device = Device()
    device.release.clear()
    batcher = make(device, max_queue_items=8, max_batch_size=4)
    # Larger than the whole queue: it could never be admitted, so it is refused, not retried.
    with pytest.raises(TooLargeForQueue, match="20 inputs"):
        await vectors(batcher, [[1, 2]] * 20)
    running = asyncio.create_task(vectors(batcher, [[1]]))
    await wait_started(device)
    queued = asyncio.create_task(vectors(batcher, [[2]] * 5))
    await asyncio.sleep(0)
    assert batcher.queued_items == 5
    with pytest.raises(Overloaded):  # 5 queued + its own 4 > 8
        await vectors(batcher, [[3]] * 4)
    fits = asyncio.create_task(vectors(batcher, [[3]] * 3))
    await asyncio.sleep(0)
    with pytest.raises(Overloaded):
        await vectors(batcher, [[4]])
    device.release.set()
    await asyncio.gather(running, queued, fits)
    await batcher.stop(5)


async def eventually(condition: Callable[[], bool]) -> None:
    """Let the batcher's tasks and threads run until `condition` holds (a bound, not a timing)."""
    for _ in range(1000):
        if condition():
            return
        await asyncio.sleep(0.005)
    raise AssertionError("condition never held")


async def test_cancelled_request_is_dropped_before_it_runs() -> None:
    device = Device()
    device.release.clear()
    batcher = make(device)
    running = asyncio.create_task(vectors(batcher, [[1]]))
    await wait_started(device)
    gone = asyncio.create_task(vectors(batcher, [[777, 778]] * 5))
    kept = asyncio.create_task(vectors(batcher, [[5, 6]]))
    await asyncio.sleep(0)
    assert batcher.queued_items == 6
    await eventually(lambda: batcher.queued_tokens == 12)  # prepared: tokens are known
    gone.cancel()
    await asyncio.sleep(0)
    assert (batcher.queued_items, batcher.queued_tokens) == (1, 2)
    device.release.set()
    await asyncio.gather(running, kept)
    seen = [ids for batch in device.batches for ids in batch]
    assert [777, 778] not in seen
    await batcher.stop(5)


async def test_a_failing_batch_fails_only_its_own_requests() -> None:
    device = Device()
    device.release.clear()
    batcher = make(device, max_batch_size=2, max_batch_tokens=1000)
    running = asyncio.create_task(vectors(batcher, [[1]]))
    await wait_started(device)
    # Equal lengths keep FIFO order within the window: [poison, a] fail together, [b, c] succeed.
    poisoned = asyncio.create_task(vectors(batcher, [[POISON, 1]]))
    neighbour = asyncio.create_task(vectors(batcher, [[2, 2]]))
    others = asyncio.create_task(vectors(batcher, [[3, 3], [4, 4]]))
    await asyncio.sleep(0)
    device.release.set()
    await running
    with pytest.raises(RuntimeError, match="device error"):
        await poisoned
    with pytest.raises(RuntimeError, match="device error"):
        await neighbour
    np.testing.assert_array_equal(await others, expected([[3, 3], [4, 4]]))
    np.testing.assert_array_equal(await vectors(batcher, [[9]]), expected([[9]]))
    await batcher.stop(5)


async def test_event_loop_stays_responsive_during_a_long_batch() -> None:
    busy = threading.Event()
    release = threading.Event()

    def slow(batch: list[list[int]]) -> np.ndarray:
        busy.set()
        release.wait(30)
        return expected(batch)

    batcher = Batcher(slow, max_batch_tokens=64, max_batch_size=8, max_queue_items=100)
    batcher.start()
    work = asyncio.create_task(vectors(batcher, [[1]]))
    await asyncio.to_thread(busy.wait, 30)
    # The device is busy until this coroutine releases it: the loop can only get here (and tick)
    # if the forward pass runs off the event loop.
    for _ in range(10):
        await asyncio.sleep(0)
    assert not work.done()
    release.set()
    np.testing.assert_array_equal(await work, expected([[1]]))
    await batcher.stop(5)


async def test_stop_finishes_queued_work_then_refuses_new_work() -> None:
    device = Device()
    device.release.clear()
    batcher = make(device, max_batch_size=2)
    tasks = [asyncio.create_task(vectors(batcher, [[i, i]])) for i in range(1, 8)]
    await wait_started(device)
    stopping = asyncio.create_task(batcher.stop(5))
    await asyncio.sleep(0)
    with pytest.raises(BatcherStopped):
        await vectors(batcher, [[1]])
    device.release.set()
    await stopping
    results = await asyncio.gather(*tasks)
    assert [r[0, 0] for r in results] == [2 * i for i in range(1, 8)]


async def test_stop_timeout_fails_what_is_left() -> None:
    device = Device()
    device.release.clear()
    batcher = make(device, max_batch_size=1)
    tasks = [asyncio.create_task(vectors(batcher, [[i]])) for i in range(1, 4)]
    await wait_started(device)
    await batcher.stop(0.1)
    device.release.set()
    outcomes = await asyncio.gather(*tasks, return_exceptions=True)
    assert all(isinstance(o, BatcherStopped) for o in outcomes)


@pytest.mark.parametrize(("wait_s", "batches"), [(1.0, [2]), (0.0, [1, 1])])
async def test_batch_wait_collects_more_items_when_configured(
    wait_s: float, batches: list[int]
) -> None:
    device = Device()
    # The wait is a time by design; 1 s against a second request sent a few loop iterations after
    # the first is a bound no busy machine comes near, not a race.
    batcher = make(device, batch_wait_s=wait_s, max_batch_size=8)
    first = asyncio.create_task(vectors(batcher, [[1]]))
    # The first request is prepared and past the batcher's own arrival yields: without a wait it
    # is already on the device.
    await eventually(lambda: batcher.queued_tokens == 1 or device.started.is_set())
    for _ in range(10):
        await asyncio.sleep(0)
    second = asyncio.create_task(vectors(batcher, [[2]]))
    await asyncio.gather(first, second)
    assert [len(batch) for batch in device.batches] == batches
    await batcher.stop(5)


async def test_a_burst_that_already_arrived_is_one_batch_without_a_timer() -> None:
    device = Device()
    batcher = make(device, max_batch_size=16, batch_wait_s=0.0)

    async def client(steps: int) -> np.ndarray:
        for _ in range(steps):  # e.g. body parsing, validation: a few loop iterations each
            await asyncio.sleep(0)
        return await vectors(batcher, [[steps + 1]])

    results = await asyncio.gather(*(client(k % 3) for k in range(8)))
    assert len(results) == 8
    assert [len(batch) for batch in device.batches] == [8]
    await batcher.stop(5)


async def test_a_small_request_behind_a_bulk_one_waits_at_most_one_window() -> None:
    device = Device()
    device.release.clear()
    batcher = make(device, max_batch_size=4, max_batch_tokens=1000, max_queue_items=1000)
    bulk = asyncio.create_task(vectors(batcher, [[7, 7]] * 40))  # 10 batches' worth
    await wait_started(device)  # the bulk request's first window is on the device
    await eventually(lambda: batcher.queued_tokens == 72)  # its other 36 inputs are prepared
    small = asyncio.create_task(vectors(batcher, [[5]]))
    await eventually(lambda: batcher.queued_items == 37)
    device.release.set()
    np.testing.assert_array_equal(await small, expected([[5]]))
    # Round robin: the small input is in the window right after the running one, not after
    # the bulk request's 9 other windows.
    windows_before = next(i for i, b in enumerate(device.batches) if [5] in b)
    assert windows_before <= 2, [len(b) for b in device.batches]
    await bulk
    await batcher.stop(5)


def _items(lengths: list[int]) -> list[list[int]]:
    return [[1] * n for n in lengths]


def _length(ids: list[int]) -> int:
    return len(ids)


def test_a_paragraph_gets_its_own_batch_instead_of_padding_the_short_ones() -> None:
    window = _items([14] * 50 + [180] + [12] * 13)
    batches = plan_batches(window, _length, max_tokens=32768, max_rows=128, pass_cost_tokens=64)
    assert [sorted({len(i) for i in b}) for b in batches] == [[12, 14], [180]]
    padded = sum(len(b) * max(len(i) for i in b) for b in batches)
    assert padded == 63 * 14 + 180  # against 64 * 180 in one batch


def test_a_high_pass_cost_keeps_the_window_whole() -> None:
    window = _items([14] * 50 + [180] + [12] * 13)
    batches = plan_batches(window, _length, max_tokens=32768, max_rows=128, pass_cost_tokens=20_000)
    assert [len(b) for b in batches] == [64]


def test_buckets_respect_the_token_budget_and_the_row_cap() -> None:
    window = _items([3] * 10 + [40] * 7 + [9] * 5)
    batches = plan_batches(window, _length, max_tokens=100, max_rows=4, pass_cost_tokens=0)
    assert sorted(len(i) for b in batches for i in b) == sorted(len(i) for i in window)
    for batch in batches:
        assert len(batch) <= 4
        assert len(batch) == 1 or len(batch) * max(len(i) for i in batch) <= 100


class SmallDevice(Device):
    """A device with memory for `rows` inputs per pass: larger batches run out of memory (what
    service.encoder raises after freeing the cache); an input of `too_long` ids never fits."""

    def __init__(self, rows: int, too_long: int = 10_000) -> None:
        super().__init__()
        self.rows = rows
        self.too_long = too_long
        self.out_of_memory: list[int] = []

    def __call__(self, batch: list[list[int]]) -> np.ndarray:
        if len(batch) > self.rows or any(len(ids) >= self.too_long for ids in batch):
            self.out_of_memory.append(len(batch))
            raise DeviceOutOfMemoryError(f"out of device memory for a batch of {len(batch)}")
        return super().__call__(batch)


async def test_out_of_memory_is_retried_in_halves_until_it_fits() -> None:
    device = SmallDevice(rows=2)
    device.release.clear()
    batcher = make(device, max_batch_size=8, max_batch_tokens=1000)
    first = asyncio.create_task(vectors(batcher, [[1]]))
    await wait_started(device)
    # Queued while the device is busy: one window of 7 inputs from two requests.
    big = asyncio.create_task(vectors(batcher, [[i, i] for i in range(2, 7)]))
    small = asyncio.create_task(vectors(batcher, [[7, 7], [8, 8]]))
    await asyncio.sleep(0)
    device.release.set()
    await first
    np.testing.assert_array_equal(await big, expected([[i, i] for i in range(2, 7)]))
    np.testing.assert_array_equal(await small, expected([[7, 7], [8, 8]]))
    assert device.out_of_memory[0] == 7  # the whole window was tried first
    assert max(len(batch) for batch in device.batches) == 2
    await batcher.stop(5)


async def test_an_input_too_large_for_the_device_fails_alone() -> None:
    device = SmallDevice(rows=8, too_long=50)
    device.release.clear()
    batcher = make(device, max_batch_size=8, max_batch_tokens=10_000)
    first = asyncio.create_task(vectors(batcher, [[1]]))
    await wait_started(device)
    huge = asyncio.create_task(vectors(batcher, [[3] * 60]))
    neighbours = asyncio.create_task(vectors(batcher, [[2, 2]] * 3))
    await asyncio.sleep(0)
    device.release.set()
    await first
    with pytest.raises(DeviceOutOfMemoryError):
        await huge
    np.testing.assert_array_equal(await neighbours, expected([[2, 2]] * 3))
    # The device still works for everyone: nothing was declared dead.
    np.testing.assert_array_equal(await vectors(batcher, [[9]]), expected([[9]]))
    await batcher.stop(5)


class DyingDevice(Device):
    """Runs one batch, then fails every call (a poisoned CUDA context)."""

    def __call__(self, batch: list[list[int]]) -> np.ndarray:
        if self.batches:
            raise DeviceFailedError("the device failed: CUDA error: an illegal memory access")
        return super().__call__(batch)


async def test_a_failed_device_fails_everything_queued_and_refuses_new_work() -> None:
    failures: list[DeviceFailedError] = []
    device = DyingDevice()
    device.release.clear()
    batcher = Batcher(
        device,
        max_batch_tokens=64,
        max_batch_size=1,
        max_queue_items=100,
        on_device_failure=failures.append,
    )
    batcher.start()
    first = asyncio.create_task(vectors(batcher, [[1]]))
    await wait_started(device)
    queued = [asyncio.create_task(vectors(batcher, [[i]])) for i in range(2, 5)]
    await asyncio.sleep(0)
    device.release.set()
    np.testing.assert_array_equal(await first, expected([[1]]))
    outcomes = await asyncio.gather(*queued, return_exceptions=True)
    assert all(isinstance(o, DeviceFailedError) for o in outcomes), outcomes
    assert len(failures) == 1
    with pytest.raises(DeviceFailedError):
        await vectors(batcher, [[5]])
    assert batcher.queued_items == 0
    await batcher.stop(5)


# --- Admission by estimated time, and shedding ---------------------------------------------------
class Clock:
    """The batcher's deadline clock, moved by the test (no sleeping)."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def frozen_timer(monkeypatch: pytest.MonkeyPatch) -> None:
    """The batcher's pass timer stands still: a measured pass takes 0 s, which the speed fit
    ignores, so the prior stays the speed however long the test held its device (a pass held for
    real wall time read as a device several times slower, and the windows that followed were
    shaped by this machine's speed)."""
    monkeypatch.setattr(batcher_module, "time", FakePerfCounter())


def timed(device: Device, clock: Clock | None = None, **kwargs: Any) -> Batcher:
    """A batcher with a 1 s latency target on a device known (the prior) to run 100 tokens/s:
    an input of 10 tokens is 0.1 s of work. The test holds the device, so no measured pass
    replaces the prior."""
    options: dict = {
        "max_batch_tokens": 1000,
        "max_batch_size": 4,
        "max_queue_items": 10_000,
        "max_queue_seconds": 1.0,
        "seconds_per_token": 0.01,
    }
    options.update(kwargs)
    batcher = Batcher(device, clock=clock or Clock(), **options)
    batcher.start()
    return batcher


TEN = [7] * 10  # one input of 10 tokens: 0.1 s on the timed device


async def test_admission_refuses_by_estimated_wait_not_by_count() -> None:
    device = Device()
    device.release.clear()
    batcher = timed(device)
    running = asyncio.create_task(vectors(batcher, [[1]]))
    await wait_started(device)
    # Seven one-input requests: a newcomer waits 0.7 s for them; eleven: 1.1 s. Each is
    # tokenised before the next comes (until then its tokens are an estimate).
    queued = []
    for count in range(1, 12):
        queued.append(asyncio.create_task(vectors(batcher, [TEN])))
        await eventually(lambda count=count: batcher.queued_tokens == 10 * count)
        if count == 7:
            assert batcher.wait_s(1) == pytest.approx(0.7)
    # 11 inputs are far from max_queue_items (10,000): the count would admit it; the time does not.
    with pytest.raises(Overloaded, match=r"wait about 1\.1 s .* target of 1 s") as caught:
        await vectors(batcher, [TEN])
    assert caught.value.retry_after_s == 1.0  # at least a second
    device.release.set()
    await asyncio.gather(running, *queued)
    await batcher.stop(5)


async def test_a_bulk_request_does_not_block_small_ones_and_a_second_bulk_waits() -> None:
    """Round robin: a one-input request waits for one input of each queued request, so it is
    admitted behind 20 s of bulk work; another bulk request would wait for all of it. The pass
    under way (here 5 s: a CPU pass can outlast the target) is committed, not counted."""
    device = Device()
    device.release.clear()
    batcher = timed(device)
    running = asyncio.create_task(vectors(batcher, [[1] * 500]))
    await wait_started(device)
    assert batcher.wait_s(200) == 0
    bulk = asyncio.create_task(vectors(batcher, [TEN] * 200))  # 20 s of work
    await eventually(lambda: batcher.queued_tokens == 2000)
    small = asyncio.create_task(vectors(batcher, [TEN]))
    await eventually(lambda: batcher.queued_tokens == 2010)
    with pytest.raises(Overloaded) as caught:
        await vectors(batcher, [TEN] * 200)
    assert caught.value.retry_after_s == pytest.approx(20.1 - 1.0)  # the wait over the target
    device.release.set()
    np.testing.assert_array_equal(await small, expected([TEN]))
    await asyncio.gather(running, bulk)
    await batcher.stop(5)


async def test_a_request_about_to_miss_its_estimate_goes_before_round_robin(
    frozen_timer: None,
) -> None:
    """Round robin alone lets newer requests stretch an admitted one past the time admission
    estimated for it: once it would end late, its remaining inputs go first."""
    device = Device()
    device.release.clear()
    clock = Clock()
    batcher = timed(device, clock)
    running = asyncio.create_task(vectors(batcher, [[1]]))
    await wait_started(device)
    early = [[8] * 10] * 4  # 0.4 s of work, due 0.41 s after admission
    first = asyncio.create_task(vectors(batcher, early))
    await eventually(lambda: batcher.queued_tokens == 40)
    clock.now += 0.3  # 0.3 s + its 0.4 s of work would end after it is due
    newer = [asyncio.create_task(vectors(batcher, [[9] * 10])) for _ in range(3)]
    await eventually(lambda: batcher.queued_tokens == 70)
    device.release.set()
    await asyncio.gather(running, first, *newer)
    # Half of the window first (2 of 4), then its round-robin turn: round robin alone would have
    # taken one of it and the 3 newer.
    assert device.batches[1] == [*early[:3], [9] * 10]


async def test_a_late_bulk_request_does_not_hold_small_ones_admitted_behind_it(
    frozen_timer: None,
) -> None:
    """Admission estimates a one-input request's wait as one input of each request ahead (round
    robin). A bulk request running late used to take whole windows until it ended, so small
    requests admitted behind it waited for all of it and, under load, were shed (11% of admitted
    queries with three bulk clients). Late work now gets half of each window."""
    device = Device()
    device.release.clear()
    clock = Clock()
    batcher = timed(device, clock)
    running = asyncio.create_task(vectors(batcher, [[1]]))
    await wait_started(device)
    bulk = asyncio.create_task(vectors(batcher, [[8] * 10] * 40))  # 4 s of work
    await eventually(lambda: batcher.queued_tokens == 400)
    clock.now += 3.9  # the bulk request now ends after it is due: late
    small = asyncio.create_task(vectors(batcher, [[9] * 10]))  # due in 0.2 s: not late yet
    await eventually(lambda: batcher.queued_tokens == 410)
    device.release.set()
    np.testing.assert_array_equal(await small, expected([[9] * 10]))
    await asyncio.gather(running, bulk)
    assert [9] * 10 in device.batches[1]  # whole late windows: the 11th
    await batcher.stop(5)


@pytest.mark.parametrize(
    ("seconds_per_token", "rows"),
    [
        pytest.param(0.01, 5, id="slow-device"),  # half the 1 s target: 50 tokens, 5 inputs
        pytest.param(1e-5, 20, id="fast-device"),  # 20 inputs run in 2 ms: max_batch_tokens
    ],
)
async def test_one_window_takes_at_most_half_the_target_at_the_devices_speed(
    seconds_per_token: float, rows: int
) -> None:
    """The window under way is committed (admission does not count it): on a CPU a window of
    max_batch_tokens held a small request admitted behind it for 11 s against a 1 s target."""
    device = Device()
    batcher = timed(
        device, max_batch_size=100, max_batch_tokens=1000, seconds_per_token=seconds_per_token
    )
    bulk = [[8] * 10] * 20
    np.testing.assert_array_equal(await vectors(batcher, bulk), expected(bulk))
    assert len(device.batches[0]) == rows  # the first window, sized by the prior speed
    await batcher.stop(5)


async def test_work_past_its_deadline_is_shed_before_the_device() -> None:
    device = Device()
    device.release.clear()
    clock = Clock()
    batcher = timed(device, clock)
    running = asyncio.create_task(vectors(batcher, [[1]]))
    await wait_started(device)
    late = asyncio.create_task(vectors(batcher, [[3, 3, 3]]))
    await eventually(lambda: batcher.queued_tokens == 3)
    clock.now += 0.5  # later than it was due (0.04 s), by less than the 1 s target: served
    device.release.set()
    await running
    np.testing.assert_array_equal(await late, expected([[3, 3, 3]]))

    device.release.clear()
    device.started.clear()
    blocker = asyncio.create_task(vectors(batcher, [[4]]))
    await wait_started(device)
    overdue = asyncio.create_task(vectors(batcher, [[5, 5]]))
    await eventually(lambda: batcher.queued_tokens == 2)
    clock.now += 2.5  # late by more than the target, and none of its inputs reached the device
    device.release.set()
    with pytest.raises(QueueTimeout, match=r"waited 2\.5 s in the queue") as caught:
        await overdue
    assert caught.value.retry_after_s >= 1.0
    await blocker
    assert [5, 5] not in [ids for batch in device.batches for ids in batch]
    assert (batcher.queued_items, batcher.queued_tokens) == (0, 0)
    await batcher.stop(5)


async def test_a_request_already_on_the_device_is_not_shed() -> None:
    device = Device()
    device.release.clear()
    clock = Clock()
    batcher = timed(device, clock, max_batch_size=2)
    bulk = asyncio.create_task(vectors(batcher, [[i] for i in range(1, 7)]))
    await wait_started(device)  # its first two inputs are on the device
    clock.now += 10
    device.release.set()
    np.testing.assert_array_equal(await bulk, expected([[i] for i in range(1, 7)]))
    await batcher.stop(5)


async def test_arrivals_past_their_deadline_are_shed_before_the_tokenizer() -> None:
    device = Device()
    clock = Clock()
    tokenizing = threading.Event()
    release = threading.Event()
    seen: list[list[list[int]]] = []

    def prepare(raws: list[list[list[int]]]) -> list[Tokenized | Exception]:
        seen.extend(raws)
        tokenizing.set()
        release.wait(10)
        return [Tokenized(ids, [False] * len(ids)) for ids in raws]

    batcher = timed(device, clock, prepare=prepare)
    first = asyncio.create_task(vectors(batcher, [[1]]))
    await asyncio.to_thread(tokenizing.wait, 5)
    overdue = asyncio.create_task(vectors(batcher, [[2]]))
    await eventually(lambda: batcher.queued_items == 2)
    clock.now += 2.5
    release.set()
    for shed in (overdue, first):  # `first` was tokenised, and shed before the device
        with pytest.raises(QueueTimeout):
            await shed
    assert seen == [[[1]]]  # `overdue` never reached the tokenizer
    assert device.batches == []
    await batcher.stop(5)


class FakePerfCounter:
    """The batcher's `time.perf_counter`, moved only by the test's device and tokenizer."""

    def __init__(self) -> None:
        self.now = 0.0

    def perf_counter(self) -> float:
        return self.now


async def test_waiting_for_the_tokenizer_is_not_read_as_device_time(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A window's time used to include the wait for a tokenizer call under way: one 10 s call
    read as a 10 s pass made the device look 50x slower to admission."""
    clock = FakePerfCounter()
    monkeypatch.setattr(batcher_module, "time", clock)
    tokenizing, stall = threading.Event(), threading.Event()

    def prepare(raws: list[list[list[int]]]) -> list[Tokenized | Exception]:
        if [3] in [ids for raw in raws for ids in raw]:
            tokenizing.set()
            stall.wait(10)
            clock.now += 10.0  # a 10 s tokenizer call
        return [Tokenized(ids, [False] * len(ids)) for ids in raws]

    class TimedDevice(Device):
        def __call__(self, batch: list[list[int]]) -> np.ndarray:
            result = super().__call__(batch)
            clock.now += 0.1  # every pass takes 0.1 s
            return result

    device = TimedDevice()
    device.release.clear()
    batcher = make(device, prepare=prepare)
    first = asyncio.create_task(vectors(batcher, [[1]]))
    await wait_started(device)
    second = asyncio.create_task(vectors(batcher, [[2]]))
    await eventually(lambda: batcher.queued_tokens == 1)
    third = asyncio.create_task(vectors(batcher, [[3]]))
    await asyncio.to_thread(tokenizing.wait, 5)
    device.release.set()
    # The loop has run the first pass and waits for the tokenizer before the next window.
    await eventually(
        lambda: len(device.batches) == 1 and not batcher._window and not batcher._has_work.is_set()
    )
    stall.set()
    await asyncio.gather(first, second, third)
    assert device.batches == [[[1]], [[2], [3]]]
    # Two passes of 0.1 s for 3 tokens, ~0.07 s a token; with the 10 s wait counted, ~3.4 s.
    speed = batcher.seconds_per_token
    assert speed is not None
    assert speed < 0.1
    await batcher.stop(5)
