"""Slow connections: slowloris, silent and idle connections, and a flood past the connection limit.

1. `--slow-connections` (200) slowloris connections (a request line, then one header byte every
   3 s) and as many silent ones (connected, nothing sent) for `--abuse-seconds` (30): how many the
   server still holds open at the end, its memory, and a small request's latency meanwhile.
2. A flood of silent connections past the server's connection limit (EMBED_MAX_CONNECTIONS + 500,
   opened as fast as the client can): how many the server holds, and whether a probe on a new
   connection (as the kubelet's come) and a small request still get through.
"""

from __future__ import annotations

import asyncio
import time

import httpx

from bench.hostile.common import (
    HostileOptions,
    Probe,
    ScenarioResult,
    open_raw,
    rss_mb,
    running_server,
)
from bench.scrape import fetch_metrics, gauge_value
from service import contract

SLOWLORIS_EVERY_S = 3.0
FLOOD_BEYOND_LIMIT = 500


async def _slowloris(port: int, stop: asyncio.Event) -> bool:
    """One slowloris connection until `stop`; whether the server still held it then."""
    try:
        reader, writer = await open_raw(port)
    except OSError:
        return False
    closed = asyncio.create_task(reader.read())  # ends when the server closes
    stopped = asyncio.create_task(stop.wait())
    try:
        writer.write(b"POST /v1/embeddings HTTP/1.1\r\nHost: x\r\n")
        while not stopped.done() and not closed.done():
            writer.write(b"X")
            await writer.drain()
            await asyncio.wait(
                {closed, stopped}, timeout=SLOWLORIS_EVERY_S, return_when=asyncio.FIRST_COMPLETED
            )
        return not closed.done()
    except OSError:
        return False
    finally:
        closed.cancel()
        stopped.cancel()
        writer.close()


async def _silent(port: int, stop: asyncio.Event) -> bool:
    try:
        reader, writer = await open_raw(port)
    except OSError:
        return False
    try:
        read = asyncio.create_task(reader.read())
        waiting = asyncio.create_task(stop.wait())
        await asyncio.wait({read, waiting}, return_when=asyncio.FIRST_COMPLETED)
        still_open = not read.done()
        read.cancel()
        waiting.cancel()
        return still_open
    finally:
        writer.close()


async def slow_and_silent(port: int, pid: int, count: int, seconds: float) -> list[str]:
    stop = asyncio.Event()
    rss_before = rss_mb(pid)
    probe = Probe(port)
    probe.start()
    slow = [asyncio.create_task(_slowloris(port, stop)) for _ in range(count)]
    silent = [asyncio.create_task(_silent(port, stop)) for _ in range(count)]
    await asyncio.sleep(seconds)
    rss_during = rss_mb(pid)
    stop.set()
    slow_open = sum(await asyncio.gather(*slow))
    silent_open = sum(await asyncio.gather(*silent))
    await probe.stop()
    return [
        f"{slow_open} of {count} slowloris and {silent_open} of {count} silent connections "
        f"still open after {seconds:g} s",
        f"RSS {rss_before:.0f} -> {rss_during:.0f} MB",
        f"small requests meanwhile: {probe.summary()}",
    ]


async def flood(base_url: str, port: int, pid: int, limit: int) -> list[str]:
    wanted = limit + FLOOD_BEYOND_LIMIT
    writers = []
    refused = 0
    rss_before = rss_mb(pid)
    start = time.perf_counter()
    for _ in range(wanted):
        try:
            _, writer = await open_raw(port)
        except OSError:
            refused += 1
            continue
        writers.append(writer)
    opened_s = time.perf_counter() - start
    await asyncio.sleep(1.0)  # let the server's accept loop catch up
    metrics = await asyncio.to_thread(fetch_metrics, base_url, contract.METRICS_PATH)
    held = gauge_value(metrics, contract.CONNECTIONS_OPEN)
    probe_start = time.perf_counter()
    async with httpx.AsyncClient(timeout=60) as client:
        health = await client.get(base_url + contract.HEALTH_PATH)
        probe_ms = (time.perf_counter() - probe_start) * 1000
        embed = await client.post(base_url + contract.EMBEDDINGS_PATH, json={"input": "hi"})
    rss_during = rss_mb(pid)
    for writer in writers:
        writer.close()
    return [
        f"{len(writers)} of {wanted} silent connections opened in {opened_s:.1f} s "
        f"({refused} refused at connect); the server held "
        + ("?" if held is None else f"{held:.0f}")
        + f" (limit {limit})",
        f"a probe on a new connection: {health.status_code} in {probe_ms:.0f} ms; "
        f"a small request: {embed.status_code}",
        f"RSS {rss_before:.0f} -> {rss_during:.0f} MB",
    ]


def run(options: HostileOptions) -> ScenarioResult:
    from service.settings import Settings

    result = ScenarioResult("slow connections")
    configured = dict(options.server_env).get("EMBED_MAX_CONNECTIONS")
    limit = int(configured) if configured else Settings().max_connections
    with running_server(options, "slowconn") as server:
        assert server.pid is not None
        lines = asyncio.run(
            slow_and_silent(server.port, server.pid, options.slow_connections, options.abuse_s)
        )
        result.add("slowloris and silent connections", "; ".join(lines))
        lines = asyncio.run(flood(server.base_url, server.port, server.pid, limit))
        result.add("flood past the connection limit", "; ".join(lines))
        metrics = fetch_metrics(server.base_url, contract.METRICS_PATH)
    result.add("rejections counted", rejections(metrics))
    return result


def rejections(metrics: str) -> str:
    from prometheus_client.parser import text_string_to_metric_families

    counts = []
    for family in text_string_to_metric_families(metrics):
        if family.name == contract.HTTP_REJECTIONS_TOTAL.removesuffix("_total"):
            counts += [
                f"{sample.labels['reason']} {sample.value:.0f}"
                for sample in family.samples
                if sample.value and sample.name.endswith("_total")
            ]
    return ", ".join(counts) or "none (or not counted by this server)"
