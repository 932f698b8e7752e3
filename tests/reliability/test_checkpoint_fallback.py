"""``ckpt_path=last`` after a checkpoint write that failed (a full disk, a copy cut short): when
``checkpoints/last.ckpt`` is missing or not a complete checkpoint, the newest complete checkpoint beside it is used,
and a warning says so; with none, one ConfigError naming the file."""

from __future__ import annotations

import logging
import re
from pathlib import Path

import pytest
import torch

from hybrid_ir.tasks.checks import resolve_ckpt_path
from hybrid_ir.utils.errors import ConfigError


def save(path: Path, step: int) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save({"global_step": step, "state_dict": {"w": torch.full((100, 10), float(step))}}, path)
    return path


def cut_short(path: Path) -> None:
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 3])


@pytest.fixture
def run_dir(tmp_path: Path) -> Path:
    """A run whose step checkpoints at steps 2 and 4 are complete (names as ModelCheckpoint writes them)."""
    save(tmp_path / "checkpoints" / "epoch00-step000002.ckpt", 2)
    save(tmp_path / "checkpoints" / "epoch00-step000004.ckpt", 4)
    return tmp_path


def warnings_of(caplog: pytest.LogCaptureFixture) -> str:
    return "\n".join(r.getMessage() for r in caplog.records if r.levelno == logging.WARNING)


def test_an_incomplete_last_falls_back_to_the_newest_complete_checkpoint(
    run_dir: Path, caplog: pytest.LogCaptureFixture
) -> None:
    last = save(run_dir / "checkpoints" / "last.ckpt", 6)
    cut_short(last)
    save(run_dir / "checkpoints" / "epoch00-step000005.ckpt", 5)
    cut_short(run_dir / "checkpoints" / "epoch00-step000005.ckpt")  # the newest step file is broken too
    with caplog.at_level(logging.WARNING):
        chosen = resolve_ckpt_path("last", run_dir)
    assert chosen == str(run_dir / "checkpoints" / "epoch00-step000004.ckpt")
    assert (
        f"ckpt_path=last: {last} is not a complete checkpoint; resuming from the newest complete checkpoint "
        "beside it, epoch00-step000004.ckpt (global step 4)" in warnings_of(caplog)
    )


def test_a_missing_last_falls_back_to_the_newest_complete_checkpoint(
    run_dir: Path, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.WARNING):
        chosen = resolve_ckpt_path("last", run_dir)
    assert chosen == str(run_dir / "checkpoints" / "epoch00-step000004.ckpt")
    assert f"{run_dir / 'checkpoints' / 'last.ckpt'} is missing; resuming from" in warnings_of(caplog)


def test_a_complete_last_is_used_as_it_is(run_dir: Path, caplog: pytest.LogCaptureFixture) -> None:
    last = save(run_dir / "checkpoints" / "last.ckpt", 4)
    with caplog.at_level(logging.WARNING):
        assert resolve_ckpt_path("last", run_dir) == str(last)
    assert warnings_of(caplog) == ""


def test_an_incomplete_last_alone_is_one_error_naming_it(tmp_path: Path) -> None:
    last = save(tmp_path / "checkpoints" / "last.ckpt", 4)
    cut_short(last)
    with pytest.raises(
        ConfigError, match=re.escape(f"ckpt_path: {last} is not a checkpoint written by train.py")
    ):
        resolve_ckpt_path("last", tmp_path)
