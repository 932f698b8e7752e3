"""``ResumableCSVLogger``: a resumed run continues ``metrics.csv``; a fresh run replaces it."""

from __future__ import annotations

import csv
from pathlib import Path

import pytest

from hybrid_ir.training.csv_logger import ResumableCSVLogger, row_precedes_resume


def rows_of(path: Path) -> tuple[list[str], list[dict[str, str]]]:
    with open(path, newline="") as fh:
        reader = csv.DictReader(fh)
        return list(reader.fieldnames or []), list(reader)


def first_run(save_dir: Path, steps: int = 6, eval_steps: tuple[int, ...] = (0, 4)) -> Path:
    """Training rows (loss 1.0) at steps ``0..steps-1`` and evaluation rows at ``eval_steps``."""
    logger = ResumableCSVLogger(save_dir)
    for step in range(steps):
        if step in eval_steps:
            logger.log_metrics({"eval/ds/map": 0.5}, step=step)
        logger.log_metrics({"train/loss_step": 1.0}, step=step)
    logger.finalize("success")
    return Path(logger.experiment.metrics_file_path)


def test_a_resume_keeps_the_covered_rows_and_appends_with_a_merged_header(tmp_path: Path) -> None:
    path = first_run(tmp_path)
    logger = ResumableCSVLogger(tmp_path)
    logger.resume_from(4)
    for step in (4, 5):
        logger.log_metrics({"train/loss_step": 2.0, "train/new": 3.0}, step=step)
    logger.finalize("success")
    header, rows = rows_of(path)
    assert set(header) == {"eval/ds/map", "step", "train/loss_step", "train/new"}
    # the first run's training rows of steps 0-3, its evaluations (0, and 4: after the checkpoint's last
    # batch), then the resumed run's rows; the first run's steps 4 and 5 are gone
    assert [(r["step"], r["train/loss_step"], r["eval/ds/map"], r["train/new"]) for r in rows] == [
        ("0", "", "0.5", ""),
        ("0", "1.0", "", ""),
        ("1", "1.0", "", ""),
        ("2", "1.0", "", ""),
        ("3", "1.0", "", ""),
        ("4", "", "0.5", ""),
        ("4", "2.0", "", "3.0"),
        ("5", "2.0", "", "3.0"),
    ]


def test_rows_are_written_at_every_step_by_default(tmp_path: Path) -> None:
    logger = ResumableCSVLogger(tmp_path)
    logger.log_metrics({"train/loss_step": 1.0}, step=0)
    _, rows = rows_of(Path(logger.experiment.metrics_file_path))  # no finalize: as after a kill
    assert [r["step"] for r in rows] == ["0"]


def test_a_fresh_run_replaces_the_file(tmp_path: Path) -> None:
    path = first_run(tmp_path)
    logger = ResumableCSVLogger(tmp_path)
    logger.log_metrics({"train/loss_step": 2.0}, step=0)
    logger.finalize("success")
    _, rows = rows_of(path)
    assert [(r["step"], r["train/loss_step"]) for r in rows] == [("0", "2.0")]


def test_a_line_cut_short_by_a_kill_is_dropped(tmp_path: Path) -> None:
    path = first_run(tmp_path, eval_steps=())
    with open(path, "a") as fh:
        fh.write("3")  # a row of step 3 whose write was cut after its first field
    logger = ResumableCSVLogger(tmp_path)
    logger.resume_from(6)
    logger.log_metrics({"train/loss_step": 2.0}, step=6)
    logger.finalize("success")
    _, rows = rows_of(path)
    assert [r["step"] for r in rows] == ["0", "1", "2", "3", "4", "5", "6"]
    assert all(r["train/loss_step"] for r in rows)


def test_resume_from_after_the_first_write_is_refused(tmp_path: Path) -> None:
    logger = ResumableCSVLogger(tmp_path)
    logger.log_metrics({"train/loss_step": 1.0}, step=0)
    with pytest.raises(RuntimeError, match="before the logger writes"):
        logger.resume_from(0)


@pytest.mark.parametrize(
    ("row", "kept"),
    [
        ({"step": "3", "train/loss_step": "1.0", "eval/ds/map": ""}, True),
        ({"step": "4", "train/loss_step": "1.0", "eval/ds/map": ""}, False),
        ({"step": "4", "train/loss_step": "", "eval/ds/map": "0.5"}, True),
        ({"step": "5", "train/loss_step": "", "eval/ds/map": "0.5"}, False),
        ({"step": "3", "train/loss_step": None, "eval/ds/map": None}, False),
    ],
)
def test_row_precedes_resume(row: dict[str, str], kept: bool) -> None:
    assert row_precedes_resume(row, 4) is kept
