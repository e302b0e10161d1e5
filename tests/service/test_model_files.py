"""What the model's own files decide, as sentence-transformers reads them: normalisation
(modules.json), prompts (config_sentence_transformers.json), dtype and Matryoshka dimensions
(config.json); and how device faults leave the encoder (typed errors, the cache freed)."""

from __future__ import annotations

import copy
import json
import shutil
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import numpy as np
import pytest
import torch
from sentence_transformers import SentenceTransformer
from service_testkit import TINY_HIDDEN

from service.encoder import Encoder, EncoderConfig, ModelLoadError, resolve_dtype
from service.model_types import DeviceFailedError, DeviceOutOfMemoryError, InputTooLongError

TEXTS = ["the cat sat on the mat", "hello world", "a quick brown fox"]


def variant(tiny_model_dir: Path, tmp_path: Path, name: str) -> Path:
    return Path(shutil.copytree(tiny_model_dir, tmp_path / name))


def edit_json(path: Path, **changes: Any) -> None:
    data = json.loads(path.read_text()) if path.is_file() else {}
    data.update(changes)
    path.write_text(json.dumps(data))


def drop_normalize(folder: Path) -> None:
    modules = json.loads((folder / "modules.json").read_text())
    kept = [m for m in modules if not m["type"].endswith(".Normalize")]
    (folder / "modules.json").write_text(json.dumps(kept))


def reference(folder: Path, texts: list[str], **kwargs: Any) -> np.ndarray:
    model = SentenceTransformer(str(folder), device="cpu", local_files_only=True)
    vectors: np.ndarray = model.encode(texts, convert_to_numpy=True, **kwargs)
    return vectors


# --- Normalisation follows modules.json --------------------------------------------------------
def test_a_model_without_a_normalize_step_returns_its_raw_vectors(
    tiny_model_dir: Path, tmp_path: Path
) -> None:
    folder = variant(tiny_model_dir, tmp_path, "raw")
    drop_normalize(folder)
    encoder = Encoder.load(EncoderConfig(model=str(folder)))
    assert (encoder.info.normalize, encoder.info.normalize_source) == (False, "modules.json")
    ours = encoder.encode(TEXTS)
    assert not np.allclose(np.linalg.norm(ours, axis=1), 1.0, atol=1e-3)
    np.testing.assert_allclose(ours, reference(folder, TEXTS), atol=1e-5)


def test_the_normalize_setting_overrides_the_model(tiny_model_dir: Path, tmp_path: Path) -> None:
    folder = variant(tiny_model_dir, tmp_path, "forced")
    drop_normalize(folder)
    forced = Encoder.load(EncoderConfig(model=str(folder), normalize=True))
    assert (forced.info.normalize, forced.info.normalize_source) == (True, "setting")
    np.testing.assert_allclose(np.linalg.norm(forced.encode(TEXTS), axis=1), 1.0, atol=1e-6)
    off = Encoder.load(EncoderConfig(model=str(tiny_model_dir), normalize=False))
    assert not np.allclose(np.linalg.norm(off.encode(TEXTS), axis=1), 1.0, atol=1e-3)


def test_a_model_with_a_normalize_step_matches_sentence_transformers(
    tiny_encoder: Encoder, tiny_model_dir: Path
) -> None:
    assert tiny_encoder.info.normalize
    np.testing.assert_allclose(
        tiny_encoder.encode(TEXTS), reference(tiny_model_dir, TEXTS), atol=1e-5
    )


def test_a_folder_without_modules_json_is_not_normalised(
    tiny_model_dir: Path, tmp_path: Path
) -> None:
    folder = variant(tiny_model_dir, tmp_path, "plain")
    (folder / "modules.json").unlink()
    info = Encoder.load(EncoderConfig(model=str(folder))).info
    assert (info.pooling, info.normalize) == ("mean", False)  # sentence-transformers' defaults


# --- Prompts from config_sentence_transformers.json --------------------------------------------
@pytest.fixture
def prompted(tiny_model_dir: Path, tmp_path: Path) -> Path:
    folder = variant(tiny_model_dir, tmp_path, "prompted")
    edit_json(
        folder / "config_sentence_transformers.json",
        prompts={"query": "hello world ", "passage": ""},
        default_prompt_name="query",
    )
    return folder


