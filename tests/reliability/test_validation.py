"""Validation in a real (in-process) tiny-model training run: ``data.val`` logs ``val/loss``, ``val/acc@1`` and
``val/mrr`` after every epoch, the values are those of the final weights on the fixed validation batches, and
``callbacks=validation`` stops early and keeps the best checkpoint; without ``data.val`` no validation runs."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest
import torch
from lightning.pytorch.callbacks import EarlyStopping

from hybrid_ir.tasks.train import build_components, sweep_objective, train

from .conftest import Compose
from .runs import csv_table

pytestmark = pytest.mark.slow  # every test here trains the tiny model in-process

MAX_EPOCHS = 4
RUN = (
    "experiment=smoke",
    "trainer.precision=32-true",
    "trainer.max_steps=-1",
    f"trainer.max_epochs={MAX_EPOCHS}",
    "+trainer.limit_train_batches=2",
    "~callbacks.zero_shot_eval",
    "~callbacks.export_encoder",
    "~callbacks.progress_bar",
    "+trainer.enable_progress_bar=false",
)
VAL = ("data.val.fraction=0.02", "callbacks=validation")


def test_validation_logs_every_epoch_and_stops_early(
    compose: Compose, fast_tiny_model: None, caplog: pytest.LogCaptureFixture
) -> None:
    # no validation loss can improve by 100: the run stops at the first validation after the first one
    cfg = compose(*RUN, *VAL, "callbacks.early_stopping.patience=0", "callbacks.early_stopping.min_delta=100")
    out = Path(cfg.paths.output_dir)
    run = build_components(cfg)
    with caplog.at_level(logging.INFO, logger="hybrid_ir.training.callbacks"):
        run.trainer.fit(run.module, datamodule=run.datamodule)
    assert run.trainer.current_epoch == 2 < MAX_EPOCHS  # epochs 0 and 1 ran
    rows = [r for r in csv_table(out) if r.get("val/loss")]
    assert [int(r["epoch"]) for r in rows] == [0, 1]
    # the log says when and why: the epoch, the monitored metric and its best value (epoch 0's), the patience
    stops = [r.getMessage() for r in caplog.records if "early stopping" in r.getMessage()]
    assert len(stops) == 1, stops
    assert stops[0].startswith(
        f"early stopping ended training after epoch 1 (global step 4, trainer.max_epochs={MAX_EPOCHS})"
    )
    assert (
        "val/loss did not improve by more than min_delta=100 in the last 1 validation(s) (patience=0)"
        in stops[0]
    )
    assert f"best val/loss {float(rows[0]['val/loss']):.6g} (mode min)" in stops[0]
    for row in rows:
        assert 0.0 <= float(row["val/acc@1"]) <= float(row["val/mrr"]) <= 1.0
    # the best checkpoint is that of the lower validation loss (min_delta is early stopping's, not the checkpoint's)
    best = min(rows, key=lambda r: float(r["val/loss"]))
    best_epoch = int(best["epoch"])
    expected = f"best-epoch{best_epoch:02d}-step{2 * (best_epoch + 1):06d}.ckpt"
    assert [p.name for p in (out / "checkpoints").glob("best-*.ckpt")] == [expected]

    # the last logged values are the final weights' loss and ranks on the fixed validation batches
    module, dm = run.module.eval(), run.datamodule
    losses, hits, reciprocal = [], [], []
    with torch.no_grad():
        for batch in dm.val_dataloader():
            q = module.encoder(batch["q_input_ids"], batch["q_attention_mask"])
            p = module.encoder(batch["p_input_ids"], batch["p_attention_mask"])
            losses.append(float(module.loss(q, p)))
            order = (q @ p.T).argsort(dim=1, descending=True)
            position = (order == torch.arange(len(q))[:, None]).float().argmax(dim=1) + 1
            hits += (position == 1).float().tolist()
            reciprocal += (1.0 / position).tolist()
    last = rows[-1]
    assert float(last["val/loss"]) == pytest.approx(sum(losses) / len(losses), abs=1e-5)
    assert float(last["val/acc@1"]) == pytest.approx(sum(hits) / len(hits), abs=1e-6)
    assert float(last["val/mrr"]) == pytest.approx(sum(reciprocal) / len(reciprocal), abs=1e-6)


def test_an_epoch_cut_short_by_max_steps_counts_for_no_validation(
    compose: Compose, fast_tiny_model: None, caplog: pytest.LogCaptureFixture
) -> None:
    # max_steps ends epoch 1 after its first batch: no validation ran in it, so early stopping, which would stop
    # at any validation after the first (min_delta=100), must not judge the previous epoch's val/loss again
    cfg = compose(
        *RUN,
        *VAL,
        "trainer.max_steps=3",
        "callbacks.early_stopping.patience=0",
        "callbacks.early_stopping.min_delta=100",
    )
    run = build_components(cfg)
    with caplog.at_level(logging.INFO, logger="hybrid_ir.training.callbacks"):
        run.trainer.fit(run.module, datamodule=run.datamodule)
    assert run.trainer.global_step == 3
    stopper = next(cb for cb in run.trainer.callbacks if isinstance(cb, EarlyStopping))
    assert stopper.wait_count == 0 and not run.trainer.should_stop
    assert "early stopping" not in caplog.text


def test_without_a_validation_set_no_validation_runs(compose: Compose, fast_tiny_model: None) -> None:
    cfg = compose(*RUN, "trainer.max_epochs=1")
    run = build_components(cfg)
    run.trainer.fit(run.module, datamodule=run.datamodule)
    assert not any(key.startswith("val/") for key in run.trainer.callback_metrics)
    assert sum(run.trainer.num_val_batches) == 0


def test_early_stopping_continues_from_the_checkpoint_on_resume(
    compose: Compose, fast_tiny_model: None
) -> None:
    stop_at_once = (
        *VAL,
        "callbacks.early_stopping.patience=0",
        "callbacks.early_stopping.min_delta=100",
        "callbacks.model_checkpoint.every_n_train_steps=null",  # epoch checkpoints only (smoke: every 2 steps)
    )
    train(compose(*RUN, *stop_at_once, "trainer.max_epochs=1"))
    # resumed, the best val/loss of epoch 0 comes from the checkpoint: epoch 1 does not beat it by 100, so the
    # run stops there (a fresh early-stopping state would take epoch 1 as its first best and run epoch 2)
    cfg = compose(*RUN, *stop_at_once, "ckpt_path=last")
    scalars = train(cfg)
    rows = csv_table(Path(cfg.paths.output_dir))
    assert [int(r["epoch"]) for r in rows if r.get("val/loss")] == [0, 1]
    # a sweep minimises the last validation loss, never a zero-shot (test) metric
    last_val_loss = float([r for r in rows if r.get("val/loss")][-1]["val/loss"])
    assert sweep_objective(scalars) == pytest.approx(last_val_loss, abs=1e-6)
    assert max(int(r["epoch"]) for r in rows if r.get("epoch")) == 1
