"""capture_rng_state / restore_rng_state: a round trip through a weights_only checkpoint replays the same draws."""

from __future__ import annotations

import random
from pathlib import Path

import numpy as np
import pytest
import torch

from hybrid_ir.utils.rng import (
    capture_rng_state,
    capture_torch_rng_state,
    restore_rng_state,
    restore_torch_rng_state,
)


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


def test_torch_state_alone_replays_torch_draws_and_leaves_the_others() -> None:
    torch.manual_seed(4)
    np.random.seed(5)
    state = capture_torch_rng_state()
    assert set(state) == {"torch", "cuda"}
    expected = torch.rand(3).tolist()
    numpy_next = np.random.rand()
    restore_torch_rng_state(state)
    assert torch.rand(3).tolist() == expected
    assert np.random.rand() != numpy_next  # numpy's generator was not reset


def test_a_process_that_never_used_cuda_saves_no_cuda_state() -> None:
    # asking for the CUDA states would start CUDA (and take GPU memory) in a run that trains on the CPU
    if torch.cuda.is_initialized():
        pytest.skip("CUDA is already in use in this process")
    assert capture_rng_state()["cuda"] == []
    assert not torch.cuda.is_initialized()
