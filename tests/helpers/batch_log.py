"""A test-only callback that records what every training step ran on, for the multi-epoch tests."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import lightning as L


class BatchLog(L.Callback):
    """Append one JSON line per training batch to ``<dirpath>/batches-rank<r>.jsonl``: the epoch, the global
    step, the batch index, the learning rate the step uses and the batch's ``[parallel_id, q_lang, p_lang]`` pairs.

    Use from the command line: ``+callbacks.batch_log._target_=tests.helpers.batch_log.BatchLog
    +callbacks.batch_log.dirpath=<dir>``."""

    def __init__(self, dirpath: str) -> None:
        super().__init__()
        self.dirpath = Path(dirpath)

    def on_train_batch_start(
        self, trainer: L.Trainer, pl_module: L.LightningModule, batch: Any, batch_idx: int
    ) -> None:
        record = {
            "epoch": trainer.current_epoch,
            "step": trainer.global_step,
            "batch_idx": batch_idx,
            "lr": trainer.optimizers[0].param_groups[0]["lr"],
            "pairs": [
                list(p) for p in zip(batch["parallel_id"], batch["q_lang"], batch["p_lang"], strict=True)
            ],
        }
        self.dirpath.mkdir(parents=True, exist_ok=True)
        with open(self.dirpath / f"batches-rank{trainer.global_rank}.jsonl", "a") as fh:
            fh.write(json.dumps(record) + "\n")


def read_batch_log(dirpath: Path, rank: int = 0) -> list[dict[str, Any]]:
    """The records :class:`BatchLog` wrote for ``rank``, in order."""
    lines = (dirpath / f"batches-rank{rank}.jsonl").read_text().splitlines()
    return [json.loads(line) for line in lines]
