"""``checkpoint_global_step``: the step of a checkpoint in either torch format; other files are refused."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from hybrid_ir.utils.checkpoint_io import checkpoint_global_step


@pytest.mark.parametrize("zip_format", [True, False], ids=["zip", "legacy"])
def test_global_step_of_either_format(tmp_path: Path, zip_format: bool) -> None:
    path = tmp_path / "last.ckpt"
    state = {"global_step": 7, "state_dict": {"w": torch.ones(2)}}
    torch.save(state, path, _use_new_zipfile_serialization=zip_format)
    assert checkpoint_global_step(path) == 7


def test_a_file_without_a_global_step_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "weights.pt"
    torch.save({"w": torch.ones(2)}, path)
    with pytest.raises(ValueError, match="not a Lightning checkpoint"):
        checkpoint_global_step(path)


def test_a_file_that_is_no_checkpoint_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "notes.txt"
    path.write_text("not a checkpoint\n")
    with pytest.raises(ValueError, match="is not a loadable checkpoint"):
        checkpoint_global_step(path)
