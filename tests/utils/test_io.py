"""atomic_write: the target is replaced whole or not at all, and no temporary file survives."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from hybrid_ir.utils.io import atomic_write, atomic_write_json, atomic_write_text


def test_atomic_write_creates_parents_and_writes(tmp_path: Path) -> None:
    target = tmp_path / "a" / "b" / "out.bin"
    result = atomic_write(target, lambda tmp: Path(tmp).write_bytes(b"\x00\x01payload"))
    assert result == target
    assert target.read_bytes() == b"\x00\x01payload"
    assert [p.name for p in target.parent.iterdir()] == ["out.bin"]


def test_failing_writer_keeps_the_old_file_and_leaves_no_temp(tmp_path: Path) -> None:
    target = tmp_path / "out.txt"
    target.write_text("old content", encoding="utf-8")

    def half_write(tmp: str) -> None:
        Path(tmp).write_text("new but incomp", encoding="utf-8")
        raise RuntimeError("crash while writing")

    with pytest.raises(RuntimeError, match="crash while writing"):
        atomic_write(target, half_write)
    assert target.read_text(encoding="utf-8") == "old content"
    assert [p.name for p in tmp_path.iterdir()] == ["out.txt"]


def test_failing_writer_without_old_file_creates_nothing(tmp_path: Path) -> None:
    def fail(tmp: str) -> None:
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        atomic_write(tmp_path / "never.txt", fail)
    assert list(tmp_path.iterdir()) == []


def test_atomic_write_text_and_json_replace(tmp_path: Path) -> None:
    target = tmp_path / "x.json"
    atomic_write_text(target, "first")
    atomic_write_json(target, {"ü": [1, 2]})
    text = target.read_text(encoding="utf-8")
    assert json.loads(text) == {"ü": [1, 2]}
    assert "ü" in text and text.endswith("\n")
    assert [p.name for p in tmp_path.iterdir()] == ["x.json"]


def test_atomic_write_gives_usual_permissions(tmp_path) -> None:
    import os

    from hybrid_ir.utils.io import atomic_write_text, current_umask

    path = atomic_write_text(tmp_path / "m.json", "{}")
    assert os.stat(path).st_mode & 0o777 == 0o666 & ~current_umask()
