"""LastStateCheckpoint on Lightning's BoringModel: seconds, no data (ReportingEarlyStopping is tested in
tests/reliability/test_validation.py)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import lightning as L
import pytest
import torch
from lightning.pytorch.callbacks import ModelCheckpoint
from lightning.pytorch.demos.boring_classes import BoringModel

from hybrid_ir.training.callbacks import LastStateCheckpoint

EPOCH = 5  # batches per epoch


def fit(checkpoint: ModelCheckpoint, ckpt_path: Path | None = None, **trainer_kwargs: Any) -> L.Trainer:
    trainer = L.Trainer(
        accelerator="cpu",
        limit_train_batches=EPOCH,
        limit_val_batches=0,
        max_epochs=1,
        callbacks=[checkpoint],
        logger=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        **trainer_kwargs,
    )
    trainer.fit(BoringModel(), ckpt_path=ckpt_path)
    return trainer


def last(path: Path) -> dict[str, Any]:
    return torch.load(path / "last.ckpt", map_location="cpu", weights_only=True)


@pytest.mark.slow
@pytest.mark.parametrize("cls", [LastStateCheckpoint, ModelCheckpoint])
def test_last_ckpt_holds_the_end_of_an_epoch_between_step_checkpoints(tmp_path: Path, cls: type) -> None:
    # Lightning's own class keeps last.ckpt at the step checkpoint (3); this one writes it at the epoch's end (5)
    fit(cls(dirpath=tmp_path, every_n_train_steps=3, save_last=True))
    assert last(tmp_path)["global_step"] == (EPOCH if cls is LastStateCheckpoint else 3)


@pytest.mark.slow
def test_a_run_that_max_steps_ends_mid_epoch_resumes_there(tmp_path: Path) -> None:
    fit(LastStateCheckpoint(dirpath=tmp_path, every_n_train_steps=50, save_last=True), max_steps=3)
    progress = last(tmp_path)["loops"]["fit_loop"]["epoch_progress"]["total"]
    assert progress["started"] == 1 and progress["processed"] == 0  # epoch 0 not finished
    # resumed longer, it trains the rest of epoch 0 (max_epochs=1): with the epoch saved as finished, nothing
    trainer = fit(
        LastStateCheckpoint(dirpath=tmp_path, every_n_train_steps=50, save_last=True),
        ckpt_path=tmp_path / "last.ckpt",
        max_steps=10,
    )
    assert trainer.global_step == EPOCH
    assert last(tmp_path)["global_step"] == EPOCH


def test_the_state_key_is_lightnings(tmp_path: Path) -> None:
    # a checkpoint written with Lightning's ModelCheckpoint restores into this one
    ours = LastStateCheckpoint(dirpath=tmp_path, every_n_train_steps=50, save_last=True)
    assert (
        ours.state_key == ModelCheckpoint(dirpath=tmp_path, every_n_train_steps=50, save_last=True).state_key
    )
