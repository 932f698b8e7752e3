"""Where data and caches live: one place to resolve the data root and the user cache directory.
See docs/data.md."""

from __future__ import annotations

import os
from pathlib import Path

DATA_ENV = "HYBRID_IR_DATA"
CACHE_ENV = "HYBRID_IR_CACHE"


def cache_root() -> Path:
    """The user cache directory, not created: ``$HYBRID_IR_CACHE``, else ``$XDG_CACHE_HOME/hybrid_ir``, else
    ``~/.cache/hybrid_ir``."""
    root = os.environ.get(CACHE_ENV)
    if root:
        return Path(root)
    xdg = os.environ.get("XDG_CACHE_HOME")
    return (Path(xdg) if xdg else Path.home() / ".cache") / "hybrid_ir"


def cache_dir(sub: str | None = None) -> Path:
    """The user cache directory (:func:`cache_root`), or its subfolder ``sub``, created on demand."""
    path = cache_root() / sub if sub else cache_root()
    path.mkdir(parents=True, exist_ok=True)
    return path


def default_data_root() -> Path:
    """The data root: ``$HYBRID_IR_DATA`` if set, else ``<cache>/data`` (where loaders download missing
    datasets). (The Makefile sets ``$HYBRID_IR_DATA`` to a ``shared/data`` folder beside the checkout when there is
    one; see ``docs/data.md``.)"""
    env = os.environ.get(DATA_ENV)
    if env:
        return Path(env)
    return cache_dir("data")


def resolve_data_root(root: str | Path | None) -> Path:
    """The data root to read: ``root`` (``~`` expanded) when set (``data.root``), else :func:`default_data_root`."""
    return Path(root).expanduser() if root else default_data_root()