def test_the_model_default_prompt_is_applied_like_sentence_transformers(prompted: Path) -> None:
    encoder = Encoder.load(EncoderConfig(model=str(prompted)))
    info = encoder.info
    assert info.prompts == {"query": "hello world ", "passage": ""}
    assert (info.default_prompt_name, info.default_prompt) == ("query", "hello world ")
    st = reference(prompted, TEXTS)  # sentence-transformers applies default_prompt_name itself
    with_prompt = encoder.encode_ids(encoder.tokenize(TEXTS, "hello world ").ids)
    np.testing.assert_allclose(with_prompt, st, atol=1e-5)
    plain = reference(prompted, TEXTS, prompt="")
    np.testing.assert_allclose(encoder.encode(TEXTS), plain, atol=1e-5)
    assert not np.allclose(st, plain, atol=1e-3)


def test_token_ids_get_the_prompt_tokens_too(prompted: Path) -> None:
    encoder = Encoder.load(EncoderConfig(model=str(prompted)))
    text = encoder.tokenize(["the cat sat"], "hello world ")
    bare = encoder.tokenize(["the cat sat"]).ids[0][1:-1]
    assert encoder.tokenize_ids([bare], "hello world ").ids == text.ids


def test_settings_choose_or_add_the_default_prompt(prompted: Path) -> None:
    none = Encoder.load(EncoderConfig(model=str(prompted), default_prompt_name="")).info
    assert (none.default_prompt_name, none.default_prompt) == (None, None)
    added = Encoder.load(
        EncoderConfig(model=str(prompted), prompts={"doc": "passage: "}, default_prompt_name="doc")
    ).info
    assert added.prompts["doc"] == "passage: "
    assert added.default_prompt == "passage: "
    literal = Encoder.load(EncoderConfig(model=str(prompted), default_prompt="query: ")).info
    assert (literal.default_prompt_name, literal.default_prompt) == (None, "query: ")
    with pytest.raises(ModelLoadError, match="'nope' is not one of the model's prompts"):
        Encoder.load(EncoderConfig(model=str(prompted), default_prompt_name="nope"))


def test_pooling_without_the_prompt_is_refused(prompted: Path) -> None:
    edit_json(prompted / "1_Pooling" / "config.json", include_prompt=False)
    edit_json(
        prompted / "1_Pooling" / "config.json",
        pooling_mode_cls_token=False,
        pooling_mode_mean_tokens=True,
    )
    with pytest.raises(ModelLoadError, match="include_prompt=false"):
        Encoder.load(EncoderConfig(model=str(prompted)))


# --- Too-long inputs report their real length --------------------------------------------------
def test_the_too_long_error_gives_the_untruncated_length(tiny_model_dir: Path) -> None:
    encoder = Encoder.load(EncoderConfig(model=str(tiny_model_dir), truncate=False))
    text = "the cat sat on the mat " * 20  # 120 words, one token each, + [CLS] [SEP]
    with pytest.raises(InputTooLongError, match=r"input\[1\] has 122 tokens, over .* of 32"):
        encoder.tokenize(["ok", text])
    with pytest.raises(InputTooLongError, match=r"input\[0\] has 102 tokens"):
        encoder.tokenize_ids([[7] * 100])


# --- dtype: the model's, where the device has it ------------------------------------------------
@pytest.mark.parametrize(
    ("requested", "device", "model_dtype", "bf16", "resolved"),
    [
        ("auto", "cpu", None, True, torch.float32),
        ("auto", "cpu", "bfloat16", True, torch.float32),
        ("auto", "cuda", "float32", True, torch.float16),
        ("auto", "cuda", None, False, torch.float16),
        ("auto", "cuda", "bfloat16", True, torch.bfloat16),  # trained in bf16: may overflow fp16
        ("auto", "cuda", "bfloat16", False, torch.float32),  # a T4 has no bf16
        ("float16", "cuda", "bfloat16", True, torch.float16),  # an explicit choice wins
    ],
)
def test_auto_dtype(
    requested: str, device: str, model_dtype: str | None, bf16: bool, resolved: torch.dtype
) -> None:
    assert resolve_dtype(requested, device, model_dtype, bf16) == resolved


