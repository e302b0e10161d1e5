"""Cold start of the server with a model of gte-large-zh's size: the model-load step of the scale-up
budget (README "Scale-up time budget").

    python -m bench.startup [--runs 3]     # writes bench/results/<machine>/coldstart.json

The stacks serve thenlper/gte-large-zh (BERT-large: 24 layers, 1024 wide, 16 heads, 325 M
parameters, 1.3 GB of float32 safetensors), which cannot be downloaded here. This builds a network
of that shape with random weights, offline, around the bundled MiniLM's tokenizer (30,522 tokens
instead of 21,128: 3 % more parameters) and 512-token limit, saves it as safetensors, and starts
`python -m service` on it as the pod does (warm-up on): process start to the first 200 from /ready,
next to the server's own load + warm-up gauge. A run with warm-up off gives the warm-up's share.
Startup does not depend on the weights' values, only on their size and the network's shape.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import sys
import tempfile
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Final

from bench import machine, modelfiles, scrape
from bench.procs import ServerProcess, free_port
from service import contract

HOST = "127.0.0.1"
RESULTS_DIR = Path(__file__).resolve().parent / "results"
LOG_DIR = Path("build") / "bench"
GTE_LARGE: Final[Mapping[str, int]] = {
    "hidden_size": 1024,
    "num_hidden_layers": 24,
    "num_attention_heads": 16,
    "intermediate_size": 4096,
    "max_position_embeddings": 512,
}
"""thenlper/gte-large-zh's config.json (the shape bench/gpu.py measures too)."""
_COPIED = ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json", "vocab.txt")


def build_large_model(source: Path, folder: Path, shape: Mapping[str, int] = GTE_LARGE) -> Path:
    """A random BERT of gte-large-zh's shape (or `shape`) with `source`'s tokenizer, saved as the
    Hub would."""
    import torch
    from transformers import BertConfig, BertModel

    folder.mkdir(parents=True, exist_ok=True)
    for name in _COPIED:
        if (source / name).is_file():
            shutil.copy2(source / name, folder / name)
    (folder / "1_Pooling").mkdir(exist_ok=True)
    pooling = {"word_embedding_dimension": shape["hidden_size"], "pooling_mode_cls_token": True}
    (folder / "1_Pooling" / "config.json").write_text(json.dumps(pooling))
    modules = [
        {"idx": 0, "name": "0", "path": "", "type": "sentence_transformers.models.Transformer"},
        {
            "idx": 1,
            "name": "1",
            "path": "1_Pooling",
            "type": "sentence_transformers.models.Pooling",
        },
        {
            "idx": 2,
            "name": "2",
            "path": "2_Normalize",
            "type": "sentence_transformers.models.Normalize",
        },
    ]
    (folder / "modules.json").write_text(json.dumps(modules))
    limit = {"max_seq_length": shape["max_position_embeddings"], "do_lower_case": False}
    (folder / "sentence_bert_config.json").write_text(json.dumps(limit))
    torch.manual_seed(0)
    config = BertConfig(
        vocab_size=BertConfig.from_pretrained(source).vocab_size,
        hidden_size=shape["hidden_size"],
        num_hidden_layers=shape["num_hidden_layers"],
        num_attention_heads=shape["num_attention_heads"],
        intermediate_size=shape["intermediate_size"],
        max_position_embeddings=shape["max_position_embeddings"],
    )
    BertModel(config).eval().save_pretrained(folder, safe_serialization=True)
    return folder


def start_once(model: Path, warmup: bool, log_dir: Path) -> dict[str, float | None]:
    port = free_port(HOST)
    argv = [sys.executable, *contract.COMMAND[1:], "--host", HOST, "--port", str(port)]
    env = {
        **os.environ,
        "HF_HUB_OFFLINE": "1",
        f"{contract.ENV_PREFIX}WARMUP": "true" if warmup else "false",
    }
    server = ServerProcess(
        "server",
        [*argv, "--model", str(model)],
        host=HOST,
        port=port,
        ready_path=contract.READY_PATH,
        log_path=log_dir / "startup.log",
        env=env,
    )
    with server:
        metrics = scrape.fetch_metrics(server.base_url, contract.METRICS_PATH)
        return {
            "ready_s": server.cold_start_s,
            "model_load_s": scrape.gauge_value(metrics, contract.MODEL_LOAD_SECONDS),
        }


def measure(model: Path, runs: int, log_dir: Path) -> dict[str, Any]:
    warm = [start_once(model, True, log_dir) for _ in range(runs)]
    cold = start_once(model, False, log_dir)

    def median(key: str) -> float:
        return statistics.median(float(run[key] or 0.0) for run in warm)

    load_without_warmup = float(cold["model_load_s"] or 0.0)
    return {
        "machine": machine.cpu_machine_name(),
        "cpus": machine.cpu_count(),
        "model": "random BERT of gte-large-zh's shape (bench/startup.py), float32 safetensors",
        "model_bytes": sum(f.stat().st_size for f in model.glob("*.safetensors")),
        "runs": runs,
        "ready_s": median("ready_s"),
        "model_load_and_warmup_s": median("model_load_s"),
        "model_load_without_warmup_s": load_without_warmup,
        "warmup_s": median("model_load_s") - load_without_warmup,
        "each_run": warm,
        "measured_at": time.strftime("%Y-%m-%d", time.gmtime()),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.startup", description=__doc__)
    parser.add_argument("--runs", type=int, default=3, help="starts with warm-up (median)")
    parser.add_argument("--out", type=Path, default=None, help="result file (JSON)")
    args = parser.parse_args(argv)
    out = args.out or RESULTS_DIR / machine.cpu_machine_name() / "coldstart.json"
    with tempfile.TemporaryDirectory(prefix="gte-large-shape-") as tmp:
        model = build_large_model(Path(modelfiles.default_model_path()), Path(tmp) / "model")
        result = measure(model, args.runs, LOG_DIR)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2, sort_keys=True) + "\n")
    print(
        f"cold start on {result['machine']} ({result['runs']} runs, median): process start to "
        f"/ready {result['ready_s']:.1f} s; load + warm-up "
        f"{result['model_load_and_warmup_s']:.1f} s (warm-up {result['warmup_s']:.1f} s) -> {out}"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
