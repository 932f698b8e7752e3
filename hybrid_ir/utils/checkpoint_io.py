"""Checkpoint I/O that never leaves a half-written checkpoint and never unpickles code."""

from __future__ import annotations

import os
import zipfile
from pathlib import Path
from typing import Any

import torch
from lightning.fabric.utilities.types import _PATH
from lightning.pytorch.plugins.io import TorchCheckpointIO

from hybrid_ir.utils.io import atomic_write


class AtomicCheckpointIO(TorchCheckpointIO):
    """Saves through a temporary file and an atomic rename, so a crash during a save keeps the previous
    ``last.ckpt`` intact; loads with ``weights_only=True`` (tensors and plain containers only)."""

    def save_checkpoint(
        self, checkpoint: dict[str, Any], path: _PATH, storage_options: Any | None = None
    ) -> None:
        atomic_write(Path(path), lambda tmp: torch.save(checkpoint, tmp))

    def load_checkpoint(
        self, path: _PATH, map_location: Any | None = None, weights_only: bool | None = None
    ) -> dict[str, Any]:
        if not os.path.exists(path):
            raise FileNotFoundError(f"checkpoint file not found: {path}")
        return torch.load(path, map_location=map_location or "cpu", weights_only=True)


def checkpoint_global_step(path: _PATH) -> int:
    """``global_step`` of a Lightning checkpoint, read with ``weights_only`` and without reading its tensors
    (memory-mapped; a checkpoint in torch's legacy format is read whole). Raises ``ValueError`` for a file
    that is not a Lightning checkpoint."""
    try:
        state = torch.load(path, map_location="cpu", weights_only=True, mmap=zipfile.is_zipfile(path))
    except Exception as err:
        raise ValueError(f"{path} is not a loadable checkpoint ({type(err).__name__}: {err})") from err
    if not isinstance(state, dict) or "global_step" not in state:
        raise ValueError(f"{path} is not a Lightning checkpoint (it has no global_step)")
    return int(state["global_step"])
