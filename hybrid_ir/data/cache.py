"""Build-once cache entries: the steps the record tables (:mod:`hybrid_ir.data.formats.record_table`) and the token
stores (:mod:`hybrid_ir.data.runtime.token_store`) share.

An entry is a folder ``<cache>/<kind>/<name>`` (``<cache>``: ``$HYBRID_IR_CACHE``, see
:func:`~hybrid_ir.utils.paths.cache_root`) whose files its reader checks against its ``meta.json``.

* A complete entry is opened without writing anything (no lock file, no file touched), so a read-only cache, e.g. a
  cluster's shared one built once before the launch, serves every entry it holds.
* A missing entry, or one that does not open (a killed build, a damaged copy), is built by the first process to take
  its file lock ``<name>.lock``, into a temporary folder ``.<name>.tmp@<host>@<pid>`` renamed into place when
  complete; the other processes of the machine wait on the lock, then open the finished entry.
* Before a build, the temporary folders that builds on this host left behind when their process died (killed, out
  of memory) are removed; those of live processes and of other hosts are kept.
* A cache that cannot be written where a build is needed, and an ``OSError`` while building (disk full, quota), are
  a :class:`~hybrid_ir.utils.errors.DataError` naming the entry, the cache root, the cause and what to do; the
  temporary folder is removed, so nothing partial is left for a later run to open.

See docs/data.md.
"""

from __future__ import annotations

import errno
import hashlib
import logging
import os
import shutil
import socket
from collections.abc import Callable
from contextlib import ExitStack
from pathlib import Path
from typing import TypeVar

from hybrid_ir.utils.errors import DataError
from hybrid_ir.utils.io import file_lock
from hybrid_ir.utils.paths import CACHE_ENV, cache_root

log = logging.getLogger(__name__)

T = TypeVar("T")
SAMPLE_BYTES = 3 << 20  # what the content sample of one input reads at most, shared among its files ...
SAMPLE_BLOCK = 4096  # ... in blocks of this many bytes between the first and last third
_FULL = {errno.ENOSPC, errno.EDQUOT, errno.EFBIG}
_READ_ONLY = {errno.EROFS, errno.EACCES, errno.EPERM}


def entry_path(kind: str, name: str) -> Path:
    """Where the entry ``name`` of ``kind`` (``tables``, ``stores``) lives: ``<cache>/<kind>/<name>`` (not created)."""
    return cache_root() / kind / name


def open_entry(
    path: Path, what: str, load: Callable[[Path], T | None], build: Callable[[Path], None]
) -> tuple[T, bool]:
    """``(entry, built)``: what ``load(path)`` opens (``None``: missing or incomplete) or, failing that, the entry that
    ``build(tmp)`` writes into the empty folder ``tmp`` and ``load`` then opens (see the module docstring). ``what``
    names the entry in messages (``"record table"``)."""
    found = load(path)
    if found is not None:
        return found, False
    with ExitStack() as stack:
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            stack.enter_context(file_lock(path.with_name(path.name + ".lock")))
        except OSError as err:
            raise _not_writable(path, what, err) from None
        found = load(path)
        if found is not None:
            return found, False
        _remove_stale_builds(path.parent)
        tmp = path.with_name(f".{path.name}.tmp@{socket.gethostname()}@{os.getpid()}")
        try:
            if path.exists():
                log.warning("rebuilding the damaged or incomplete %s %s", what, path)
                shutil.rmtree(path)
            shutil.rmtree(tmp, ignore_errors=True)
            tmp.mkdir()
            build(tmp)
            os.replace(tmp, path)
            log.info("built the %s %s", what, path)
        except OSError as err:
            shutil.rmtree(tmp, ignore_errors=True)
            raise _write_failed(path, what, err) from None
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
    found = load(path)
    if found is None:
        raise RuntimeError(f"the {what} {path} just built does not read back; is the disk full?")
    return found, True


def content_sample(file: Path, budget: int = SAMPLE_BYTES) -> str:
    """A hash (BLAKE2b) of the whole file when it is no larger than ``budget`` bytes, else of its first and last
    ``budget // 3`` bytes and of blocks of :data:`SAMPLE_BLOCK` bytes spread evenly between them (``budget // 3`` bytes
    in all): a cheap content check, ``budget`` bytes read however large the file, that sees any edit of a small file
    and, in a large one, an edit that touches a sampled byte."""
    digest = hashlib.blake2b(digest_size=16)
    size = file.stat().st_size
    with open(file, "rb") as fh:
        if size <= budget:
            for chunk in iter(lambda: fh.read(1 << 20), b""):
                digest.update(chunk)
            return digest.hexdigest()
        edge = budget // 3
        count = (budget - 2 * edge) // SAMPLE_BLOCK
        span = size - 2 * edge - SAMPLE_BLOCK
        blocks = [(edge + span * i // max(count - 1, 1), SAMPLE_BLOCK) for i in range(count)]
        for offset, length in [(0, edge), *blocks, (size - edge, edge)]:
            fh.seek(offset)
            digest.update(fh.read(length))
    return digest.hexdigest()


def _remove_stale_builds(folder: Path) -> None:
    """Remove the temporary folders under ``folder`` whose build ran on this host in a process that is gone."""
    host = socket.gethostname()
    for tmp in folder.glob(".*.tmp@*@*"):
        _, tmp_host, pid = tmp.name.rsplit("@", 2)
        if tmp_host == host and pid.isdigit() and int(pid) > 0 and not _alive(int(pid)):
            log.warning("removing %s, left by a build whose process (%s) is gone", tmp, pid)
            shutil.rmtree(tmp, ignore_errors=True)


def _alive(pid: int) -> bool:
    """Whether a process ``pid`` exists on this host (another user's included)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _cache_named(path: Path) -> str:
    """The cache root an entry's ``path`` lies in, and where that root comes from."""
    root = path.parents[1]
    if os.environ.get(CACHE_ENV):
        return f"the cache {root} (${CACHE_ENV})"
    return f"the cache {root} (the default; ${CACHE_ENV} overrides it)"


def _cause(err: OSError) -> str:
    return os.strerror(err.errno) if err.errno else str(err)


def _read_only_advice(path: Path) -> str:
    return (
        f"build it once where {_cache_named(path)} is writable (the same command, e.g. on the login node, "
        f"before the launch), or set {CACHE_ENV} to a writable node-local folder"
    )


def _not_writable(path: Path, what: str, err: OSError) -> DataError:
    """The error for an entry that must be built in a cache that cannot be written."""
    return DataError(
        path,
        what,
        f"missing or incomplete, and it cannot be built there ({_cause(err)}): {_read_only_advice(path)}",
    )


def _write_failed(path: Path, what: str, err: OSError) -> DataError:
    """The error for an ``OSError`` while building an entry: the cause and what to do about it."""
    if err.errno in _FULL:
        advice = f"free space on the disk of {_cache_named(path)}, or point {CACHE_ENV} at a folder on a larger disk"
    elif err.errno in _READ_ONLY:
        advice = _read_only_advice(path)
    else:
        advice = f"check the disk of {_cache_named(path)}, or point {CACHE_ENV} at a folder on another disk"
    return DataError(
        path, what, f"could not be written ({_cause(err)}; the partial copy was removed): {advice}"
    )
