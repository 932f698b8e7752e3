"""Debugging aids for runs, enabled from the command line (never part of the default configs)."""

from __future__ import annotations

import math
import time
from typing import Any

import lightning as L

from hybrid_ir.utils.errors import ConfigError


class StepDelay(L.Callback):
    """Sleep ``seconds`` after every training batch, e.g. to make a seconds-long run slow enough to interrupt::

        python train.py experiment=smoke +callbacks.step_delay._target_=hybrid_ir.utils.debug.StepDelay \\
            +callbacks.step_delay.seconds=0.5

    It only waits: it holds no state and draws no random numbers, so a delayed run trains exactly as an
    undelayed one.
    """

    def __init__(self, seconds: float) -> None:
        super().__init__()
        if isinstance(seconds, bool) or not isinstance(seconds, (int, float)) or not math.isfinite(seconds):
            raise ConfigError(f"StepDelay.seconds must be a finite number >= 0, got {seconds!r}")
        if seconds < 0:
            raise ConfigError(f"StepDelay.seconds must be >= 0, got {seconds!r}")
        self.seconds = float(seconds)

    def on_train_batch_end(
        self, trainer: L.Trainer, pl_module: L.LightningModule, outputs: Any, batch: Any, batch_idx: int
    ) -> None:
        time.sleep(self.seconds)
