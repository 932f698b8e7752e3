"""Multi-process test helpers: run a worker on several CPU processes that join one gloo group."""

from __future__ import annotations

import socket
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

REPO_ROOT = Path(__file__).resolve().parents[2]


def free_port() -> int:
    """A TCP port on 127.0.0.1 that was free a moment ago."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def spawn(fn: Callable[..., None], *args: Any, nprocs: int = 2, timeout_s: float = 120.0) -> None:
    """Run ``fn(rank, port, *args)`` in ``nprocs`` fresh processes (one free ``port`` for all) and wait for them;
    the test fails if they do not finish within ``timeout_s`` seconds, and an exception in a worker is re-raised.

    Spawned processes unpickle ``fn`` by its module name (``tests.<package>.<module>``), so the repository root
    must be on their import path; spawn copies the parent's ``sys.path``.
    """
    if str(REPO_ROOT) not in sys.path:
        sys.path.insert(0, str(REPO_ROOT))
    ctx = mp.spawn(fn, args=(free_port(), *args), nprocs=nprocs, join=False)
    deadline = time.monotonic() + timeout_s
    while not ctx.join(timeout=1.0):
        if time.monotonic() > deadline:
            for proc in ctx.processes:
                proc.terminate()
            pytest.fail(f"distributed workers did not finish within {timeout_s:.0f} s")


@contextmanager
def gloo_group(rank: int, port: int, world_size: int) -> Iterator[None]:
    """Join a ``world_size``-process gloo group at 127.0.0.1:``port`` as ``rank`` (one intra-op thread, so the
    processes do not fight over the cores) and leave it on exit."""
    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=world_size)
    try:
        yield
    finally:
        dist.destroy_process_group()
