"""The batcher on its own: a deterministic batch function stands in for the device where a test
needs to hold it busy or make it fail; the parity test runs the real (tiny) encoder."""

from __future__ import annotations

import asyncio
import threading
import time

import numpy as np
import pytest

from service.batcher import Batcher, BatcherStopped, Overloaded
from service.encoder import Encoder
from service.model_types import DeviceFailedError, DeviceOutOfMemoryError

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


async def wait_started(device: Device) -> None:
    await asyncio.to_thread(device.started.wait, 5)


async def test_token_budget_and_size_cap_hold_and_padding_is_sorted_away() -> None:
    device = Device()
    device.release.clear()
    batcher = make(device, max_batch_tokens=64, max_batch_size=8)
    blocker = asyncio.create_task(batcher.embed([[1]]))
    await wait_started(device)
    rng = np.random.default_rng(0)
    requests = [
        [list(range(1, int(n) + 1)) for n in rng.integers(1, 30, size=int(k))]
        for k in rng.integers(1, 12, size=20)
    ]
    tasks = [asyncio.create_task(batcher.embed(r)) for r in requests]
    await asyncio.sleep(0.05)
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
    result = await batcher.embed(ids)
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
    batched = await batcher.embed(ids)
    one_by_one = np.vstack([tiny_encoder.encode_ids([x]) for x in ids])
    np.testing.assert_allclose(batched, one_by_one, atol=1e-5)
    await batcher.stop(5)


async def test_full_queue_raises_overloaded_then_recovers() -> None:
    device = Device()
    device.release.clear()
    batcher = make(device, max_queue_items=10, max_batch_size=2)
    running = asyncio.create_task(batcher.embed([[1]]))
    await wait_started(device)
    queued = asyncio.create_task(batcher.embed([[2]] * 8))
    await asyncio.sleep(0)
    assert batcher.queued_items == 8
    with pytest.raises(Overloaded):
        await batcher.embed([[3]] * 3)
    device.release.set()
    await asyncio.gather(running, queued)
    assert batcher.queued_items == 0
    np.testing.assert_array_equal(await batcher.embed([[3]] * 3), expected([[3]] * 3))
    await batcher.stop(5)


async def test_request_larger_than_the_queue_is_admitted_when_idle() -> None:
    batcher = make(Device(), max_queue_items=8, max_batch_size=8)
    result = await batcher.embed([[1, 2]] * 20)
    assert result.shape == (20, 2)
    await batcher.stop(5)


async def test_cancelled_request_is_dropped_before_it_runs() -> None:
    device = Device()
    device.release.clear()
    batcher = make(device)
    running = asyncio.create_task(batcher.embed([[1]]))
    await wait_started(device)
    gone = asyncio.create_task(batcher.embed([[777, 778]] * 5))
    kept = asyncio.create_task(batcher.embed([[5, 6]]))
    await asyncio.sleep(0)
    assert batcher.queued_items == 6
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
    running = asyncio.create_task(batcher.embed([[1]]))
    await wait_started(device)
    # Equal lengths keep FIFO order within the window: [poison, a] fail together, [b, c] succeed.
    poisoned = asyncio.create_task(batcher.embed([[POISON, 1]]))
    neighbour = asyncio.create_task(batcher.embed([[2, 2]]))
    others = asyncio.create_task(batcher.embed([[3, 3], [4, 4]]))
    await asyncio.sleep(0)
    device.release.set()
    await running
    with pytest.raises(RuntimeError, match="device error"):
        await poisoned
    with pytest.raises(RuntimeError, match="device error"):
        await neighbour
    np.testing.assert_array_equal(await others, expected([[3, 3], [4, 4]]))
    np.testing.assert_array_equal(await batcher.embed([[9]]), expected([[9]]))
    await batcher.stop(5)


async def test_event_loop_stays_responsive_during_a_long_batch() -> None:
    def slow(batch: list[list[int]]) -> np.ndarray:
        time.sleep(0.5)
        return expected(batch)

    batcher = Batcher(slow, max_batch_tokens=64, max_batch_size=8, max_queue_items=100)
    batcher.start()
    work = asyncio.create_task(batcher.embed([[1]]))
    ticks = 0
    while not work.done():
        await asyncio.sleep(0.01)
        ticks += 1
    assert ticks >= 10  # the loop kept running other coroutines while the device was busy
    await batcher.stop(5)


