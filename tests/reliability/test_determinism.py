"""The same config and seed twice (two real ``train.py`` processes, CPU, tiny model) give identical
per-step losses, identical ``metrics.json`` scalars and identical final weights. See ``conftest.py``."""

from __future__ import annotations

import pytest
import torch

from .runs import MAX_STEPS, TrainRuns, eval_records, final_weights, step_losses

# Shares the train.py processes of test_resume.py (``train_runs``).
pytestmark = pytest.mark.slow


def test_per_step_losses_are_identical(train_runs: TrainRuns) -> None:
    first, second = step_losses(train_runs.reference), step_losses(train_runs.repeat)
    assert sorted(first) == list(range(MAX_STEPS))
    assert first == second


def test_metrics_json_scalars_are_identical(train_runs: TrainRuns) -> None:
    first, second = eval_records(train_runs.reference), eval_records(train_runs.repeat)
    assert [r["tag"] for r in first] == ["pretrained", f"epoch0-step{MAX_STEPS}"]
    assert first == second


def test_final_weights_are_identical(train_runs: TrainRuns) -> None:
    first, second = final_weights(train_runs.reference), final_weights(train_runs.repeat)
    assert first.keys() == second.keys()
    assert all(torch.equal(first[k], second[k]) for k in first)
