"""The global random-number state of a process, as plain tensors and numbers (``weights_only``-loadable).

A resumed run must draw the same random numbers (dropout masks) as the uninterrupted run would have, so the
state is saved in every checkpoint and restored right before the first resumed training step. Training steps
draw from torch's generators only; :class:`~hybrid_ir.training.module.BiEncoderModule` keeps their state from
one step to the next (:func:`capture_torch_rng_state`, cheap enough for every step), numpy's and Python's are
saved as they are when the checkpoint is written.

See docs/reliability.md.
"""

from __future__ import annotations

import random
from typing import Any

import numpy as np
import torch


def capture_torch_rng_state() -> dict[str, Any]:
    """``{"torch": uint8 tensor, "cuda": [uint8 tensor per device]}``: torch's CPU generator and, once CUDA is
    in use, every CUDA device's (a process that never used CUDA has drawn nothing from them; asking would
    start CUDA)."""
    return {
        "torch": torch.get_rng_state(),
        "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_initialized() else [],
    }


def restore_torch_rng_state(state: dict[str, Any]) -> None:
    """Set torch's generators to a :func:`capture_torch_rng_state` result (CUDA states only when the device
    count matches)."""
    torch.set_rng_state(state["torch"])
    cuda = state.get("cuda") or []
    if cuda and torch.cuda.is_available() and len(cuda) == torch.cuda.device_count():
        torch.cuda.set_rng_state_all(cuda)


def capture_rng_state() -> dict[str, Any]:
    """The states of torch (:func:`capture_torch_rng_state`), numpy's global generator and Python's ``random``.

    Returns ``{"torch": uint8 tensor, "cuda": [uint8 tensor per device], "numpy": {...}, "python": (...)}``;
    numpy's MT19937 key [624] is stored as an int64 tensor so that a ``weights_only`` load accepts it."""
    np_state = np.random.get_state(legacy=False)
    return {
        **capture_torch_rng_state(),
        "numpy": {
            "key": torch.from_numpy(np_state["state"]["key"].astype(np.int64)),
            "pos": int(np_state["state"]["pos"]),
            "has_gauss": int(np_state["has_gauss"]),
            "gauss": float(np_state["gauss"]),
        },
        "python": random.getstate(),
    }


def restore_rng_state(state: dict[str, Any]) -> None:
    """Set the global generators to a :func:`capture_rng_state` result."""
    restore_torch_rng_state(state)
    np_state = state["numpy"]
    np.random.set_state(
        {
            "bit_generator": "MT19937",
            "state": {"key": np_state["key"].numpy().astype(np.uint32), "pos": np_state["pos"]},
            "has_gauss": np_state["has_gauss"],
            "gauss": np_state["gauss"],
        }
    )
    version, internal, gauss = state["python"]
    random.setstate((version, tuple(internal), gauss))
