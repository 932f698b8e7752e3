"""Export the trained encoder beside the Lightning checkpoints: Hugging Face and sentence-transformers files
(:meth:`~hybrid_ir.models.encoder.Encoder.save_pretrained`) and a ``README.md`` model card.

See docs/models.md."""

from __future__ import annotations

import logging
import shlex
import shutil
import sys
import tempfile
from pathlib import Path
from typing import Any

import lightning as L

from hybrid_ir.models.model_card import model_card, read_records
from hybrid_ir.utils.io import atomic_write_text, current_umask

log = logging.getLogger(__name__)


CARD_FILE = "README.md"


def export_encoder(module: L.LightningModule, dirpath: str | Path, card: str | None = None) -> Path:
    """Save ``module.encoder`` (and the model ``card``, when given, as ``README.md``) into ``dirpath`` atomically:
    write a temporary sibling directory, then swap it in, so a crash mid-save leaves the previous export intact.
    ``transformers.AutoModel.from_pretrained(dirpath)``, ``sentence_transformers.SentenceTransformer(dirpath)``
    and ``evaluate.py model.name_or_path=<dirpath>`` load the result."""
    target = Path(dirpath)
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}.", dir=target.parent))
    try:
        tmp.chmod(0o777 & ~current_umask())  # mkdtemp makes 0700
        module.encoder.save_pretrained(tmp)
        if card is not None:
            (tmp / CARD_FILE).write_text(card, encoding="utf-8")
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


def training_summary(trainer: L.Trainer, module: L.LightningModule) -> dict[str, Any]:
    """What the model card says about training: sampler, α, batch size, steps, precision, lr, temperature."""
    datamodule = getattr(trainer, "datamodule", None)
    loss = getattr(module, "loss", None)
    return {
        "sampler": getattr(datamodule, "mode", "unknown"),
        "alpha": getattr(datamodule, "alpha", None),
        "batch_size": getattr(datamodule, "batch_size", None),
        "steps": trainer.global_step,
        "precision": str(getattr(trainer, "precision", "unknown")),
        "lr": module.hparams.get("lr") if hasattr(module, "hparams") else None,
        "temperature": float(loss.temperature) if loss is not None and hasattr(loss, "temperature") else None,
    }


class ExportEncoderCallback(L.Callback):
    """After every epoch and at the end of training, export the encoder (rank 0) to ``dirpath``, with a model
    card built from the run: its training data, sampler and steps, the evaluations in ``metrics_file`` (the
    run's ``metrics.json``) and the command line. At the end of fitting the card is rewritten with every
    evaluation recorded by then."""

    def __init__(self, dirpath: str, metrics_file: str | None = None) -> None:
        self.dirpath = dirpath
        self.metrics_file = metrics_file
        self._exported_step: int | None = None

    def card(self, trainer: L.Trainer, module: L.LightningModule) -> str:
        datamodule = getattr(trainer, "datamodule", None)
        return model_card(
            module.encoder.settings(),
            getattr(datamodule, "specs", []),
            training_summary(trainer, module),
            read_records(self.metrics_file),
            "python " + shlex.join(sys.argv),
        )

    def _export(self, trainer: L.Trainer, module: L.LightningModule) -> None:
        if trainer.is_global_zero and self._exported_step != trainer.global_step:
            path = export_encoder(module, self.dirpath, self.card(trainer, module))
            self._exported_step = trainer.global_step
            log.info("encoder exported to %s (step %d)", path, trainer.global_step)

    def on_train_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._export(trainer, pl_module)

    def on_train_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._export(trainer, pl_module)

    def on_fit_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if trainer.is_global_zero and self._exported_step is not None:
            atomic_write_text(Path(self.dirpath) / CARD_FILE, self.card(trainer, pl_module))