def test_explicit_bfloat16_on_a_gpu_without_it_is_refused() -> None:
    with pytest.raises(ModelLoadError, match="does not support it"):
        resolve_dtype("bfloat16", "cuda", None, bf16_supported=False)


def test_info_reports_the_model_dtype_and_what_auto_became(
    tiny_model_dir: Path, tmp_path: Path
) -> None:
    folder = variant(tiny_model_dir, tmp_path, "bf16")
    edit_json(folder / "config.json", dtype="bfloat16")
    info = Encoder.load(EncoderConfig(model=str(folder))).info
    assert (info.dtype_requested, info.model_dtype, info.dtype) == ("auto", "bfloat16", "float32")


# --- Matryoshka dimensions: declared by the model or a setting ---------------------------------
def test_matryoshka_dimensions_come_from_config_json(
    tiny_encoder: Encoder, tiny_model_dir: Path, tmp_path: Path
) -> None:
    assert (tiny_encoder.info.matryoshka, tiny_encoder.info.matryoshka_dimensions) == (False, None)
    listed = variant(tiny_model_dir, tmp_path, "listed")
    edit_json(listed / "config.json", matryoshka_dimensions=[16, 8])
    info = Encoder.load(EncoderConfig(model=str(listed))).info
    assert (info.matryoshka, info.matryoshka_dimensions) == (True, (8, 16))
    flagged = variant(tiny_model_dir, tmp_path, "flagged")
    edit_json(flagged / "config.json", is_matryoshka=True)
    info = Encoder.load(EncoderConfig(model=str(flagged))).info
    assert (info.matryoshka, info.matryoshka_dimensions) == (True, None)
    off = Encoder.load(EncoderConfig(model=str(flagged), matryoshka_dimensions="none")).info
    assert (off.matryoshka, off.matryoshka_source) == (False, "setting")


def test_matryoshka_dimensions_larger_than_the_model_are_refused(tiny_model_dir: Path) -> None:
    with pytest.raises(ModelLoadError, match=rf"\[64\] .* outside 1..{TINY_HIDDEN}"):
        Encoder.load(EncoderConfig(model=str(tiny_model_dir), matryoshka_dimensions=[8, 64]))


# --- Device faults leave the encoder as typed errors --------------------------------------------
class FaultyDevice(torch.nn.Module):
    """Raises the error torch raises on a GPU for every forward pass."""

    def __init__(self, error: BaseException) -> None:
        super().__init__()
        self.error = error

    def forward(self, **inputs: torch.Tensor) -> SimpleNamespace:
        raise self.error


def on_device(encoder: Encoder, module: torch.nn.Module) -> Encoder:
    faulty = copy.copy(encoder)
    faulty._model = module
    return faulty


def test_out_of_memory_frees_the_cache_and_becomes_a_typed_error(
    tiny_encoder: Encoder, monkeypatch: pytest.MonkeyPatch
) -> None:
    freed: list[bool] = []
    monkeypatch.setattr(torch.cuda, "empty_cache", lambda: freed.append(True))
    oom = torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")
    encoder = on_device(tiny_encoder, FaultyDevice(oom))
    with pytest.raises(DeviceOutOfMemoryError, match="batch of 3 inputs x 8 tokens"):
        encoder.encode(TEXTS)
    assert freed == [True]


def test_a_cuda_error_means_the_device_failed(tiny_encoder: Encoder) -> None:
    fault = torch.AcceleratorError("CUDA error: an illegal memory access was encountered")
    with pytest.raises(DeviceFailedError, match="illegal memory access"):
        on_device(tiny_encoder, FaultyDevice(fault)).encode(TEXTS)
    legacy = RuntimeError("CUDA error: device-side assert triggered")
    with pytest.raises(DeviceFailedError):
        on_device(tiny_encoder, FaultyDevice(legacy)).encode(TEXTS)


def test_other_errors_pass_through(tiny_encoder: Encoder) -> None:
    with pytest.raises(RuntimeError, match="shape mismatch") as raised:
        on_device(tiny_encoder, FaultyDevice(RuntimeError("shape mismatch"))).encode(TEXTS)
    assert type(raised.value) is RuntimeError
