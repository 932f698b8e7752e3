"""Checkpoint I/O that never leaves a half-written checkpoint and never unpickles code: the one place that reads
a checkpoint (:func:`read_checkpoint`, for ``train.py``, ``evaluate.py`` and ``mine.py`` alike) and the one that
writes one (:class:`AtomicCheckpointIO`).

See docs/reliability.md."""

from __future__ import annotations

import os
import re
import shutil
import zipfile
from pathlib import Path
from typing import Any

import torch
from lightning.fabric.utilities.types import _PATH
from lightning.pytorch.plugins.io import TorchCheckpointIO

from hybrid_ir.utils.errors import ConfigError
from hybrid_ir.utils.io import atomic_write

NOT_OURS = (
    "is not a checkpoint written by train.py ({why}); give a <run>/checkpoints/*.ckpt file written by train.py, "
    "or ckpt_path=last"
)


def read_checkpoint(path: _PATH, lazy: bool = False, map_location: Any = "cpu") -> dict[str, Any]:
    """The Lightning checkpoint of ``train.py`` at ``path`` (the value of ``ckpt_path``), loaded ``weights_only``
    (tensors and plain containers: a checkpoint never runs code) onto ``map_location``; ``lazy`` maps the tensors
    instead of reading them (for a look at its metadata). Every checkpoint ``train.py``, ``evaluate.py`` and
    ``mine.py`` read goes through here.

    Raises:
        ConfigError: naming ``ckpt_path`` and the file, when it cannot be read, is not a (complete) checkpoint,
            holds Python objects other than tensors and plain containers (refused unread: nothing in it runs),
            or lacks the ``state_dict`` and ``global_step`` every ``train.py`` checkpoint has.
    """
    path = Path(path)
    try:
        with open(path, "rb"):
            is_zip = zipfile.is_zipfile(path)
    except OSError as err:
        raise ConfigError(f"ckpt_path: {path} cannot be read ({err.strerror or err})") from None
    try:
        state = torch.load(path, map_location=map_location, weights_only=True, mmap=lazy and is_zip)
    except Exception as err:  # torch raises UnpicklingError, RuntimeError, OSError, ... for a bad file
        refused = re.search(r"Unsupported global: GLOBAL (\S+)", str(err))
        if refused:
            why = (
                f"it holds a Python object ({refused.group(1)}) that a train.py checkpoint never holds; it was "
                "refused unread, and nothing in the file ran"
            )
        elif is_zip:
            why = "a damaged zip archive: cut short or corrupt"
        else:
            why = "not a torch.save zip archive: another kind of file, or one cut short"
        raise ConfigError(f"ckpt_path: {path} {NOT_OURS.format(why=why)}") from None
    if not isinstance(state, dict) or "global_step" not in state or "state_dict" not in state:
        why = "it has no global_step and state_dict"
        raise ConfigError(f"ckpt_path: {path} {NOT_OURS.format(why=why)}")
    return state


def checkpoint_global_step(path: _PATH) -> int:
    """``global_step`` of a ``train.py`` checkpoint, read without reading its tensors (see :func:`read_checkpoint`,
    whose ``ConfigError`` it raises)."""
    return int(read_checkpoint(path, lazy=True)["global_step"])


class AtomicCheckpointIO(TorchCheckpointIO):
    """Saves through a temporary file and an atomic rename, so a crash or a full disk during a save keeps the
    previous ``last.ckpt`` intact; loads with :func:`read_checkpoint` (``weights_only``: tensors and plain
    containers only)."""

    def save_checkpoint(
        self, checkpoint: dict[str, Any], path: _PATH, storage_options: Any | None = None
    ) -> None:
        path = Path(path)
        try:
            atomic_write(path, lambda tmp: _save(checkpoint, tmp))
        except (OSError, RuntimeError) as err:
            cause = write_failure(err)
            if cause is None:
                raise
            raise ConfigError(
                f"could not write the checkpoint {path.name} into the run's checkpoint directory {path.parent}: "
                f"{cause} ({free_space(path.parent)} free there). The checkpoints already there are intact; free "
                "space on that disk, then resume this run (same hydra.run.dir) with ckpt_path=last"
            ) from None

    def load_checkpoint(
        self, path: _PATH, map_location: Any | None = None, weights_only: bool | None = None
    ) -> dict[str, Any]:
        if not os.path.exists(path):
            raise FileNotFoundError(f"checkpoint file not found: {path}")
        return read_checkpoint(path, map_location=map_location or "cpu")


def _save(checkpoint: dict[str, Any], tmp: str) -> None:
    """``torch.save`` through a Python file, so a failed write raises (or leaves as the context of torch's own
    ``RuntimeError``) the ``OSError`` that says why."""
    with open(tmp, "wb") as fh:
        torch.save(checkpoint, fh)


def write_failure(err: BaseException) -> str | None:
    """Why a checkpoint write failed, in words (``"No space left on device"``), or ``None`` when ``err`` is not a
    failed write (a bug to show as it is)."""
    seen: BaseException | None = err
    while seen is not None:
        if isinstance(seen, OSError):
            if seen.strerror:
                return seen.strerror
            return os.strerror(seen.errno) if seen.errno else str(seen) or type(seen).__name__
        seen = seen.__context__
    text = str(err)
    if "inline_container" in text or "PytorchStreamWriter" in text:
        return "torch could not write the file (is the disk full?)"
    return None


def free_space(directory: Path) -> str:
    """The free space of ``directory``'s file system, e.g. ``"12.3 MB"`` (``"unknown"`` when it cannot be
    read)."""
    try:
        free = shutil.disk_usage(directory).free
    except OSError:
        return "unknown"
    return f"{free / 1e6:.1f} MB" if free < 1e9 else f"{free / 1e9:.1f} GB"
