"""A tiny 1-layer BERT built offline from MiniLM's own files, for the serving-overhead level.

It keeps MiniLM's tokenizer, vocabulary, pooling and maximum length (so parsing, tokenisation and
the response are exactly what MiniLM costs), and replaces the 6-layer, 384-wide network with a
1-layer, 32-wide random one: the forward pass becomes nearly free and what is left is the server's
own cost per request. Built in a fraction of a second, nothing downloaded."""

from __future__ import annotations

import shutil
from pathlib import Path

TINY_HIDDEN = 32
_COPIED = (
    "tokenizer.json",
    "tokenizer_config.json",
    "special_tokens_map.json",
    "vocab.txt",
    "modules.json",
    "sentence_bert_config.json",
    "1_Pooling",
)


def build_tiny_model(source: str | Path, folder: Path) -> Path:
    """The tiny model in `folder`, from the sentence-transformers model folder `source`."""
    import torch
    from transformers import BertConfig, BertModel

    source = Path(source)
    folder.mkdir(parents=True, exist_ok=True)
    for name in _COPIED:
        path = source / name
        if path.is_dir():
            shutil.copytree(path, folder / name, dirs_exist_ok=True)
        elif path.is_file():
            shutil.copy2(path, folder / name)
    pooling = folder / "1_Pooling" / "config.json"
    if pooling.is_file():  # the pooled width is the new hidden size
        import json

        config = json.loads(pooling.read_text())
        config["word_embedding_dimension"] = TINY_HIDDEN
        pooling.write_text(json.dumps(config))
    base = BertConfig.from_pretrained(source)
    torch.manual_seed(0)
    tiny = BertConfig(
        vocab_size=base.vocab_size,
        hidden_size=TINY_HIDDEN,
        num_hidden_layers=1,
        num_attention_heads=2,
        intermediate_size=2 * TINY_HIDDEN,
        max_position_embeddings=base.max_position_embeddings,
    )
    BertModel(tiny).eval().save_pretrained(folder)
    return folder
