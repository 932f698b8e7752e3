"""Build-once cache entries: what the content sample of a table key sees, stale temporary folders of dead builds, a
read-only cache and a full disk (the record table and the token store test the same with their own writers)."""

from __future__ import annotations

import errno
import os
import socket
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from hybrid_ir.data import cache as cache_module
from hybrid_ir.data.cache import content_sample, entry_path, open_entry
from hybrid_ir.utils.errors import DataError
from tests.helpers.cache_faults import read_only


@pytest.fixture
def root(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("HYBRID_IR_CACHE", str(tmp_path / "cache"))
    return tmp_path / "cache"


def load(path: Path) -> str | None:
    """A one-file entry: its text, or ``None`` when missing."""
    try:
        return (path / "value.txt").read_text(encoding="utf-8")
    except OSError:
        return None


def build(tmp: Path) -> None:
    (tmp / "value.txt").write_text("built", encoding="utf-8")


def dead_pid() -> int:
    """The pid of a process that has exited (and been reaped)."""
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return proc.pid


def tree(root: Path) -> dict[str, tuple[int, int]]:
    """Every file and folder under ``root``: its size and modification time."""
    out = {}
    for folder, dirs, files in os.walk(root):
        for name in [*dirs, *files]:
            st = os.stat(os.path.join(folder, name))
            out[os.path.relpath(os.path.join(folder, name), root)] = (st.st_size, st.st_mtime_ns)
    return out


def test_the_content_sample_sees_sampled_edits_and_reads_a_bounded_amount(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A small file is hashed whole; in a large one the first and last bytes and evenly spread blocks are, and an
    edit outside them is not seen (the documented limit); a large file costs a bounded read."""
    small = tmp_path / "small.jsonl"
    small.write_bytes(bytes(range(256)) * 40)
    before = content_sample(small)
    data = bytearray(small.read_bytes())
    data[5000] ^= 1
    small.write_bytes(data)
    assert content_sample(small) != before

    # a budget of 192 bytes: 64 at each end and 4 blocks of 16 at 64, 3669, 7274 and 10880 of a 10 960-byte file
    monkeypatch.setattr(cache_module, "SAMPLE_BLOCK", 16)
    large = tmp_path / "large.jsonl"
    large.write_bytes(bytes(range(256)) * 42 + bytes(208))
    seen = {}
    for offset in (0, 10_959, 3_670, 7_289, 2_000):
        base = content_sample(large, budget=192)
        data = bytearray(large.read_bytes())
        data[offset] ^= 1
        large.write_bytes(data)
        seen[offset] = content_sample(large, budget=192) != base
    assert seen == {0: True, 10_959: True, 3_670: True, 7_289: True, 2_000: False}

    monkeypatch.undo()
    sparse = tmp_path / "sparse.bin"
    with open(sparse, "wb") as fh:
        fh.truncate(1 << 30)
    read: list[int] = []
    real_open = open

    class Counting:
        """A file that counts the bytes read from it."""

        def __init__(self, fh: Any) -> None:
            self.fh = fh

        def read(self, n: int) -> bytes:
            data = self.fh.read(n)
            read.append(len(data))
            return data

        def __getattr__(self, name: str) -> Any:
            return getattr(self.fh, name)

        def __enter__(self) -> Counting:
            return self

        def __exit__(self, *exc: object) -> None:
            self.fh.close()

    monkeypatch.setattr(cache_module, "open", lambda *a, **k: Counting(real_open(*a, **k)), raising=False)
    content_sample(sparse)
    assert sum(read) == 3 << 20  # of 1 GiB


def test_stale_temporary_folders_of_dead_builds_are_removed_at_the_next_build(root: Path) -> None:
    """Only folders of this host whose process is gone go; a live builder's and another host's stay."""
    folder = root / "tables"
    host, dead = socket.gethostname(), dead_pid()
    stale = folder / f".old-abc.tmp@{host}@{dead}"
    live = folder / f".other-def.tmp@{host}@{os.getpid()}"
    foreign = folder / f".old-abc.tmp@another-{host}@{dead}"
    for tmp in (stale, live, foreign):
        tmp.mkdir(parents=True)
        (tmp / "records.arrow").write_bytes(b"partial" * 100)
    assert open_entry(entry_path("tables", "entry"), "record table", load, build) == ("built", True)
    assert sorted(p.name for p in folder.iterdir()) == sorted(
        [live.name, foreign.name, "entry", "entry.lock"]
    )


def test_a_complete_entry_opens_in_a_read_only_cache_and_a_needed_build_says_what_to_do(
    root: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = entry_path("stores", "entry")
    assert open_entry(path, "token store", load, build) == ("built", True)
    before = tree(root)
    read_only(monkeypatch, root)
    assert open_entry(path, "token store", load, build) == ("built", False)
    for missing in (
        entry_path("stores", "other"),
        entry_path("tables", "other"),
    ):  # tables/ cannot be created
        with pytest.raises(DataError) as err:
            open_entry(missing, "token store", load, build)
        assert str(err.value) == (
            f"{missing}: token store: missing or incomplete, and it cannot be built there (Read-only file system): "
            f"build it once where the cache {root} ($HYBRID_IR_CACHE) is writable (the same command, e.g. on the "
            "login node, before the launch), or set HYBRID_IR_CACHE to a writable node-local folder"
        )
    assert tree(root) == before


@pytest.mark.parametrize(
    ("code", "advice"),
    [
        (
            errno.ENOSPC,
            "free space on the disk of the cache {root} ($HYBRID_IR_CACHE), or point HYBRID_IR_CACHE "
            "at a folder on a larger disk",
        ),
        (
            errno.EDQUOT,
            "free space on the disk of the cache {root} ($HYBRID_IR_CACHE), or point HYBRID_IR_CACHE "
            "at a folder on a larger disk",
        ),
        (
            errno.EIO,
            "check the disk of the cache {root} ($HYBRID_IR_CACHE), or point HYBRID_IR_CACHE at a folder "
            "on another disk",
        ),
    ],
    ids=["full", "quota", "io-error"],
)
def test_a_write_error_while_building_is_one_error_and_leaves_nothing(
    root: Path, code: int, advice: str
) -> None:
    def half_build(tmp: Path) -> None:
        (tmp / "tokens.bin").write_bytes(b"partial" * 100)
        raise OSError(code, os.strerror(code))

    path = entry_path("stores", "entry")
    with pytest.raises(DataError) as err:
        open_entry(path, "token store", load, half_build)
    assert str(err.value) == (
        f"{path}: token store: could not be written ({os.strerror(code)}; the partial copy was removed): "
        + advice.format(root=root)
    )
    assert [p.name for p in (root / "stores").iterdir()] == ["entry.lock"]
    assert open_entry(path, "token store", load, build) == ("built", True)
