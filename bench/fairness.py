"""Fairness: how long a one-input request waits when it arrives just behind a bulk request.

Interactive queries and bulk indexing share one queue in real deployments. The probe sends a bulk
request (`--bulk` paragraphs of the `long` corpus: several batches of work), and once its first
batch is running, a one-sentence request; it records the small request's latency next to the bulk
request's and next to the small request alone on an idle server. A server that serves its queue
first come, first served makes the small request wait for the whole bulk request; ours takes each
window round robin over the queued requests, so it waits for about the window that is running
(service/batcher.py). `make bench` runs it against our server; the same probe against another
server (an older commit) gives the "before":

    python -m bench.fairness --url http://127.0.0.1:8000 [--bulk 384] [--repeats 2]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass

import httpx

from bench.corpus import make_texts
from service import contract

BULK_INPUTS = 384
"""Three windows of MiniLM paragraphs at the default limits (128 inputs, 32768 tokens)."""
HEAD_START_S = 0.5
"""The small request leaves this long after the bulk one: its first window is running by then."""


@dataclass(frozen=True)
class FairnessRun:
    small_alone_ms: float
    small_behind_bulk_ms: float
    bulk_ms: float
    small_status: int
    bulk_status: int

    @property
    def share_of_bulk(self) -> float:
        """The small request's wait as a share of the bulk request's time (1.0: it waited for all
        of it, as behind a first-come-first-served queue)."""
        return self.small_behind_bulk_ms / self.bulk_ms if self.bulk_ms else float("nan")


@dataclass(frozen=True)
class FairnessResult:
    bulk_inputs: int
    runs: list[FairnessRun]

    def to_json(self) -> dict[str, object]:
        return {
            "bulk_inputs": self.bulk_inputs,
            "head_start_s": HEAD_START_S,
            "runs": [asdict(run) | {"share_of_bulk": run.share_of_bulk} for run in self.runs],
        }


async def probe(url: str, model: str, bulk: int = BULK_INPUTS, repeats: int = 2) -> FairnessResult:
    paragraphs = make_texts("long", bulk, seed=7)
    query = make_texts("short", 1, seed=7)[0]
    endpoint = url + contract.EMBEDDINGS_PATH
    runs = []
    async with httpx.AsyncClient(timeout=600) as client:

        async def post(inputs: list[str]) -> tuple[int, float]:
            start = time.perf_counter()
            response = await client.post(endpoint, json={"input": inputs, "model": model})
            return response.status_code, (time.perf_counter() - start) * 1000

        await post([query])  # connections and the first pass out of the way
        for _ in range(repeats):
            _, alone_ms = await post([query])
            bulk_task = asyncio.create_task(post(paragraphs))
            await asyncio.sleep(HEAD_START_S)
            small_status, small_ms = await post([query])
            bulk_status, bulk_ms = await bulk_task
            runs.append(FairnessRun(alone_ms, small_ms, bulk_ms, small_status, bulk_status))
    return FairnessResult(bulk, runs)


def format_lines(result: FairnessResult) -> list[str]:
    rows = [
        "| run | small alone ms | small behind bulk ms | bulk ms | small / bulk |",
        "|---:|---:|---:|---:|---:|",
    ]
    for i, run in enumerate(result.runs, start=1):
        rows.append(
            f"| {i} | {run.small_alone_ms:.0f} | {run.small_behind_bulk_ms:.0f} | "
            f"{run.bulk_ms:.0f} | {run.share_of_bulk:.2f} |"
        )
    return rows


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.fairness", description=__doc__)
    parser.add_argument("--url", required=True, help="the server's base URL")
    parser.add_argument("--model", default="all-MiniLM-L6-v2", help="the `model` to send")
    parser.add_argument("--bulk", type=int, default=BULK_INPUTS, help="inputs of the bulk request")
    parser.add_argument("--repeats", type=int, default=2)
    args = parser.parse_args(argv)
    result = asyncio.run(probe(args.url, args.model, args.bulk, args.repeats))
    print("\n".join(format_lines(result)))
    print(json.dumps(result.to_json()))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
