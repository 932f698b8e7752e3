"""A crash while writing a checkpoint or ``metrics.json`` keeps the previous file intact and leaves no
temporary file behind (temporary file in the same folder + fsync + atomic rename)."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import pytest
import torch

from hybrid_ir.utils import checkpoint_io, io
from hybrid_ir.utils.checkpoint_io import AtomicCheckpointIO
from hybrid_ir.utils.io import atomic_write_json


def checkpoint(step: int) -> dict[str, Any]:
    return {"global_step": step, "state_dict": {"w": torch.full((4, 3), float(step))}}


def disk_full_after_some_bytes(obj: Any, f: str | os.PathLike, *args: Any, **kwargs: Any) -> None:
    """Stands in for ``torch.save``: writes the start of a checkpoint, then fails as a full disk would."""
    with open(f, "wb") as fh:
        fh.write(b"PK\x03\x04" + b"\x00" * 1000)
    raise OSError(28, "No space left on device")


def leftovers(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir() if p.name.endswith(".tmp"))


def test_crash_during_checkpoint_save_keeps_the_previous_one(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    plugin = AtomicCheckpointIO()
    last = tmp_path / "checkpoints" / "last.ckpt"
    plugin.save_checkpoint(checkpoint(2), last)
    monkeypatch.setattr(checkpoint_io.torch, "save", disk_full_after_some_bytes)
    with pytest.raises(OSError, match="No space left on device"):
        plugin.save_checkpoint(checkpoint(4), last)
    monkeypatch.undo()
    restored = plugin.load_checkpoint(last)
    assert restored["global_step"] == 2
    assert torch.equal(restored["state_dict"]["w"], checkpoint(2)["state_dict"]["w"])
    assert leftovers(last.parent) == []


def test_crash_during_first_checkpoint_save_leaves_nothing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(checkpoint_io.torch, "save", disk_full_after_some_bytes)
    with pytest.raises(OSError):
        AtomicCheckpointIO().save_checkpoint(checkpoint(2), tmp_path / "last.ckpt")
    assert list(tmp_path.iterdir()) == []


def test_crash_before_metrics_json_is_renamed_keeps_the_previous_one(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The new records are fully written to the temporary file, then the process fails before the rename."""
    path = tmp_path / "metrics.json"
    old = [{"tag": "pretrained", "step": 0, "datasets": {"mlqa-r": {"scalars": {"map_multi": 0.25}}}}]
    atomic_write_json(path, old)

    def fail(fd: int) -> None:
        raise OSError(5, "Input/output error")

    monkeypatch.setattr(io.os, "fsync", fail)
    with pytest.raises(OSError, match="Input/output error"):
        atomic_write_json(path, [*old, {"tag": "epoch0", "step": 4, "datasets": {}}])
    monkeypatch.undo()
    assert json.loads(path.read_text(encoding="utf-8")) == old
    assert leftovers(tmp_path) == []
