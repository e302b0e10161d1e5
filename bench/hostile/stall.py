"""The stall behind a huge input: one text of ~15 MB (or the largest body the server accepts),
and meanwhile small requests, one at a time.

Figures: the huge request's status and time, the small requests' latency while it runs, the
server's peak memory during it (VmHWM, reset just before) and its memory after, per allocator.
"""

from __future__ import annotations

import asyncio
import json
import time

import httpx

from bench.corpus import make_texts
from bench.hostile.common import (
    HostileOptions,
    Probe,
    ScenarioResult,
    peak_rss_mb,
    reset_peak,
    rss_mb,
    running_server,
)
from service import contract

HUGE_BYTES = 15_000_000
SETTLE_S = 2.0
"""After the huge request, how long before memory is read again (the allocator's purge)."""


def huge_body(limit_bytes: int) -> bytes:
    words = " ".join(make_texts("long", 64, seed=3))
    size = min(HUGE_BYTES, limit_bytes - 1024)
    text = (words * (size // len(words) + 1))[:size]
    return json.dumps({"input": text}).encode()


async def huge_and_small(base_url: str, port: int, pid: int) -> list[str]:
    async with httpx.AsyncClient(base_url=base_url, timeout=600) as client:
        limits = (await client.get(contract.INFO_PATH)).json().get("limits", {})
        body = huge_body(int(limits.get("max_request_bytes", 16 * 1024 * 1024)))
        await client.post(contract.EMBEDDINGS_PATH, json={"input": "warm up"})
        rss_before = rss_mb(pid)
        reset_peak(pid)
        probe = Probe(port)
        start = time.perf_counter()
        huge = asyncio.create_task(
            client.post(
                contract.EMBEDDINGS_PATH,
                content=body,
                headers={"content-type": "application/json"},
            )
        )
        probe.start()
        response = await huge
        huge_s = time.perf_counter() - start
        await probe.stop()
        peak = peak_rss_mb(pid)
        await asyncio.sleep(SETTLE_S)
        rss_after = rss_mb(pid)
    detail = ""
    if response.status_code != 200:
        detail = " " + str(response.json().get("error", {}).get("code"))
    return [
        f"a {len(body) / 1e6:.1f} MB text: {response.status_code}{detail} in {huge_s:.1f} s",
        f"small requests meanwhile: {probe.summary()}",
        f"RSS {rss_before:.0f} MB before, peak {peak:.0f} MB (+{peak - rss_before:.0f}), "
        f"{rss_after:.0f} MB {SETTLE_S:g} s after",
    ]


def run(options: HostileOptions) -> ScenarioResult:
    result = ScenarioResult("stall behind a huge input")
    for allocator in options.allocators:
        with running_server(options, f"stall-{allocator}", allocator) as server:
            assert server.pid is not None
            lines = asyncio.run(huge_and_small(server.base_url, server.port, server.pid))
        result.add(f"one huge text, {allocator}", "; ".join(lines))
    return result
