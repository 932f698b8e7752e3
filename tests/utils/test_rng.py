"""capture_rng_state / restore_rng_state: a round trip through a weights_only checkpoint replays the same draws."""

from __future__ import annotations

import random
from pathlib import Path

import numpy as np
import torch

from hybrid_ir.utils.rng import capture_rng_state, restore_rng_state


def draws() -> tuple[list[float], list[float], list[float], list[float]]:
    """The next few numbers of each global generator (numpy's Gaussian cache included)."""
    return (
        torch.rand(3).tolist(),
        np.random.rand(3).tolist(),
        np.random.standard_normal(3).tolist(),
        [random.random() for _ in range(3)],
    )


def test_round_trip_through_a_weights_only_checkpoint(tmp_path: Path) -> None:
    torch.manual_seed(1)
    np.random.seed(2)
    random.seed(3)
    np.random.standard_normal()  # leaves a cached Gaussian in numpy's legacy state
    path = tmp_path / "state.pt"
    torch.save({"rng": capture_rng_state()}, path)
    expected = draws()
    assert draws() != expected  # the generators moved on
    restore_rng_state(torch.load(path, weights_only=True)["rng"])
    assert draws() == expected


def test_state_is_tensors_and_plain_values() -> None:
    state = capture_rng_state()
    assert isinstance(state["torch"], torch.Tensor) and state["torch"].dtype == torch.uint8
    assert isinstance(state["numpy"]["key"], torch.Tensor) and state["numpy"]["key"].shape == (624,)
    assert state["python"][0] == random.getstate()[0]
