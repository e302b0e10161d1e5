"""Soak: does the server's memory stay flat under steady load?

Closed-loop clients (`--soak-clients`, 8) send requests of 1 to 64 inputs of the mixed corpus
(short queries and paragraphs, so tensor shapes and allocation sizes keep changing, as in real
traffic) for `--soak-minutes` (10 by default) per allocator. The server's resident memory is read
every 2 s from /proc; the figure is the least-squares slope of RSS over time, in MB per minute,
after the first tenth of the run (the warm-up: pools, caches and arenas reach their working size).
A server that leaks or fragments keeps a positive slope; a flat one is ~0.

Allocators: glibc (the default malloc) and jemalloc (LD_PRELOAD of Debian's libjemalloc2, what the
image runs: Dockerfile), each in its own fresh server, one after the other.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Sequence
from dataclasses import dataclass

from bench.corpus import make_texts
from bench.hostile.common import (
    HOST,
    HostileOptions,
    ScenarioResult,
    rss_mb,
    running_server,
)
from bench.httpclient import Connection, HttpError, build_request
from service import contract

SAMPLE_EVERY_S = 2.0
BATCH_SIZES = (1, 4, 16, 64, 2, 32, 8)
WARMUP_SHARE = 0.1


@dataclass(frozen=True)
class SoakRun:
    allocator: str
    seconds: float
    samples: list[tuple[float, float]]
    """(seconds since the start, RSS MB)."""
    requests: int
    inputs: int
    errors: int

    @property
    def measured(self) -> list[tuple[float, float]]:
        cut = self.seconds * WARMUP_SHARE
        return [(t, m) for t, m in self.samples if t >= cut]

    @property
    def slope_mb_per_min(self) -> float:
        return slope(self.measured) * 60

    def line(self) -> str:
        measured = self.measured
        start, end = measured[0][1], measured[-1][1]
        peak = max(m for _, m in self.samples)
        return (
            f"{self.slope_mb_per_min:+.1f} MB/min ({start:.0f} -> {end:.0f} MB after warm-up, "
            f"peak {peak:.0f} MB; {self.inputs / self.seconds:.0f} inputs/s, "
            f"{self.errors} errors)"
        )


def slope(points: Sequence[tuple[float, float]]) -> float:
    """Least-squares slope of y over x."""
    n = len(points)
    if n < 2:
        return 0.0
    mean_x = sum(x for x, _ in points) / n
    mean_y = sum(y for _, y in points) / n
    var = sum((x - mean_x) ** 2 for x, _ in points)
    cov = sum((x - mean_x) * (y - mean_y) for x, y in points)
    return cov / var if var else 0.0


def payloads(port: int) -> list[tuple[bytes, int]]:
    texts = make_texts("mixed", 4096, seed=11)
    requests = []
    start = 0
    for i in range(256):
        size = BATCH_SIZES[i % len(BATCH_SIZES)]
        batch = [texts[(start + j) % len(texts)] for j in range(size)]
        start += size
        body = json.dumps({"input": batch}).encode()
        requests.append((build_request("POST", HOST, port, contract.EMBEDDINGS_PATH, body), size))
    return requests


async def load(port: int, pid: int, seconds: float, clients: int, allocator: str) -> SoakRun:
    requests = payloads(port)
    samples: list[tuple[float, float]] = []
    counts = {"requests": 0, "inputs": 0, "errors": 0}
    start = time.perf_counter()
    deadline = start + seconds

    async def client(offset: int) -> None:
        connection = Connection(HOST, port)
        i = offset
        try:
            while time.perf_counter() < deadline:
                request, size = requests[i % len(requests)]
                i += clients
                try:
                    response = await connection.send(request)
                except (OSError, HttpError):
                    counts["errors"] += 1
                    continue
                counts["requests"] += 1
                if response.status == 200:
                    counts["inputs"] += size
                else:
                    counts["errors"] += 1
        finally:
            connection.close()

    async def sampler() -> None:
        while (now := time.perf_counter()) < deadline:
            samples.append((now - start, rss_mb(pid)))
            await asyncio.sleep(SAMPLE_EVERY_S)

    await asyncio.gather(sampler(), *(client(k) for k in range(clients)))
    return SoakRun(allocator, seconds, samples, **counts)


def run(options: HostileOptions) -> ScenarioResult:
    result = ScenarioResult("soak")
    for allocator in options.allocators:
        with running_server(options, f"soak-{allocator}", allocator) as server:
            assert server.pid is not None
            soak = asyncio.run(
                load(server.port, server.pid, options.soak_s, options.soak_clients, allocator)
            )
        result.add(f"memory slope, {allocator}", soak.line())
    result.notes.append(
        f"{options.soak_clients} closed-loop clients, requests of 1-64 mixed-corpus inputs, "
        f"{options.soak_s / 60:g} min per allocator; slope of RSS after the first "
        f"{WARMUP_SHARE:.0%} (least squares, one sample every {SAMPLE_EVERY_S:g} s)."
    )
    return result
