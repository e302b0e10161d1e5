"""GPU mode (`python -m bench --gpu`, `make bench-gpu`): tokens/s and model FLOPs utilisation (MFU)
of the production architecture's forward pass.

The model is thenlper/gte-large-zh's architecture (BERT-large: 24 layers, hidden 1024, 16 heads,
intermediate 4096, vocabulary 21128) with random weights: throughput does not depend on the weight
values, and nothing is downloaded. Full-length sequences of 128 and 512 tokens (no padding, so every
FLOP counted is useful work) run in fp16/bf16 with SDPA attention under `torch.inference_mode`, at
several batch sizes; the best batch per length is the headline.

MFU = model FLOPs per second / the GPU's dense bf16 tensor peak. Model FLOPs count the matrix
multiplies of the forward pass (2 FLOPs per multiply-add): per layer and sequence of L tokens with
hidden h and intermediate i, 2L(4h^2 + 2hi) for the projections and the MLP plus 4L^2h for attention
scores and values. Embedding lookups, layer norms, softmax and GELU are not counted (the usual
convention). The peak is the datasheet number for the detected GPU (`PEAK_BF16_DENSE_TFLOPS`), or
`--peak-tflops` for any other."""

from __future__ import annotations

import argparse
import json
import re
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final, cast

from bench.machine import gpu_machine_name

if TYPE_CHECKING:
    import torch


@dataclass(frozen=True)
class BertShape:
    layers: int = 24
    hidden: int = 1024
    heads: int = 16
    intermediate: int = 4096
    vocab: int = 21128
    max_positions: int = 512


GTE_LARGE_ZH: Final = BertShape()
"""thenlper/gte-large-zh's config.json, the production model (contract.PRODUCTION_MODEL)."""

# Dense (no sparsity) bf16 tensor-core peaks from NVIDIA's datasheets, in TFLOP/s. The first name
# found (as whole words) in torch.cuda.get_device_name() wins: specific names come first.
PEAK_BF16_DENSE_TFLOPS: Final = (
    ("H200 NVL", 835.5),
    ("H200", 989.4),  # SXM: the same GH100 silicon and clocks as H100 SXM
    ("H100 NVL", 835.5),
    ("H100 PCIe", 756.5),
    ("H100", 989.4),  # SXM5 ("NVIDIA H100 80GB HBM3")
    ("A100", 312.0),
    ("L40S", 362.05),
    ("L4", 121.0),
    ("A10", 125.0),  # A10 only; A10G is not listed (no public datasheet peak): pass --peak-tflops
)


class GpuUnavailableError(SystemExit):
    """Raised (as an exit with a message) where the GPU benchmark cannot run."""


def peak_tflops(device_name: str, override: float | None = None) -> tuple[float, str]:
    """The dense bf16 peak used for MFU and where it came from."""
    if override is not None:
        return override, "--peak-tflops"
    for name, peak in PEAK_BF16_DENSE_TFLOPS:
        # Whole words only: "A10" must not match "A10G", nor "L4" match "L40S".
        if re.search(rf"(?<!\w){re.escape(name)}(?!\w)", device_name, re.IGNORECASE):
            return peak, f"datasheet dense bf16 peak of {name}"
    known = ", ".join(name for name, _ in PEAK_BF16_DENSE_TFLOPS)
    raise GpuUnavailableError(
        f"no dense bf16 peak known for {device_name!r} (known: {known}); "
        "pass --peak-tflops with the datasheet value without sparsity"
    )


def forward_flops(shape: BertShape, batch: int, seq_len: int) -> float:
    """Matrix-multiply FLOPs of one forward pass over `batch` sequences of `seq_len` tokens."""
    h, i, length = shape.hidden, shape.intermediate, seq_len
    per_layer = 2 * length * (4 * h * h + 2 * h * i) + 4 * length * length * h
    return float(batch * shape.layers * per_layer)


@dataclass(frozen=True)
class GpuPoint:
    seq_len: int
    batch: int
    compiled: bool
    iterations: int
    seconds_per_batch: float
    tokens_per_s: float
    sequences_per_s: float
    tflops: float
    mfu: float


