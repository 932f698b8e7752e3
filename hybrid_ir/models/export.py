"""Export the trained encoder in ``save_pretrained`` format beside the Lightning checkpoints."""

from __future__ import annotations

import logging
import shutil
import tempfile
from pathlib import Path

import lightning as L

from hybrid_ir.utils.io import current_umask

log = logging.getLogger(__name__)


def export_encoder(module: L.LightningModule, dirpath: str | Path) -> Path:
    """Save ``module.encoder`` into ``dirpath`` atomically: write a temporary sibling directory, then swap it in,
    so a crash mid-save leaves the previous export intact. ``transformers.AutoModel.from_pretrained(dirpath)``
    and ``evaluate.py model.name_or_path=<dirpath>`` load the result."""
    target = Path(dirpath)
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}.", dir=target.parent))
    try:
        tmp.chmod(0o777 & ~current_umask())  # mkdtemp makes 0700
        module.encoder.save_pretrained(tmp)
        old = target.with_name(f".{target.name}.old")
        if target.exists():
            shutil.rmtree(old, ignore_errors=True)
            target.rename(old)
        tmp.rename(target)
        shutil.rmtree(old, ignore_errors=True)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return target


class ExportEncoderCallback(L.Callback):
    """After every epoch and at the end of training, export the encoder (rank 0) to ``dirpath``."""

    def __init__(self, dirpath: str) -> None:
        self.dirpath = dirpath
        self._exported_step: int | None = None

    def _export(self, trainer: L.Trainer, module: L.LightningModule) -> None:
        if trainer.is_global_zero and self._exported_step != trainer.global_step:
            path = export_encoder(module, self.dirpath)
            self._exported_step = trainer.global_step
            log.info("encoder exported to %s (step %d)", path, trainer.global_step)

    def on_train_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._export(trainer, pl_module)

    def on_train_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._export(trainer, pl_module)
