"""Bare model load time: a fresh interpreter that imports torch + transformers and loads the model,
nothing else.

Run as `python -m bench.coldstart MODEL_PATH SPAWNED_AT` (SPAWNED_AT: the parent's time.time() just
before the spawn); prints one JSON line. Spawn to model loaded, interpreter start included, is the
floor for any server's cold start on this machine. The process's exit (torch teardown) is not
counted."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from dataclasses import dataclass


@dataclass(frozen=True)
class BareLoad:
    total_s: float
    """Spawn to model loaded, interpreter start included: compares with spawn-to-ready."""
    import_s: float
    load_s: float
    """Tokenizer + weights from the local folder."""


def measure_bare_load(model_path: str, timeout_s: float = 300.0) -> BareLoad:
    completed = subprocess.run(
        [sys.executable, "-m", "bench.coldstart", model_path, repr(time.time())],
        capture_output=True,
        text=True,
        timeout=timeout_s,
        check=False,
    )
    if completed.returncode != 0:
        raise RuntimeError(f"bare model load failed:\n{completed.stderr[-3000:]}")
    data = json.loads(completed.stdout.strip().splitlines()[-1])
    return BareLoad(total_s=data["total_s"], import_s=data["import_s"], load_s=data["load_s"])


def main(argv: list[str]) -> None:
    if len(argv) != 2:
        raise SystemExit("usage: python -m bench.coldstart MODEL_PATH SPAWNED_AT")
    began = time.perf_counter()
    from transformers import AutoModel, AutoTokenizer

    imported = time.perf_counter()
    AutoTokenizer.from_pretrained(argv[0])
    AutoModel.from_pretrained(argv[0]).eval()
    loaded = time.perf_counter()
    # Wall clock, not perf_counter: the spawn time was taken in another process.
    total = time.time() - float(argv[1])
    timings = {"total_s": total, "import_s": imported - began, "load_s": loaded - imported}
    print(json.dumps(timings), flush=True)


if __name__ == "__main__":
    main(sys.argv[1:])