def build_model(shape: BertShape, dtype: torch.dtype, device: torch.device) -> torch.nn.Module:
    """BERT with random weights; no pooler (sentence embedding servers pool last_hidden_state)."""
    import torch
    from transformers import BertConfig, BertModel

    config = BertConfig(
        vocab_size=shape.vocab,
        hidden_size=shape.hidden,
        num_hidden_layers=shape.layers,
        num_attention_heads=shape.heads,
        intermediate_size=shape.intermediate,
        max_position_embeddings=shape.max_positions,
    )
    model = BertModel._from_config(config, attn_implementation="sdpa", add_pooling_layer=False)
    # torch.nn.Module.to: transformers' wrapper of `to` hides its signature from mypy.
    return torch.nn.Module.to(model, device=device, dtype=dtype).eval()


def measure(
    model: torch.nn.Module,
    shape: BertShape,
    *,
    batch: int,
    seq_len: int,
    device: torch.device,
    peak_flops: float,
    compiled: bool = False,
    min_seconds: float = 2.0,
    min_iterations: int = 10,
    warmup: int = 3,
) -> GpuPoint:
    """Time forward passes of one batch shape (after warm-up) and derive tokens/s and MFU."""
    import torch

    generator = torch.Generator().manual_seed(0)
    input_ids = torch.randint(0, shape.vocab, (batch, seq_len), generator=generator).to(device)
    # A mask like the server sends (all ones: full-length sequences): the same attention path.
    attention_mask = torch.ones_like(input_ids)

    def step() -> None:
        model(input_ids=input_ids, attention_mask=attention_mask)

    with torch.inference_mode():
        for _ in range(warmup):
            step()
        _synchronize(device)
        iterations = 0
        began = time.perf_counter()
        while iterations < min_iterations or time.perf_counter() - began < min_seconds:
            step()
            iterations += 1
            if iterations % min_iterations == 0:
                _synchronize(device)  # bound the queue, so the clock check means something
        _synchronize(device)
        elapsed = time.perf_counter() - began
    per_batch = elapsed / iterations
    flops_per_s = forward_flops(shape, batch, seq_len) / per_batch
    return GpuPoint(
        seq_len=seq_len,
        batch=batch,
        compiled=compiled,
        iterations=iterations,
        seconds_per_batch=per_batch,
        tokens_per_s=batch * seq_len / per_batch,
        sequences_per_s=batch / per_batch,
        tflops=flops_per_s / 1e12,
        mfu=flops_per_s / peak_flops,
    )


def _synchronize(device: torch.device) -> None:
    import torch

    if device.type == "cuda":
        torch.cuda.synchronize(device)


def main(args: argparse.Namespace, results_dir: Path, command: str) -> int:
    import torch

    if not torch.cuda.is_available():
        raise GpuUnavailableError(
            "GPU mode needs a CUDA GPU, and torch.cuda.is_available() is False here "
            f"(torch {torch.__version__}, CUDA build {torch.version.cuda or 'none'}). "
            "Run `make bench-gpu` on a machine with an NVIDIA GPU and a CUDA build of torch."
        )
    device = torch.device("cuda")
    device_name = torch.cuda.get_device_name(device)
    peak, peak_source = peak_tflops(device_name, args.peak_tflops)
    dtype = {"bfloat16": torch.bfloat16, "float16": torch.float16}[args.dtype]
    model = build_model(GTE_LARGE_ZH, dtype, device)
    points = _sweep(model, args, device, peak * 1e12, compiled=False)
    if args.compile:
        compiled = cast("torch.nn.Module", torch.compile(model))
        points += _sweep(compiled, args, device, peak * 1e12, compiled=True)
    machine = args.machine or gpu_machine_name(device_name)
    meta = {
        "command": command,
        "started_at": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
        "device": device_name,
        "machine": machine,
        "dtype": args.dtype,
        "peak_tflops": peak,
        "peak_source": peak_source,
        "shape": asdict(GTE_LARGE_ZH),
        "torch": torch.__version__,
        "cuda": torch.version.cuda,
    }
    out_dir = results_dir / machine
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / "gpu.json").write_text(
        json.dumps({"meta": meta, "points": [asdict(p) for p in points]}, indent=2) + "\n"
    )
    (out_dir / "gpu.md").write_text(render_markdown(meta, points))
    print(f"\nreport: {out_dir / 'gpu.md'}")
    for line in headline(points):
        print("  " + line)
    return 0


