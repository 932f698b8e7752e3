"""Multi-process test helpers: run a worker on several CPU processes that join one gloo group."""

from __future__ import annotations

import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import timedelta
from typing import Any

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from tests.helpers.repo import REPO

# Where the workers find the rendezvous store that the parent hosts (see :func:`spawn`).
HOST = "127.0.0.1"
STORE_TIMEOUT = timedelta(seconds=120)


def spawn(fn: Callable[..., None], *args: Any, nprocs: int = 2, timeout_s: float = 120.0) -> None:
    """Run ``fn(rank, port, *args)`` in ``nprocs`` fresh processes and wait for them; the test fails if they do
    not finish within ``timeout_s`` seconds, and an exception in a worker is re-raised.

    ``port`` is that of a TCP key-value store this process hosts for the spawn (bound to port 0, so the OS picks
    a free one, and held until the workers end): the workers rendezvous through it as clients
    (:func:`gloo_group`; Lightning's DDP with ``TORCHELASTIC_USE_AGENT_STORE=True``, see :data:`AGENT_STORE_ENV`).
    A port picked free, released and bound again by rank 0 could be taken in between by another process.

    Spawned processes unpickle ``fn`` by its module name (``tests.<package>.<module>``), so the repository root
    must be on their import path; spawn copies the parent's ``sys.path``.
    """
    if str(REPO) not in sys.path:
        sys.path.insert(0, str(REPO))
    store = dist.TCPStore(HOST, 0, is_master=True, timeout=STORE_TIMEOUT, wait_for_workers=False)
    ctx = mp.spawn(fn, args=(store.port, *args), nprocs=nprocs, join=False)
    deadline = time.monotonic() + timeout_s
    while not ctx.join(timeout=1.0):
        if time.monotonic() > deadline:
            for proc in ctx.processes:
                proc.terminate()
            pytest.fail(f"distributed workers did not finish within {timeout_s:.0f} s")


# The environment of a worker whose Lightning DDP rendezvous (env://, MASTER_ADDR/MASTER_PORT) connects to the
# store :func:`spawn` hosts instead of rank 0 hosting one.
AGENT_STORE_ENV = {"MASTER_ADDR": HOST, "TORCHELASTIC_USE_AGENT_STORE": "True"}


@contextmanager
def gloo_group(rank: int, port: int, world_size: int) -> Iterator[None]:
    """Join a ``world_size``-process gloo group as ``rank`` through the store :func:`spawn` hosts at ``port``
    (one intra-op thread, so the processes do not fight over the cores) and leave it on exit."""
    torch.set_num_threads(1)
    store = dist.TCPStore(HOST, port, is_master=False, timeout=STORE_TIMEOUT)
    dist.init_process_group("gloo", store=store, rank=rank, world_size=world_size)
    try:
        yield
    finally:
        dist.destroy_process_group()