async def test_stop_finishes_queued_work_then_refuses_new_work() -> None:
    device = Device()
    device.release.clear()
    batcher = make(device, max_batch_size=2)
    tasks = [asyncio.create_task(batcher.embed([[i, i]])) for i in range(1, 8)]
    await wait_started(device)
    stopping = asyncio.create_task(batcher.stop(5))
    await asyncio.sleep(0)
    with pytest.raises(BatcherStopped):
        await batcher.embed([[1]])
    device.release.set()
    await stopping
    results = await asyncio.gather(*tasks)
    assert [r[0, 0] for r in results] == [2 * i for i in range(1, 8)]


async def test_stop_timeout_fails_what_is_left() -> None:
    device = Device()
    device.release.clear()
    batcher = make(device, max_batch_size=1)
    tasks = [asyncio.create_task(batcher.embed([[i]])) for i in range(1, 4)]
    await wait_started(device)
    await batcher.stop(0.1)
    device.release.set()
    outcomes = await asyncio.gather(*tasks, return_exceptions=True)
    assert all(isinstance(o, BatcherStopped) for o in outcomes)


async def test_batch_wait_collects_more_items_when_configured() -> None:
    device = Device()
    batcher = make(device, batch_wait_s=0.05, max_batch_size=8)
    first = asyncio.create_task(batcher.embed([[1]]))
    await asyncio.sleep(0.01)
    second = asyncio.create_task(batcher.embed([[2]]))
    await asyncio.gather(first, second)
    assert len(device.batches) == 1
    assert len(device.batches[0]) == 2
    await batcher.stop(5)


async def test_a_burst_that_already_arrived_is_one_batch_without_a_timer() -> None:
    device = Device()
    batcher = make(device, max_batch_size=16, batch_wait_s=0.0)

    async def client(steps: int) -> np.ndarray:
        for _ in range(steps):  # e.g. body parsing, validation: a few loop iterations each
            await asyncio.sleep(0)
        return await batcher.embed([[steps + 1]])

    results = await asyncio.gather(*(client(k % 3) for k in range(8)))
    assert len(results) == 8
    assert [len(batch) for batch in device.batches] == [8]
    await batcher.stop(5)


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
    first = asyncio.create_task(batcher.embed([[1]]))
    await wait_started(device)
    # Queued while the device is busy: one window of 7 inputs from two requests.
    big = asyncio.create_task(batcher.embed([[i, i] for i in range(2, 7)]))
    small = asyncio.create_task(batcher.embed([[7, 7], [8, 8]]))
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
    first = asyncio.create_task(batcher.embed([[1]]))
    await wait_started(device)
    huge = asyncio.create_task(batcher.embed([[3] * 60]))
    neighbours = asyncio.create_task(batcher.embed([[2, 2]] * 3))
    await asyncio.sleep(0)
    device.release.set()
    await first
    with pytest.raises(DeviceOutOfMemoryError):
        await huge
    np.testing.assert_array_equal(await neighbours, expected([[2, 2]] * 3))
    # The device still works for everyone: nothing was declared dead.
    np.testing.assert_array_equal(await batcher.embed([[9]]), expected([[9]]))
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
    first = asyncio.create_task(batcher.embed([[1]]))
    await wait_started(device)
    queued = [asyncio.create_task(batcher.embed([[i]])) for i in range(2, 5)]
    await asyncio.sleep(0)
    device.release.set()
    np.testing.assert_array_equal(await first, expected([[1]]))
    outcomes = await asyncio.gather(*queued, return_exceptions=True)
    assert all(isinstance(o, DeviceFailedError) for o in outcomes), outcomes
    assert len(failures) == 1
    with pytest.raises(DeviceFailedError):
        await batcher.embed([[5]])
    assert batcher.queued_items == 0
    await batcher.stop(5)
