"""Faults during training, in-process through :func:`hybrid_ir.tasks.train.train` with the tiny model.

* A NaN loss (injected at the third training step) stops the run naming the step (``module.nonfinite=raise``)
  or drops that step's update and goes on (``module.nonfinite=skip``).
* W&B that cannot start (online nor offline), or no logger at all: training completes with a warning.
"""

from __future__ import annotations

import logging
import math
from pathlib import Path
from typing import Any

import pytest
import torch
from lightning.pytorch.loggers import WandbLogger

from hybrid_ir.tasks.train import train
from hybrid_ir.training.loss import InfoNCELoss
from hybrid_ir.training.module import NonFiniteLossError

from .conftest import Compose
from .runs import csv_rows

pytestmark = pytest.mark.slow  # every test here trains the tiny model in-process

MAX_STEPS = 4
# Two training languages keep the data small; one checkpoint, at the end.
QUICK = (
    "experiment=smoke",
    f"trainer.max_steps={MAX_STEPS}",
    "data.train.0.languages=[en,de]",
    "~callbacks.zero_shot_eval",
    "~callbacks.export_encoder",
    f"callbacks.model_checkpoint.every_n_train_steps={MAX_STEPS}",
)
NAN_CALL = 3  # the third loss computation: global step 2 (0-based), batch 2


@pytest.fixture
def nan_loss(monkeypatch: pytest.MonkeyPatch) -> None:
    """The loss is NaN on its ``NAN_CALL``-th computation (one per training step) and normal otherwise."""
    original = InfoNCELoss.forward
    calls = {"n": 0}

    def forward(self: InfoNCELoss, *args: Any, **kwargs: Any) -> torch.Tensor:
        loss = original(self, *args, **kwargs)
        calls["n"] += 1
        return loss * math.nan if calls["n"] == NAN_CALL else loss

    monkeypatch.setattr(InfoNCELoss, "forward", forward)


def last_checkpoint(cfg: Any) -> dict[str, Any]:
    return torch.load(Path(cfg.paths.output_dir) / "checkpoints" / "last.ckpt", weights_only=True)


def warnings_of(caplog: pytest.LogCaptureFixture) -> str:
    return "\n".join(r.getMessage() for r in caplog.records if r.levelno == logging.WARNING)


def test_nan_loss_raises_naming_the_step(compose: Compose, fast_tiny_model: None, nan_loss: None) -> None:
    cfg = compose(*QUICK, "module.nonfinite=raise")
    with pytest.raises(NonFiniteLossError) as info:
        train(cfg)
    message = str(info.value)
    assert "non-finite training loss nan at global step 2 (epoch 0, batch 2)" in message
    assert "module.nonfinite=skip" in message
    assert not (Path(cfg.paths.output_dir) / "checkpoints" / "last.ckpt").exists()


def test_nan_loss_is_skipped_and_training_goes_on(
    compose: Compose, fast_tiny_model: None, nan_loss: None, caplog: pytest.LogCaptureFixture
) -> None:
    cfg = compose(*QUICK, "module.nonfinite=skip")
    with caplog.at_level(logging.WARNING):
        train(cfg)
    assert "skipping the update of global step 2 (epoch 0, batch 2): loss is nan" in warnings_of(caplog)
    ckpt = last_checkpoint(cfg)
    assert ckpt["global_step"] == MAX_STEPS  # the skipped batch made no optimiser step
    assert ckpt["hybrid_ir"]["skipped_steps"] == 1
    assert ckpt["loops"]["fit_loop"]["epoch_loop.batch_progress"]["total"]["processed"] == MAX_STEPS + 1
    assert all(torch.isfinite(t).all() for t in ckpt["state_dict"].values())
    # One CSV row per batch; from the skipped batch (logged as step 2) on, train/skipped_steps counts it.
    rows = csv_rows(Path(cfg.paths.output_dir))
    assert sorted(rows) == list(range(MAX_STEPS + 1))
    assert all(math.isfinite(float(row["train/loss_step"])) for row in rows.values())
    assert [rows[s]["train/skipped_steps"] for s in sorted(rows)] == ["", "", "1.0", "1.0", "1.0"]


def refuse_to_start(self: WandbLogger, *args: Any, **kwargs: Any) -> None:
    raise RuntimeError("simulated: W&B is unreachable")


def test_wandb_that_cannot_start_does_not_stop_training(
    compose: Compose, fast_tiny_model: None, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setattr(WandbLogger, "__init__", refuse_to_start)
    cfg = compose(*QUICK, "logger=wandb", "logger.wandb.offline=false")
    with caplog.at_level(logging.WARNING):
        train(cfg)
    warned = warnings_of(caplog)
    assert "W&B could not start online" in warned
    assert "falling back to an offline run" in warned
    assert "W&B offline could not start either" in warned
    assert warned.count("simulated: W&B is unreachable") == 2
    assert "training goes on without W&B" in warned
    assert "LearningRateMonitor dropped" in warned
    assert last_checkpoint(cfg)["global_step"] == MAX_STEPS


def test_training_without_any_logger_completes(
    compose: Compose, fast_tiny_model: None, caplog: pytest.LogCaptureFixture
) -> None:
    cfg = compose(*QUICK, "logger=none")
    with caplog.at_level(logging.WARNING):
        train(cfg)
    assert "LearningRateMonitor dropped" in warnings_of(caplog)
    assert last_checkpoint(cfg)["global_step"] == MAX_STEPS