def _sweep(
    model: torch.nn.Module,
    args: argparse.Namespace,
    device: torch.device,
    peak_flops: float,
    *,
    compiled: bool,
) -> list[GpuPoint]:
    import torch

    points = []
    for seq_len in args.seq_lens:
        for tokens in args.tokens_per_batch:
            batch = max(1, tokens // seq_len)
            try:
                point = measure(
                    model,
                    GTE_LARGE_ZH,
                    batch=batch,
                    seq_len=seq_len,
                    device=device,
                    peak_flops=peak_flops,
                    compiled=compiled,
                )
            except torch.cuda.OutOfMemoryError:
                print(f"seq {seq_len} batch {batch}: out of memory, skipped")
                torch.cuda.empty_cache()
                continue
            print(
                f"seq {seq_len:4} batch {batch:4} compiled={compiled}: "
                f"{point.tokens_per_s:,.0f} tokens/s, {point.tflops:.0f} TFLOP/s, "
                f"MFU {point.mfu:.1%}"
            )
            points.append(point)
    return points


def best_points(points: list[GpuPoint]) -> list[GpuPoint]:
    """The fastest batch per (sequence length, compiled)."""
    best: dict[tuple[int, bool], GpuPoint] = {}
    for point in points:
        key = (point.seq_len, point.compiled)
        if key not in best or point.tokens_per_s > best[key].tokens_per_s:
            best[key] = point
    return [best[key] for key in sorted(best)]


MFU_TARGET_AT_512: Final = 0.40
"""Issue #6: >= 40% MFU at sequence length 512 on an H100."""


def headline(points: list[GpuPoint]) -> list[str]:
    lines = []
    for point in best_points(points):
        line = (
            f"seq {point.seq_len}{' compiled' if point.compiled else ''}: "
            f"{point.tokens_per_s:,.0f} tokens/s, MFU {point.mfu:.1%} (batch {point.batch})"
        )
        if point.seq_len == 512:
            met = "met" if point.mfu >= MFU_TARGET_AT_512 else "MISSED"
            line += f" (target >= {MFU_TARGET_AT_512:.0%}: {met})"
        lines.append(line)
    return lines


def render_markdown(meta: dict[str, Any], points: list[GpuPoint]) -> str:
    lines = [
        f"# GPU benchmark: gte-large-zh architecture on {meta['device']}",
        "",
        f"Measured {meta['started_at']} by `{meta['command']}`; torch {meta['torch']}, "
        f"CUDA {meta['cuda']}, {meta['dtype']}, SDPA attention, random weights, "
        "full-length sequences.",
        "",
        f"MFU = model FLOPs/s / {meta['peak_tflops']:g} TFLOP/s ({meta['peak_source']}). "
        "Model FLOPs: the forward pass's matrix multiplies (see bench/gpu.py).",
        "",
        "## Best batch per sequence length",
        "",
        *(f"- {line}" for line in headline(points)),
        "",
        "## All points",
        "",
        "| seq len | batch | compiled | ms / batch | tokens/s | sequences/s | TFLOP/s | MFU |",
        "|---:|---:|---|---:|---:|---:|---:|---:|",
    ]
    for p in points:
        lines.append(
            f"| {p.seq_len} | {p.batch} | {'yes' if p.compiled else 'no'} | "
            f"{p.seconds_per_batch * 1000:.1f} | {p.tokens_per_s:,.0f} | "
            f"{p.sequences_per_s:,.1f} | {p.tflops:.1f} | {p.mfu:.1%} |"
        )
    return "\n".join(lines) + "\n"
