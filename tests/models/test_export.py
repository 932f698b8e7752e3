"""export_encoder / ExportEncoderCallback: a loadable save_pretrained directory, swapped in atomically, with a
model card."""

from __future__ import annotations

import json
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
from torch import nn
from transformers import AutoModel

from hybrid_ir.models.encoder import ENCODER_CONFIG, Encoder
from hybrid_ir.models.export import ExportEncoderCallback, export_encoder


class Holder(nn.Module):
    """Stands in for the LightningModule: the export only reads ``module.encoder``."""

    def __init__(self, encoder: Encoder) -> None:
        super().__init__()
        self.encoder = encoder


@pytest.fixture
def module(tiny_encoder_factory) -> Holder:
    return Holder(tiny_encoder_factory())


def _trainer(step: int, global_zero: bool = True) -> SimpleNamespace:
    return SimpleNamespace(global_step=step, is_global_zero=global_zero)


def _weights(directory: Path) -> dict[str, torch.Tensor]:
    """The saved weights (no pooler: a mean-pooling encoder has none, and AutoModel would add a random one)."""
    return AutoModel.from_pretrained(directory, add_pooling_layer=False).state_dict()


def _assert_exports(directory: Path, encoder: Encoder) -> None:
    """``directory`` loads with ``AutoModel`` into the encoder's weights and holds tokenizer and settings."""
    loaded = _weights(directory)
    for name, value in encoder.model.state_dict().items():
        torch.testing.assert_close(loaded[name], value, atol=0, rtol=0, msg=name)
    assert (directory / "tokenizer.json").is_file()
    settings = json.loads((directory / ENCODER_CONFIG).read_text(encoding="utf-8"))
    assert settings["query_prefix"] == encoder.text_tokenizer.query_prefix


def _siblings(directory: Path) -> list[str]:
    return sorted(p.name for p in directory.parent.iterdir())


def test_callback_writes_a_loadable_directory(module: Holder, tmp_path: Path) -> None:
    target = tmp_path / "out" / "encoder"
    callback = ExportEncoderCallback(str(target))
    callback.on_train_epoch_end(_trainer(5), module)
    _assert_exports(target, module.encoder)
    assert _siblings(target) == ["encoder"]


def test_callback_exports_once_per_step_and_only_on_rank_zero(module: Holder, tmp_path: Path) -> None:
    target = tmp_path / "encoder"
    ExportEncoderCallback(str(target)).on_train_end(_trainer(3, global_zero=False), module)
    assert not target.exists()

    callback = ExportEncoderCallback(str(target))
    callback.on_train_epoch_end(_trainer(3), module)
    first = (target / "model.safetensors").stat().st_mtime_ns
    with torch.no_grad():
        module.encoder.model.embeddings.LayerNorm.bias.add_(1.0)
    callback.on_train_end(_trainer(3), module)
    assert (target / "model.safetensors").stat().st_mtime_ns == first
    callback.on_train_end(_trainer(4), module)
    _assert_exports(target, module.encoder)


def test_failed_save_keeps_the_previous_export(module: Holder, tmp_path: Path, monkeypatch) -> None:
    target = tmp_path / "encoder"
    callback = ExportEncoderCallback(str(target))
    callback.on_train_epoch_end(_trainer(1), module)
    before = _weights(target)
    files = sorted(p.name for p in target.iterdir())

    real_save = module.encoder.save_pretrained

    def failing_save(directory: Path) -> Path:
        real_save(directory)
        (Path(directory) / "model.safetensors").write_bytes(b"half written")
        raise OSError("disk full")

    monkeypatch.setattr(module.encoder, "save_pretrained", failing_save)
    with torch.no_grad():
        module.encoder.model.embeddings.LayerNorm.bias.add_(1.0)
    with pytest.raises(OSError, match="disk full"):
        callback.on_train_epoch_end(_trainer(2), module)

    assert sorted(p.name for p in target.iterdir()) == files
    after = _weights(target)
    for name, value in before.items():
        torch.testing.assert_close(after[name], value, atol=0, rtol=0, msg=name)
    assert _siblings(target) == ["encoder"], "no temporary or .old directory may be left behind"

    monkeypatch.setattr(module.encoder, "save_pretrained", real_save)
    callback.on_train_end(_trainer(2), module)
    _assert_exports(target, module.encoder)


def test_export_encoder_replaces_an_existing_export(module: Holder, tmp_path: Path) -> None:
    target = tmp_path / "encoder"
    target.mkdir()
    (target / "stale.txt").write_text("old", encoding="utf-8")
    assert export_encoder(module, target) == target
    assert not (target / "stale.txt").exists()
    _assert_exports(target, module.encoder)
    assert _siblings(target) == ["encoder"]


RECORD = {
    "tag": "epoch0",
    "step": 37,
    "datasets": {"mlqa-r": {"scalars": {"map_mono": 0.75191, "map_cross": 0.7048, "map_multi": 0.5944}}},
}


def test_model_card_describes_the_run(module: Holder, tmp_path: Path, monkeypatch) -> None:
    metrics = tmp_path / "metrics.json"
    metrics.write_text(json.dumps([{**RECORD, "tag": "pretrained", "step": 0}]), encoding="utf-8")
    monkeypatch.setattr("sys.argv", ["train.py", "experiment=cpu", "sampler.alpha=0.25"])
    datamodule = SimpleNamespace(
        specs=[{"name": "xquad-r", "languages": ["de", "en"]}, {"name": "mlqa-r", "languages": ["vi"]}],
        mode="hybrid",
        alpha=0.25,
        batch_size=32,
    )
    trainer = SimpleNamespace(global_step=37, is_global_zero=True, precision="32-true", datamodule=datamodule)
    target = tmp_path / "encoder"
    callback = ExportEncoderCallback(str(target), metrics_file=str(metrics))
    callback.on_train_epoch_end(trainer, module)
    card = (target / "README.md").read_text(encoding="utf-8")
    assert "library_name: sentence-transformers" in card
    assert f"Base model: `{module.encoder.name_or_path}`" in card
    assert "`hybrid` batches (α = 0.25" in card and "for 37 steps in precision `32-true`" in card
    assert "| xquad-r | de en | CC BY-SA 4.0 |" in card
    assert "| mlqa-r | vi | CC BY-NC 4.0 (non-commercial research use only) |" in card
    assert "python train.py experiment=cpu sampler.alpha=0.25" in card
    assert "| pretrained | 0 | mlqa-r | 0.7519 | 0.7048 | 0.5944 |" in card
    assert "| epoch0 |" not in card
    # the evaluation recorded after the export reaches the card at the end of fitting
    metrics.write_text(json.dumps([{**RECORD, "tag": "pretrained", "step": 0}, RECORD]), encoding="utf-8")
    callback.on_fit_end(trainer, module)
    assert "| epoch0 | 37 | mlqa-r | 0.7519 |" in (target / "README.md").read_text(encoding="utf-8")
