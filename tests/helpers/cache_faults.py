"""Disk faults for the cache tests: a read-only folder (the tests run as root, which ignores permission bits, and
cannot mount) and a disk that fills up."""

from __future__ import annotations

import builtins
import errno
import io
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pyarrow as pa
import pytest

_WRITE_FLAGS = os.O_WRONLY | os.O_RDWR | os.O_CREAT | os.O_TRUNC | os.O_APPEND
# os functions that change what is under a path: (name, index of the path argument(s))
_CHANGING = (
    "mkdir",
    "rmdir",
    "unlink",
    "remove",
    "rename",
    "replace",
    "utime",
    "chmod",
    "truncate",
    "link",
    "symlink",
)


def read_only(monkeypatch: pytest.MonkeyPatch, folder: Path) -> None:
    """Make every write under ``folder`` fail with ``EROFS``, as on a read-only mount: opening a file for writing
    (``open``, ``os.open``, ``pyarrow.OSFile``) and creating, removing, renaming or touching anything there."""
    folder = Path(os.path.realpath(folder))

    def under(path: Any, dir_fd: int | None = None) -> bool:
        if isinstance(path, int):
            return False
        name = os.fsdecode(path)
        if dir_fd is not None and not os.path.isabs(name):
            name = os.path.join(os.readlink(f"/proc/self/fd/{dir_fd}"), name)
        real = Path(os.path.realpath(name))
        return real == folder or folder in real.parents

    def refuse(path: Any) -> OSError:
        return OSError(errno.EROFS, os.strerror(errno.EROFS), os.fsdecode(path))

    real_open, real_os_open, real_osfile = builtins.open, os.open, pa.OSFile

    def guarded_open(file: Any, mode: str = "r", *args: Any, **kwargs: Any) -> Any:
        if any(c in mode for c in "wax+") and under(file):
            raise refuse(file)
        return real_open(file, mode, *args, **kwargs)

    def guarded_os_open(path: Any, flags: int, *args: Any, dir_fd: int | None = None, **kwargs: Any) -> int:
        if flags & _WRITE_FLAGS and under(path, dir_fd):
            raise refuse(path)
        return real_os_open(path, flags, *args, dir_fd=dir_fd, **kwargs)

    def guarded_osfile(path: Any, mode: str = "r", *args: Any, **kwargs: Any) -> Any:
        if mode != "r" and under(path):
            raise refuse(path)
        return real_osfile(path, mode, *args, **kwargs)

    def guard(real: Callable[..., Any]) -> Callable[..., Any]:
        def guarded(*args: Any, **kwargs: Any) -> Any:
            dir_fd = kwargs.get("dir_fd", kwargs.get("src_dir_fd"))
            for path in args[:2]:
                if isinstance(path, str | bytes | os.PathLike) and under(path, dir_fd):
                    raise refuse(path)
            return real(*args, **kwargs)

        return guarded

    monkeypatch.setattr(builtins, "open", guarded_open)
    monkeypatch.setattr(io, "open", guarded_open)
    monkeypatch.setattr(os, "open", guarded_os_open)
    monkeypatch.setattr(pa, "OSFile", guarded_osfile)
    for name in _CHANGING:
        monkeypatch.setattr(os, name, guard(getattr(os, name)))


class _FillingFile:
    """A file being written on a disk with ``room[0]`` bytes left: a write beyond that writes what fits and fails with
    ``ENOSPC``, as the operating system's would."""

    def __init__(self, fh: Any, room: list[int]) -> None:
        self.fh, self.room = fh, room

    def write(self, data: Any) -> int:
        data = memoryview(data).cast("B")
        if len(data) > self.room[0]:
            self.fh.write(data[: self.room[0]])
            self.room[0] = 0
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        self.room[0] -= len(data)
        return self.fh.write(data)

    def __getattr__(self, name: str) -> Any:
        return getattr(self.fh, name)

    def __enter__(self) -> _FillingFile:
        return self

    def __exit__(self, *exc: object) -> None:
        self.fh.close()


def filling_open(room: int) -> Callable[..., Any]:
    """An ``open`` for a module's namespace (``monkeypatch.setattr(module, "open", ...)``) whose files opened for
    writing share ``room`` bytes of free disk space (see :class:`_FillingFile`)."""
    left = [room]

    def fake_open(file: Any, mode: str = "r", *args: Any, **kwargs: Any) -> Any:
        fh = builtins.open(file, mode, *args, **kwargs)  # noqa: SIM115 (returned to the caller)
        return _FillingFile(fh, left) if "w" in mode else fh

    return fake_open
