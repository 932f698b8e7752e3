"""A crash while writing a checkpoint or ``metrics.json`` keeps the previous file intact and leaves no
temporary file behind (temporary file in the same folder + fsync + atomic rename); a checkpoint write that fails
(a full disk) is one ConfigError naming the run's checkpoint directory and the cause."""

from __future__ import annotations

import errno
import json
import os
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import torch

from hybrid_ir.utils import checkpoint_io, io
from hybrid_ir.utils.checkpoint_io import AtomicCheckpointIO
from hybrid_ir.utils.errors import ConfigError
from hybrid_ir.utils.io import atomic_write_json
from tests.helpers.repo import REPO


def checkpoint(step: int) -> dict[str, Any]:
    return {"global_step": step, "state_dict": {"w": torch.full((4, 3), float(step))}}


def disk_full_after_some_bytes(obj: Any, f: Any, *args: Any, **kwargs: Any) -> None:
    """Stands in for ``torch.save`` (given a path or an open file): writes the start of a checkpoint, then fails
    as a full disk would."""
    if isinstance(f, (str, os.PathLike)):
        with open(f, "wb") as fh:
            fh.write(b"PK\x03\x04" + b"\x00" * 1000)
    else:
        f.write(b"PK\x03\x04" + b"\x00" * 1000)
    raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))


def leftovers(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir() if p.name.endswith(".tmp"))


def disk_full_message(directory: Path) -> str:
    """The start of the one message a failed checkpoint write gives: the run's checkpoint directory and the cause."""
    return f"into the run's checkpoint directory {directory}: No space left on device ("


def test_crash_during_checkpoint_save_keeps_the_previous_one(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    plugin = AtomicCheckpointIO()
    last = tmp_path / "checkpoints" / "last.ckpt"
    plugin.save_checkpoint(checkpoint(2), last)
    monkeypatch.setattr(checkpoint_io.torch, "save", disk_full_after_some_bytes)
    with pytest.raises(ConfigError, match=re.escape(disk_full_message(last.parent))) as info:
        plugin.save_checkpoint(checkpoint(4), last)
    assert "ckpt_path=last" in str(info.value)
    monkeypatch.undo()
    restored = plugin.load_checkpoint(last)
    assert restored["global_step"] == 2
    assert torch.equal(restored["state_dict"]["w"], checkpoint(2)["state_dict"]["w"])
    assert leftovers(last.parent) == []


def test_crash_during_first_checkpoint_save_leaves_nothing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(checkpoint_io.torch, "save", disk_full_after_some_bytes)
    with pytest.raises(ConfigError, match=re.escape(disk_full_message(tmp_path))):
        AtomicCheckpointIO().save_checkpoint(checkpoint(2), tmp_path / "last.ckpt")
    assert list(tmp_path.iterdir()) == []


# A process whose files may not grow past 64 kB (RLIMIT_FSIZE; SIGXFSZ ignored, so a write fails with EFBIG as a
# full disk fails with ENOSPC) saves a checkpoint of 4 MB: torch's own writer fails, as on a full disk.
REAL_WRITE_FAILURE = """
import resource, signal, sys, torch
from hybrid_ir.utils.checkpoint_io import AtomicCheckpointIO
from hybrid_ir.utils.errors import ConfigError
signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
resource.setrlimit(resource.RLIMIT_FSIZE, (65536, 65536))
try:
    AtomicCheckpointIO().save_checkpoint({"global_step": 4, "state_dict": {"w": torch.zeros(10**6)}}, sys.argv[1])
except ConfigError as err:
    print("ConfigError:", err)
"""


def test_a_real_failed_write_names_the_directory_not_torchs_internals(tmp_path: Path) -> None:
    target = tmp_path / "checkpoints" / "last.ckpt"
    proc = subprocess.run(
        [sys.executable, "-c", REAL_WRITE_FAILURE, str(target)],
        env={**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1"},
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    expected = f"could not write the checkpoint last.ckpt into the run's checkpoint directory {target.parent}"
    assert proc.stdout.startswith(f"ConfigError: {expected}: File too large ("), proc.stdout + proc.stderr
    assert "inline_container" not in proc.stdout
    assert leftovers(target.parent) == []


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
