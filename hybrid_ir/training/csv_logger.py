"""A CSV logger whose resumed run continues the file of the run it resumes instead of replacing it.

Lightning's ``CSVLogger`` deletes ``metrics.csv`` when a run starts in a folder that holds one, so after a
resume the file holds the resumed steps only. :class:`ResumableCSVLogger` keeps the rows of the earlier run
that the checkpoint covers and appends the resumed run's rows after them (the header gains the new columns).
It writes its rows at every logging call, so a killed run's file holds every step up to the kill.

Lightning saves a checkpoint in ``on_train_batch_end`` (``on_train_epoch_end``) and only then logs that
batch's (epoch's) row, at a step the checkpoint covers; a kill between the two would lose a row that the
resume does not write again. So every checkpoint save first writes that row
(:meth:`ResumableCSVLogger.write_before_checkpoint`, called from the LightningModule's ``on_save_checkpoint``),
and the logger skips it when Lightning logs it a moment later: the file holds every row a checkpoint covers
before the checkpoint exists.

See docs/reliability.md.
"""

from __future__ import annotations

import csv
from collections.abc import Mapping

import lightning as L
from lightning.fabric.loggers.logger import rank_zero_experiment
from lightning.fabric.utilities.apply_func import convert_tensors_to_scalars
from lightning.fabric.utilities.rank_zero import rank_zero_only
from lightning.fabric.utilities.types import _PATH
from lightning.pytorch.loggers import CSVLogger
from lightning.pytorch.loggers.csv_logs import ExperimentWriter

from hybrid_ir.utils.io import atomic_write

EVAL_PREFIX = "eval/"


def row_precedes_resume(row: Mapping[str, str], resume_step: int) -> bool:
    """Whether a row an earlier run wrote stays when its checkpoint at global step ``resume_step`` is resumed.

    Training rows of step ``s`` come from the ``s + 1``-th batch, so the checkpoint covers those with
    ``s < resume_step``; the resumed run writes the later ones again. An evaluation logged at ``resume_step``
    ran after the checkpoint's last batch and is not repeated, so it stays too. A line with missing or extra
    fields (cut short by a kill during a write) does not stay."""
    if None in row or any(v is None for v in row.values()):
        return False
    step = int(float(row["step"]))
    if step < resume_step:
        return True
    return step == resume_step and any(k.startswith(EVAL_PREFIX) and v != "" for k, v in row.items())


def row_logged_after_save(trainer: L.Trainer) -> tuple[int, dict[str, float]] | None:
    """``(step, metrics)`` of the training row Lightning logs right after a checkpoint saved now, or ``None``.

    A save in ``on_train_batch_end`` precedes that batch's row (step ``global_step - 1``) when the row is due
    (``trainer.log_every_n_steps``); a save in ``on_train_epoch_end`` precedes the epoch's row (its last
    step). The row is what Lightning's logger connector then logs (the same values, plus ``epoch``); this
    reads its internals (Lightning 2.x), checked by ``tests/reliability/test_log_at_checkpoint.py``. Call it
    on every rank: an epoch metric synced across ranks is computed here."""
    if not trainer.training or trainer.sanity_checking or trainer._results is None:
        return None
    connector = trainer._logger_connector
    epoch_loop = trainer.fit_loop.epoch_loop
    if connector._first_loop_iter is None:  # the epoch's end: logged one step back (see _FitLoop)
        step = epoch_loop._batches_that_stepped - 1
    else:
        accumulating = epoch_loop._should_accumulate() and trainer.lightning_module.automatic_optimization
        if accumulating or not (connector.should_update_logs or trainer.fast_dev_run):
            return None
        step = epoch_loop._batches_that_stepped
    metrics = convert_tensors_to_scalars(connector.metrics["log"])
    if not metrics or "step" in metrics:
        return None
    metrics.setdefault("epoch", trainer.current_epoch)
    return step, metrics


class _ResumingWriter(ExperimentWriter):
    """Lightning's writer, except that on a resume it keeps the covered rows of an existing ``metrics.csv``
    (see :func:`row_precedes_resume`) instead of deleting the file."""

    def __init__(self, log_dir: str, resume_step: int | None) -> None:
        self.resume_step = resume_step
        super().__init__(log_dir)

    def _check_log_dir_exists(self) -> None:
        if self.resume_step is None or not self._fs.isfile(self.metrics_file_path):
            super()._check_log_dir_exists()
            return
        with self._fs.open(self.metrics_file_path, "r", newline="") as fh:
            reader = csv.DictReader(fh)
            header = list(reader.fieldnames or [])
            kept = [row for row in reader if row_precedes_resume(row, self.resume_step)]

        def write(tmp: str) -> None:
            with open(tmp, "w", newline="") as fh:
                writer = csv.DictWriter(fh, fieldnames=header)
                writer.writeheader()
                writer.writerows(kept)

        atomic_write(self.metrics_file_path, write)
        self.metrics_keys = header


class ResumableCSVLogger(CSVLogger):
    """``CSVLogger`` that continues ``metrics.csv`` when the run resumes from a checkpoint.

    Args:
        save_dir, name, version, prefix: as for Lightning's ``CSVLogger``.
        flush_logs_every_n_steps: write the buffered rows every this many steps (default 1: every step, so
            a killed run loses no row).

    Call :meth:`resume_from` with the checkpoint's global step before the first row is logged; without it
    (a fresh run) an existing ``metrics.csv`` in the folder is replaced, as Lightning does.
    """

    def __init__(
        self,
        save_dir: _PATH,
        name: str | None = "csv",
        version: int | str | None = "",
        prefix: str = "",
        flush_logs_every_n_steps: int = 1,
    ) -> None:
        super().__init__(
            save_dir,
            name=name,
            version=version,
            prefix=prefix,
            flush_logs_every_n_steps=flush_logs_every_n_steps,
        )
        self._resume_step: int | None = None
        self._written_ahead: tuple[int, dict[str, float]] | None = None

    def resume_from(self, global_step: int) -> None:
        """Keep the rows of the earlier run up to the checkpoint at ``global_step``."""
        if self._experiment is not None:
            raise RuntimeError("resume_from() must be called before the logger writes anything")
        self._resume_step = global_step

    def write_before_checkpoint(self, trainer: L.Trainer) -> None:
        """Write every row the checkpoint being saved covers: the buffered rows and the training row Lightning
        logs right after the save (:func:`row_logged_after_save`), which :meth:`log_metrics` then skips.
        Call on every rank while the checkpoint is built (``on_save_checkpoint``)."""
        row = row_logged_after_save(trainer)
        self._write_ahead(row)

    @rank_zero_only
    def _write_ahead(self, row: tuple[int, dict[str, float]] | None) -> None:
        if row is not None and row != self._written_ahead:
            step, metrics = row
            super().log_metrics(metrics, step)
            self._written_ahead = row
        self.save()

    @rank_zero_only
    def log_metrics(self, metrics: Mapping[str, float], step: int | None = None) -> None:
        """Log a row, unless it is the row written ahead of a checkpoint (its values at its step)."""
        if self._written_ahead is not None and self._written_ahead == (step, dict(metrics)):
            self._written_ahead = None
            return
        super().log_metrics(metrics, step)

    @property
    @rank_zero_experiment
    def experiment(self) -> ExperimentWriter:
        if self._experiment is None:
            self._fs.makedirs(self.root_dir, exist_ok=True)
            self._experiment = _ResumingWriter(self.log_dir, self._resume_step)
        return self._experiment
