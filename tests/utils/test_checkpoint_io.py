"""``read_checkpoint``, the one loader of ``train.py``, ``evaluate.py`` and ``mine.py``: a checkpoint in either
torch format is read (its step without its tensors), every other file is one ConfigError naming it."""

from __future__ import annotations

import re
from collections.abc import Callable
from pathlib import Path

import pytest
import torch

from hybrid_ir.utils.checkpoint_io import checkpoint_global_step, read_checkpoint
from hybrid_ir.utils.errors import ConfigError


def good_checkpoint(path: Path, zip_format: bool = True) -> Path:
    state = {"global_step": 7, "state_dict": {"w": torch.arange(20000.0)}}
    torch.save(state, path, _use_new_zipfile_serialization=zip_format)
    return path


@pytest.mark.parametrize("zip_format", [True, False], ids=["zip", "legacy"])
def test_global_step_of_either_format(tmp_path: Path, zip_format: bool) -> None:
    path = good_checkpoint(tmp_path / "last.ckpt", zip_format)
    assert checkpoint_global_step(path) == 7
    assert torch.equal(read_checkpoint(path)["state_dict"]["w"], torch.arange(20000.0))


def truncated(path: Path) -> None:
    good_checkpoint(path)
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])


def corrupt(path: Path) -> None:
    """A zip archive whose first entry's header was overwritten."""
    good_checkpoint(path)
    data = bytearray(path.read_bytes())
    data[:64] = b"\xff" * 64
    path.write_bytes(bytes(data))


BAD_FILES: dict[str, tuple[Callable[[Path], None], str]] = {
    "text file": (lambda p: p.write_text("not a checkpoint\n"), "not a torch.save zip archive"),
    "empty file": (lambda p: p.write_bytes(b""), "not a torch.save zip archive"),
    "cut short": (truncated, "not a torch.save zip archive: another kind of file, or one cut short"),
    "corrupt": (corrupt, "a damaged zip archive"),
    "no global_step": (lambda p: torch.save({"w": torch.ones(2)}, p), "it has no global_step and state_dict"),
}


@pytest.mark.parametrize(("make", "why"), list(BAD_FILES.values()), ids=list(BAD_FILES))
@pytest.mark.parametrize("lazy", [False, True], ids=["whole", "lazy"])
def test_a_file_that_is_no_checkpoint_is_one_config_error(
    tmp_path: Path, make: Callable[[Path], None], why: str, lazy: bool
) -> None:
    path = tmp_path / "last.ckpt"
    make(path)
    with pytest.raises(ConfigError) as info:
        read_checkpoint(path, lazy=lazy)
    message = str(info.value)
    assert message.startswith(f"ckpt_path: {path} is not a checkpoint written by train.py (")
    assert why in message
    assert re.search("weights_only|Traceback|inline_container|PytorchStreamReader", message) is None


def test_a_missing_file_is_named(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=re.escape(f"ckpt_path: {tmp_path / 'x.ckpt'} cannot be read")):
        read_checkpoint(tmp_path / "x.ckpt")
