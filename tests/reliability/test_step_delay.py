"""The test helper StepDelay (tests/helpers/fakes.py): validates its setting and only waits."""

from __future__ import annotations

import math

import pytest
import torch

from hybrid_ir.utils.errors import ConfigError
from tests.helpers import fakes
from tests.helpers.fakes import StepDelay


@pytest.mark.parametrize("seconds", [-1, math.nan, math.inf, "1", True])
def test_rejects_bad_settings(seconds: object) -> None:
    with pytest.raises(ConfigError, match=r"StepDelay\.seconds must be"):
        StepDelay(seconds)  # type: ignore[arg-type]


def test_sleeps_after_each_batch_without_drawing_random_numbers(monkeypatch: pytest.MonkeyPatch) -> None:
    slept: list[float] = []
    monkeypatch.setattr(fakes.time, "sleep", slept.append)
    state = torch.get_rng_state()
    callback = StepDelay(0.25)
    for i in range(3):
        callback.on_train_batch_end(None, None, None, None, i)  # type: ignore[arg-type]
    assert slept == [0.25, 0.25, 0.25]
    assert torch.equal(torch.get_rng_state(), state)
