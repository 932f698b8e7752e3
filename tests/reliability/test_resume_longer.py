"""Resume a finished run with a larger ``trainer.max_steps``: nothing the first run wrote is lost.

A real ``train.py`` run of :data:`runs.SMOKE` with both loggers (W&B offline and CSV), plots and per-query
files stops at ``FIRST_STEPS``; the same command with ``ckpt_path=last`` and ``trainer.max_steps=LONGER_STEPS``
continues it in the same ``hydra.run.dir``. Both end epoch 0 (the epoch is longer than either run), so both
evaluate it. What the first run wrote is copied aside before the resume.
"""

from __future__ import annotations

import math
import shutil
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from hybrid_ir.evaluation.outputs import per_query_path, plot_path, read_per_query
from hybrid_ir.models.module import linear_warmup_decay

from .runs import SMOKE, csv_rows, csv_table, eval_records, finish, start_train

# Two train.py processes, one after the other.
pytestmark = pytest.mark.slow

FIRST_STEPS, LONGER_STEPS = 4, 8
LR, WARMUP_RATIO = 3e-5, 0.1  # conf/train.yaml's module.lr and module.warmup_ratio
RUN = (
    *SMOKE,
    "logger=default",
    "eval.plots=true",
    "eval.per_query=true",
    f"callbacks.model_checkpoint.every_n_train_steps={FIRST_STEPS}",
)
TAGS = ["pretrained", f"epoch0-step{FIRST_STEPS}", f"epoch0-step{LONGER_STEPS}"]


@dataclass
class LongerRun:
    run: Path
    first: Path  # a copy of what the first run wrote
    resumed_log: str


@pytest.fixture(scope="module")
def longer_run(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LongerRun]:
    base = tmp_path_factory.mktemp("longer_run")
    run = base / "run"
    proc = start_train(run, *RUN, f"trainer.max_steps={FIRST_STEPS}")
    try:
        finish(proc, run)
        first = base / "first"
        shutil.copytree(run, first)
        proc = start_train(run, *RUN, f"trainer.max_steps={LONGER_STEPS}", "ckpt_path=last")
        finish(proc, run)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    yield LongerRun(run=run, first=first, resumed_log=run.with_suffix(".log").read_text(errors="replace"))


def test_the_csv_log_keeps_the_first_runs_rows(longer_run: LongerRun) -> None:
    first, resumed = csv_rows(longer_run.first), csv_rows(longer_run.run)
    assert sorted(first) == list(range(FIRST_STEPS))
    assert sorted(resumed) == list(range(LONGER_STEPS))
    for step in first:
        assert resumed[step]["train/loss_step"] == first[step]["train/loss_step"], step
    # each training step once, and every evaluation's row (pretrained and both epoch ends)
    rows = csv_table(longer_run.run)
    assert len([r for r in rows if r["train/loss_step"]]) == LONGER_STEPS
    eval_steps = [int(r["step"]) for r in rows if r["eval/mlqa-r/map_multi"]]
    assert eval_steps == [0, FIRST_STEPS, LONGER_STEPS]


def test_evaluations_are_tagged_by_epoch_and_step(longer_run: LongerRun) -> None:
    records = eval_records(longer_run.run)
    assert [r["tag"] for r in records] == TAGS
    assert [r["step"] for r in records] == [0, FIRST_STEPS, LONGER_STEPS]
    # the first run's epoch-end files are neither overwritten nor lost
    for tag in TAGS:
        assert per_query_path(longer_run.run, "mlqa-r", tag).is_file(), tag
        assert plot_path(longer_run.run, "mlqa-r", tag, "map_heatmap").is_file(), tag
    tag = f"epoch0-step{FIRST_STEPS}"
    assert read_per_query(per_query_path(longer_run.run, "mlqa-r", tag)) == read_per_query(
        per_query_path(longer_run.first, "mlqa-r", tag)
    )


def test_the_learning_rate_continues_on_the_longer_schedule(longer_run: LongerRun) -> None:
    # LearningRateMonitor's rows: the learning rate of each step's update, one column per parameter group
    lr_rows = [r for r in csv_table(longer_run.run) if r["lr-AdamW/pg1"]]
    rows = {int(r["step"]): r for r in lr_rows}
    assert set(range(FIRST_STEPS, LONGER_STEPS)) <= rows.keys()
    lr_columns = [c for c in lr_rows[0] if c.startswith("lr-AdamW")]
    factor = linear_warmup_decay(math.ceil(WARMUP_RATIO * LONGER_STEPS), LONGER_STEPS)
    for step in range(FIRST_STEPS, LONGER_STEPS):
        for column in lr_columns:
            assert float(rows[step][column]) == pytest.approx(LR * factor(step), rel=1e-6), (step, column)
    assert float(rows[FIRST_STEPS][lr_columns[0]]) > 0
    assert "the learning-rate schedule differs from the checkpoint's" in longer_run.resumed_log
    assert f"total {FIRST_STEPS} -> {LONGER_STEPS}" in longer_run.resumed_log


def test_the_resumed_run_continues_the_same_wandb_run(longer_run: LongerRun) -> None:
    run_id = (longer_run.run / "wandb_id.txt").read_text().strip()
    assert run_id == (longer_run.first / "wandb_id.txt").read_text().strip()
    runs = sorted(p.name for p in (longer_run.run / "wandb").glob("offline-run-*"))
    assert len(runs) == 2, runs
    assert all(name.endswith(f"-{run_id}") for name in runs), (run_id, runs)
