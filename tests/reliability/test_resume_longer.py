"""Resume a finished run with a larger ``trainer.max_steps`` (the README's "train it longer"): it trains the rest
of the interrupted epoch, and nothing the first run wrote is lost.

A real ``train.py`` run of :data:`runs.SMOKE` with both loggers (W&B offline and CSV), plots and per-query
files and the default checkpoint interval (50 steps, longer than the run) stops at ``FIRST_STEPS``, in the
middle of its only epoch (``trainer.max_epochs=1``); the same command with ``ckpt_path=last`` and
``trainer.max_steps=LONGER_STEPS`` continues it in the same ``hydra.run.dir``. Both end epoch 0 (the epoch is
longer than either run), so both evaluate it. What the first run wrote is copied aside before the resume.
"""

from __future__ import annotations

import math
import shutil
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from hybrid_ir.data.formats.load_corpus import load_corpus
from hybrid_ir.data.planning.planner import plan_epoch
from hybrid_ir.evaluation.outputs import per_query_path, plot_path, read_per_query
from hybrid_ir.training.optim import linear_warmup_decay
from hybrid_ir.utils.paths import default_data_root
from tests.helpers.batch_log import read_batch_log

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
    # the default interval: the first run writes its only checkpoint as it ends, mid-epoch
    "callbacks.model_checkpoint.every_n_train_steps=50",
    "+callbacks.batch_log._target_=tests.helpers.batch_log.BatchLog",
    "+callbacks.batch_log.dirpath=${paths.output_dir}/batches",
)
# the smoke run's training data and batches (conf/data/base.yaml, conf/experiment/smoke.yaml)
LANGS = ["ar", "de", "en", "es", "hi", "ru", "th", "tr", "zh"]
BATCH = 8
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


def test_the_resumed_run_trains_the_rest_of_the_epoch(longer_run: LongerRun) -> None:
    # the first run's batches, then the resumed run's: the first LONGER_STEPS batches of epoch 0's plan
    corpus = load_corpus({"name": "xquad-r", "languages": LANGS}, default_data_root(), download=False)
    plan = plan_epoch([corpus], "hybrid", BATCH, 0.5, 0, 0)
    assert len(plan) > LONGER_STEPS
    expected = [[[ref.parallel_id, ref.q_lang, ref.p_lang] for ref in refs] for _, refs in plan][
        :LONGER_STEPS
    ]
    records = read_batch_log(longer_run.run / "batches")
    assert [(r["epoch"], r["step"]) for r in records] == [(0, step) for step in range(LONGER_STEPS)]
    assert [r["pairs"] for r in records] == expected


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
