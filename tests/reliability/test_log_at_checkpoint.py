"""A kill right after a checkpoint is saved leaves ``metrics.csv`` with every row that checkpoint covers.

Lightning saves the step checkpoint (``on_train_batch_end``) and the epoch checkpoint (``on_train_epoch_end``)
before it logs that step's (that epoch's) row, and a resume keeps the CSV rows the checkpoint covers without
writing them again. A fault hook copies ``metrics.csv`` as each checkpoint is written: that copy is what a
SIGKILL right after the save leaves behind, deterministically, without a process to kill.
"""

from __future__ import annotations

import csv
import io
from pathlib import Path
from typing import Any

import pytest

from hybrid_ir.tasks.train import train
from hybrid_ir.training.csv_logger import row_precedes_resume
from hybrid_ir.utils.checkpoint_io import AtomicCheckpointIO

from .conftest import Compose
from .runs import csv_table

# Two in-process training runs of the tiny model: seconds each.
pytestmark = pytest.mark.slow

MAX_STEPS = 6
RUN = (
    "experiment=smoke",
    f"trainer.max_steps={MAX_STEPS}",
    "+trainer.limit_train_batches=3",
    "trainer.max_epochs=2",
    "trainer.precision=32-true",
    "data.train.0.languages=[en,de]",
    "~callbacks.zero_shot_eval",
    "~callbacks.export_encoder",
)
EPOCH_ROWS = [2, 5]  # epochs of 3 batches: train/loss_epoch at each epoch's last step


@pytest.fixture
def csv_at_each_save(monkeypatch: pytest.MonkeyPatch) -> list[tuple[int, str]]:
    """``(global_step, text of metrics.csv)`` as each checkpoint file is complete."""
    snapshots: list[tuple[int, str]] = []
    original = AtomicCheckpointIO.save_checkpoint

    def save(self: AtomicCheckpointIO, checkpoint: dict[str, Any], path: Any, **kwargs: Any) -> None:
        original(self, checkpoint, path, **kwargs)
        metrics = Path(path).parents[1] / "csv" / "metrics.csv"
        snapshots.append((int(checkpoint["global_step"]), metrics.read_text() if metrics.is_file() else ""))

    monkeypatch.setattr(AtomicCheckpointIO, "save_checkpoint", save)
    return snapshots


@pytest.mark.parametrize(
    ("every_n_train_steps", "epoch_rows_at_saves"),
    # (checkpoint step, epoch rows (train/loss_epoch) it covers) of each save in turn: a step checkpoint at an
    # epoch's last step is saved before that epoch ends; an epoch's end (where last.ckpt is always written
    # again), as it ends, before its row is logged
    [
        ("2", [(2, []), (3, [2]), (4, [2]), (6, [2]), (6, [2, 5])]),
        ("null", [(3, [2]), (6, [2, 5])]),
    ],
    ids=["step-checkpoints", "epoch-checkpoints"],
)
def test_each_checkpoint_finds_its_rows_already_in_the_csv(
    compose: Compose,
    fast_tiny_model: None,
    csv_at_each_save: list[tuple[int, str]],
    every_n_train_steps: str,
    epoch_rows_at_saves: list[tuple[int, list[int]]],
) -> None:
    cfg = compose(*RUN, f"callbacks.model_checkpoint.every_n_train_steps={every_n_train_steps}")
    train(cfg)
    saves = []
    for step, text in csv_at_each_save:
        kept = [r for r in csv.DictReader(io.StringIO(text)) if row_precedes_resume(r, step)]
        assert sorted(int(r["step"]) for r in kept if r.get("train/loss_step")) == list(range(step)), step
        save = (step, [int(r["step"]) for r in kept if r.get("train/loss_epoch")])
        if not saves or saves[-1] != save:  # an epoch checkpoint and last.ckpt are saved one after the other
            saves.append(save)
    assert saves == epoch_rows_at_saves
    # Written ahead of the checkpoint, a row is still written once.
    table = csv_table(Path(cfg.paths.output_dir))
    assert sorted(int(r["step"]) for r in table if r["train/loss_step"]) == list(range(MAX_STEPS))
    assert [int(r["step"]) for r in table if r["train/loss_epoch"]] == EPOCH_ROWS
