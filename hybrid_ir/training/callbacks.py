"""Lightning's checkpoint and early-stopping callbacks, made to tell the truth about a run's end.

:class:`LastStateCheckpoint` keeps ``last.ckpt`` the run's latest state: rewritten at the end of every epoch
(after its validation, evaluation and export) and, when ``trainer.max_steps`` ends a run mid-epoch, saved as
a mid-epoch position that a longer resumed run continues. :class:`ReportingEarlyStopping` says in the log
when and why it ended a run.

See docs/reliability.md.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from contextlib import contextmanager, nullcontext
from typing import Any

import lightning as L
from lightning.pytorch.callbacks import EarlyStopping, ModelCheckpoint
from lightning.pytorch.callbacks.early_stopping import EarlyStoppingReason
from lightning.pytorch.trainer.states import TrainerFn

log = logging.getLogger(__name__)


def epoch_cut_short(trainer: L.Trainer) -> bool:
    """Whether the training epoch now ending stopped before its last batch (``trainer.max_steps`` reached, or
    a stop requested, mid-epoch)."""
    batches = trainer.fit_loop.epoch_loop.batch_progress
    return not batches.is_last_batch and batches.current.ready < trainer.num_training_batches


@contextmanager
def unfinished_epoch(trainer: L.Trainer) -> Iterator[None]:
    """Within, the fit loop counts the current epoch as not yet processed.

    Lightning counts an epoch as processed before its ``on_train_epoch_end`` hooks, also when ``max_steps``
    cut it short; a checkpoint saved there would make a resumed run start the next epoch and never train the
    rest of this one (or, with ``max_epochs`` reached, train nothing). Counted as unprocessed, the checkpoint
    holds the loop state of a save after the epoch's last step (batches done, epoch not), which Lightning
    resumes in the middle of the epoch."""
    progress = trainer.fit_loop.epoch_progress
    progress.total.processed -= 1
    progress.current.processed -= 1
    try:
        yield
    finally:
        progress.total.processed += 1
        progress.current.processed += 1


class LastStateCheckpoint(ModelCheckpoint):
    """A ``ModelCheckpoint`` whose ``last.ckpt`` (``save_last``) is always the run's latest state.

    Lightning writes ``last.ckpt`` only with a step or epoch checkpoint, so with ``every_n_train_steps`` set it
    skips the end of an epoch (a 74-step epoch with ``every_n_train_steps=50`` ends with ``last.ckpt`` at step
    50), and a step checkpoint at an epoch's last step comes before that epoch's validation, early-stopping
    check, evaluation and export. This one also writes ``last.ckpt`` at the end of every epoch, after all of
    them, unless it has just done so. When ``trainer.max_steps`` ends the run mid-epoch, every checkpoint saved
    at that epoch's end holds the mid-epoch position (:func:`unfinished_epoch`): resumed with a larger
    ``max_steps``, the run trains the rest of the epoch. Everything else is Lightning's ``ModelCheckpoint``.
    """

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        # (global step, whether at an epoch's end) of the latest last.ckpt this run wrote
        self._last_saved_at: tuple[int, bool] | None = None
        self._in_epoch_end = False

    def _generate_state_key(self, **kwargs: Any) -> str:
        # Lightning's key: the callback state of a checkpoint written with Lightning's class is restored here
        return f"{ModelCheckpoint.__qualname__}{kwargs!r}"

    def on_train_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        position = unfinished_epoch(trainer) if epoch_cut_short(trainer) else nullcontext()
        self._in_epoch_end = True
        try:
            with position:
                super().on_train_epoch_end(trainer, pl_module)
                saved = self._last_saved_at == (trainer.global_step, True)
                if self.save_last and not saved and self._may_save(trainer):
                    self._save_last_checkpoint(trainer, self._monitor_candidates(trainer))
        finally:
            self._in_epoch_end = False

    def _save_last_checkpoint(self, trainer: L.Trainer, monitor_candidates: dict[str, Any]) -> None:
        super()._save_last_checkpoint(trainer, monitor_candidates)
        if self.save_last:
            self._last_saved_at = (trainer.global_step, self._in_epoch_end)

    @staticmethod
    def _may_save(trainer: L.Trainer) -> bool:
        """Lightning's conditions for saving at all (fitting, not a sanity check or ``fast_dev_run``)."""
        return (
            trainer.state.fn == TrainerFn.FITTING and not trainer.sanity_checking and not trainer.fast_dev_run
        )


class ReportingEarlyStopping(EarlyStopping):
    """Lightning's ``EarlyStopping`` that logs, when it ends a run, after which epoch and why: the monitored
    metric, its best value, ``patience`` and ``min_delta`` (or the threshold that was crossed). An epoch cut
    short by ``trainer.max_steps`` ran no validation, so it is not counted as one without improvement."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._stopped_run = False

    def _generate_state_key(self, **kwargs: Any) -> str:
        # Lightning's key: the callback state of a checkpoint written with Lightning's class is restored here
        return f"{EarlyStopping.__qualname__}{kwargs!r}"

    def on_train_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if epoch_cut_short(trainer):
            return
        stopping = trainer.should_stop
        super().on_train_epoch_end(trainer, pl_module)
        self._stopped_run = self._stopped_run or (trainer.should_stop and not stopping)

    def on_validation_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        stopping = trainer.should_stop
        super().on_validation_end(trainer, pl_module)
        self._stopped_run = self._stopped_run or (trainer.should_stop and not stopping)

    def on_train_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if self._stopped_run and trainer.is_global_zero:
            log.info(self.stop_message(trainer))

    def stop_message(self, trainer: L.Trainer) -> str:
        """The log line of a run this callback stopped."""
        best = f"best {self.monitor} {float(self.best_score):.6g} (mode {self.mode})"
        if self.stopping_reason == EarlyStoppingReason.PATIENCE_EXHAUSTED:
            why = (
                f"{self.monitor} did not improve by more than min_delta={abs(self.min_delta):g} in the last "
                f"{self.wait_count} validation(s) (patience={self.patience}); {best}"
            )
        else:
            why = f"{self.stopping_reason_message} ({best})"
        return (
            f"early stopping ended training after epoch {self.stopped_epoch} (global step {trainer.global_step}, "
            f"trainer.max_epochs={trainer.max_epochs}): {why}"
        )
