"""Oversized heads: one huge header value, a hundred thousand header fields, and connections that
keep sending a head that never ends.

1. A 10 MB header value: what the server answers, after how many bytes and how long.
2. 100,000 header fields: the same.
3. Ten connections each sending 5 MB of an unfinished header: the server's memory meanwhile, and a
   small request's latency.
"""

from __future__ import annotations

import asyncio

from bench.hostile.common import (
    Exchange,
    HostileOptions,
    Probe,
    ScenarioResult,
    rss_mb,
    running_server,
    status_of,
    stream_until_answered,
)

MB = 1024 * 1024
HEAD = b"GET /health HTTP/1.1\r\nHost: x\r\n"


def _answer_line(exchange: Exchange, what: str) -> str:
    return (
        f"{status_of(exchange.answer)}, {exchange.ending()} (the client had written "
        f"{exchange.sent / MB:.2f} MB of {what} by then)"
    )


async def unfinished_heads(port: int, pid: int, connections: int, each_bytes: int) -> str:
    probe = Probe(port)
    probe.start()
    rss_before = rss_mb(pid)
    peak = rss_before

    async def watch() -> None:
        nonlocal peak
        while True:
            peak = max(peak, rss_mb(pid))
            await asyncio.sleep(0.1)

    watcher = asyncio.create_task(watch())
    # Each sends its head a piece at a time until the server answers, or else each_bytes of it
    # and then its end (a server without a limit answers then).
    answers = await asyncio.gather(
        *(
            asyncio.to_thread(
                stream_until_answered,
                port,
                HEAD + b"X-Big: ",
                b"v" * 65536,
                each_bytes,
                b"\r\n\r\n",
            )
            for _ in range(connections)
        )
    )
    watcher.cancel()
    await probe.stop()
    statuses = sorted({status_of(exchange.answer) for exchange in answers})
    held = sum(exchange.sent for exchange in answers) / MB
    return (
        f"{connections} connections sent {held:.1f} MB of unfinished headers in all "
        f"(answers: {', '.join(statuses)}); RSS {rss_before:.0f} MB, peak {peak:.0f} MB; "
        f"small requests meanwhile: {probe.summary()}"
    )


def run(options: HostileOptions) -> ScenarioResult:
    result = ScenarioResult("oversized headers")
    with running_server(options, "headers") as server:
        assert server.pid is not None
        exchange = stream_until_answered(
            server.port, HEAD + b"X-Big: ", b"v" * 65536, 10 * MB, b"\r\n\r\n"
        )
        result.add("one 10 MB header value", _answer_line(exchange, "the value"))
        field = b"X-F: 1\r\n"
        exchange = stream_until_answered(
            server.port, HEAD, field * 1000, len(field) * 100_000, b"\r\n"
        )
        result.add(
            "100,000 header fields",
            f"{status_of(exchange.answer)}, {exchange.ending()} (the client had written "
            f"{exchange.sent // len(field):,} fields by then)",
        )
        result.add(
            "unfinished heads",
            asyncio.run(unfinished_heads(server.port, server.pid, 10, 5 * MB)),
        )
    return result
