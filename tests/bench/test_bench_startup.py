"""bench/startup.py: the cold-start measurement behind the scale-up budget's model-load step, run
on a network of a small shape (the real run builds gte-large-zh's, 1.3 GB)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from bench import modelfiles, startup

SMALL = {
    "hidden_size": 64,
    "num_hidden_layers": 2,
    "num_attention_heads": 2,
    "intermediate_size": 128,
    "max_position_embeddings": 128,
}


def test_model_is_saved_like_a_hub_sentence_transformer(tmp_path: Path) -> None:
    folder = startup.build_large_model(Path(modelfiles.default_model_path()), tmp_path / "m", SMALL)
    config = json.loads((folder / "config.json").read_text())
    assert config["num_hidden_layers"] == 2
    assert config["hidden_size"] == 64
    assert list(folder.glob("*.safetensors"))
    assert json.loads((folder / "sentence_bert_config.json").read_text())["max_seq_length"] == 128
    assert (folder / "tokenizer.json").is_file()


@pytest.mark.slow  # two server starts (torch import, model load): a minute on the shared machine
def test_measure_starts_the_server_as_the_pod_does(tmp_path: Path) -> None:
    folder = startup.build_large_model(Path(modelfiles.default_model_path()), tmp_path / "m", SMALL)
    result = startup.measure(folder, runs=1, log_dir=tmp_path / "logs")
    assert result["runs"] == 1
    assert result["ready_s"] >= result["model_load_and_warmup_s"] > 0
    # Warm-up on vs off: the run without warm-up loads the same model.
    assert result["model_load_without_warmup_s"] > 0
    assert result["model_bytes"] > 0
