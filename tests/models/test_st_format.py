"""sentence-transformers interoperability: a saved encoder loads in ``SentenceTransformer`` with its prompts,
pooling and normalisation and embeds as ``Encoder.encode`` does; a sentence-transformers directory (written by
sentence-transformers itself) is read back as encoder settings."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

from hybrid_ir.models.encoder import ENCODER_CONFIG, Encoder, saved_settings
from hybrid_ir.models.st_format import read_sentence_transformers_settings
from hybrid_ir.utils.errors import ConfigError
from tests.helpers.repo import REPO

st = pytest.importorskip("sentence_transformers")

QUERIES = [
    "Wer war 1905 Präsident der Vereinigten Staaten?",
    "北京是中国的首都吗？",
    "kurz",
    "Where is Ghana?",
]
PASSAGES = [
    "Theodore Roosevelt war von 1901 bis 1909 Präsident.",
    "北京是中国的首都，也是一座历史悠久的城市。",
    "Ghana is a country in West Africa, on the Gulf of Guinea, with a long history of trade in gold.",
]
MIN_COSINE = 0.99999


def assert_same_embeddings(ours: torch.Tensor, theirs: torch.Tensor) -> None:
    assert ours.shape == theirs.shape
    cosine = F.cosine_similarity(ours.float(), theirs.float(), dim=-1)
    assert float(cosine.min()) >= MIN_COSINE, cosine
    # normalised on both sides or on neither: the norms agree as well
    assert torch.allclose(ours.norm(dim=-1), theirs.norm(dim=-1), rtol=1e-4)


def st_encode(directory: Path, texts: list[str], prompt_name: str) -> torch.Tensor:
    model = st.SentenceTransformer(str(directory), device="cpu")
    return model.encode(texts, prompt_name=prompt_name, convert_to_tensor=True, batch_size=2)


def check_round_trip(encoder: Encoder, directory: Path) -> None:
    encoder.eval()
    encoder.save_pretrained(directory)
    assert_same_embeddings(encoder.encode(QUERIES, "query"), st_encode(directory, QUERIES, "query"))
    assert_same_embeddings(encoder.encode(PASSAGES, "passage"), st_encode(directory, PASSAGES, "document"))


@pytest.mark.parametrize(
    ("pooling", "normalize"), [("mean", True), ("cls", True), ("pooler", True), ("mean", False)]
)
def test_tiny_encoder_round_trips_through_sentence_transformers(
    tiny_encoder_factory, tmp_path: Path, pooling: str, normalize: bool
) -> None:
    encoder = tiny_encoder_factory(dropout=False, pooling=pooling, normalize=normalize, max_length=16)
    check_round_trip(encoder, tmp_path / "export")
    config = json.loads((tmp_path / "export" / "config_sentence_transformers.json").read_text())
    assert config["prompts"] == {"query": "query: ", "document": "passage: "}
    assert json.loads((tmp_path / "export" / "sentence_bert_config.json").read_text())["max_seq_length"] == 16
    # the LaBSE-style pooler travels as CLS + Dense(tanh) holding the pooler's weights
    assert (tmp_path / "export" / "2_Dense").is_dir() == (pooling == "pooler")


@pytest.mark.slow
def test_e5_small_round_trips_through_sentence_transformers(e5_dir: Path, tmp_path: Path) -> None:
    from hydra.utils import instantiate
    from omegaconf import OmegaConf

    from hybrid_ir.tasks.instantiate import register_resolvers

    register_resolvers()
    cfg = OmegaConf.load(REPO / "conf" / "model" / "e5-small.yaml")
    check_round_trip(instantiate(cfg), tmp_path / "export")


def st_written_directory(encoder: Encoder, tmp_path: Path, pooling: str, dense: bool) -> Path:
    """A model directory written by sentence-transformers itself: our weights, ST's own modules and prompts."""
    from sentence_transformers.models import Dense, Normalize, Pooling, Transformer

    hf_dir = tmp_path / "hf"
    encoder.model.save_pretrained(hf_dir)
    encoder.text_tokenizer.tokenizer.save_pretrained(hf_dir)
    modules = [Transformer(str(hf_dir), max_seq_length=12), Pooling(encoder.dim, pooling)]
    if dense:
        layer = Dense(encoder.dim, encoder.dim, activation_function=torch.nn.Tanh())
        torch.nn.init.normal_(layer.linear.weight, std=0.2)
        modules.append(layer)
    model = st.SentenceTransformer(
        modules=[*modules, Normalize()], prompts={"query": "Q: ", "passage": "P: "}, device="cpu"
    )
    out = tmp_path / "st"
    model.save(str(out))
    return out


@pytest.mark.parametrize(("pooling", "dense"), [("mean", False), ("cls", True)])
def test_a_sentence_transformers_directory_is_read_with_its_settings(
    tiny_encoder_factory, tmp_path: Path, pooling: str, dense: bool
) -> None:
    encoder = tiny_encoder_factory(dropout=False, pooling="pooler" if dense else "cls", max_length=64)
    directory = st_written_directory(encoder, tmp_path, pooling, dense)
    settings, source = saved_settings(directory)
    assert source.endswith("modules.json")
    assert settings["pooling"] == ("pooler" if dense else pooling)
    assert (settings["query_prefix"], settings["passage_prefix"]) == ("Q: ", "P: ")
    assert settings["max_length"] == 12 and settings["normalize"] is True
    loaded = Encoder.from_pretrained(directory).eval()
    model = st.SentenceTransformer(str(directory), device="cpu")
    for texts, kind, prompt in ((QUERIES, "query", "query"), (PASSAGES, "passage", "passage")):
        theirs = model.encode(texts, prompt_name=prompt, convert_to_tensor=True)
        assert_same_embeddings(loaded.encode(texts, kind), theirs)


def test_our_settings_file_wins_over_the_sentence_transformers_files(
    tiny_encoder_factory, tmp_path: Path
) -> None:
    encoder = tiny_encoder_factory(pooling="cls", max_length=20)
    encoder.save_pretrained(tmp_path)
    settings, source = saved_settings(tmp_path)
    assert source == str(tmp_path / ENCODER_CONFIG)
    assert settings == {k: v for k, v in encoder.settings().items() if k != "base_model"}
    assert saved_settings(tmp_path / "missing") is None


def test_unsupported_sentence_transformers_modules_are_named(tmp_path: Path) -> None:
    modules = [
        {"idx": 0, "name": "0", "path": "", "type": "sentence_transformers.models.Transformer"},
        {"idx": 1, "name": "1", "path": "1_LSTM", "type": "sentence_transformers.models.LSTM"},
    ]
    (tmp_path / "modules.json").write_text(json.dumps(modules))
    with pytest.raises(ConfigError, match=r"LSTM.*not supported"):
        read_sentence_transformers_settings(tmp_path)
    assert read_sentence_transformers_settings(tmp_path / "nothing") is None
