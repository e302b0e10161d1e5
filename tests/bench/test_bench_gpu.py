"""GPU mode pieces that run anywhere: FLOP count, peak lookup, the timing loop on a tiny CPU model,
and the clear refusal on a machine without CUDA."""

from __future__ import annotations

import pytest
import torch

from bench import gpu
from bench.__main__ import build_parser, main


def test_forward_flops_counts_projections_mlp_and_attention() -> None:
    shape = gpu.BertShape(layers=2, hidden=8, heads=2, intermediate=32, vocab=100)
    # Per layer and sequence of 4 tokens: QKV + output projections 4 x (2*4*8*8),
    # MLP 2 x (2*4*8*32), scores and weighted values 2 x (2*4*4*8).
    per_layer = 4 * 512 + 2 * 2048 + 2 * 256
    assert gpu.forward_flops(shape, batch=3, seq_len=4) == 3 * 2 * per_layer


def test_gte_large_zh_costs_a_third_of_a_teraflop_per_512_token_sequence() -> None:
    # 24 layers x (2*512*(4*1024^2 + 2*1024*4096) + 4*512^2*1024) = 3.350e11.
    flops = gpu.forward_flops(gpu.GTE_LARGE_ZH, batch=1, seq_len=512)
    assert flops == pytest.approx(3.350e11, rel=1e-3)


@pytest.mark.parametrize(
    ("device_name", "peak"),
    [
        ("NVIDIA H100 80GB HBM3", 989.4),
        ("NVIDIA H100 PCIe", 756.5),
        ("NVIDIA H200", 989.4),
        ("NVIDIA H200 NVL", 835.5),
        ("NVIDIA A100-SXM4-80GB", 312.0),
        ("NVIDIA L4", 121.0),
        ("NVIDIA L40S", 362.05),
        ("NVIDIA A10", 125.0),
    ],
)
def test_peak_is_looked_up_from_the_device_name(device_name: str, peak: float) -> None:
    assert gpu.peak_tflops(device_name)[0] == peak


def test_unknown_gpu_needs_an_explicit_peak() -> None:
    with pytest.raises(gpu.GpuUnavailableError, match="--peak-tflops"):
        gpu.peak_tflops("NVIDIA A10G")
    assert gpu.peak_tflops("NVIDIA A10G", override=70.0) == (70.0, "--peak-tflops")


def test_measure_times_real_forward_passes_and_derives_mfu() -> None:
    shape = gpu.BertShape(layers=1, hidden=32, heads=2, intermediate=64, vocab=50, max_positions=64)
    device = torch.device("cpu")
    model = gpu.build_model(shape, torch.float32, device)
    point = gpu.measure(
        model, shape, batch=2, seq_len=16, device=device, peak_flops=1e12, min_seconds=0.0
    )
    assert point.iterations >= 10
    assert point.tokens_per_s == pytest.approx(32 / point.seconds_per_batch)
    assert point.mfu == pytest.approx(point.tflops * 1e12 / 1e12)
    assert gpu.best_points([point]) == [point]
    assert "| 16 | 2 | no |" in gpu.render_markdown(
        {
            "device": "cpu",
            "started_at": "now",
            "command": "test",
            "torch": torch.__version__,
            "cuda": None,
            "dtype": "float32",
            "peak_tflops": 1.0,
            "peak_source": "test",
        },
        [point],
    )


@pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has a GPU")
def test_gpu_mode_refuses_clearly_without_cuda() -> None:
    with pytest.raises(SystemExit, match="GPU mode needs a CUDA GPU"):
        main(["--gpu"])


def test_cli_rejects_bad_lists() -> None:
    parser = build_parser()
    with pytest.raises(SystemExit):
        parser.parse_args(["--concurrency", "1,0"])
    with pytest.raises(SystemExit):
        parser.parse_args(["--systems", "limit,fast"])
    assert parser.parse_args(["--concurrency", "2,8"]).concurrency == (2, 8)
