"""Kill a real ``train.py`` process with SIGKILL mid-run and resume it with ``ckpt_path=last``; first, the same
config and seed twice give identical per-step losses, ``metrics.json`` scalars and final weights (what the resumed
run is compared with must itself be repeatable).

The resumed run must continue exactly where the uninterrupted run of the same config and seed went: the
same batches (the loader's position is in the checkpoint), the same optimiser and scheduler state, and the
same random numbers (dropout: the RNG state is in the checkpoint), so the per-step losses after the
checkpoint agree to float tolerance. See ``conftest.py`` for the runs.
"""

from __future__ import annotations

import signal

import pytest
import torch

from .runs import (
    KILL_AFTER_STEP,
    MAX_STEPS,
    TrainRuns,
    csv_table,
    eval_records,
    final_weights,
    step_losses,
)

# Four train.py processes (the session's ``train_runs``, tests/reliability/conftest.py; one module reads them, so
# that pytest-xdist's --dist loadfile starts them once): about a minute on two cores.
pytestmark = pytest.mark.slow

LOSS_TOL = 1e-5


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


def test_the_kill_lands_mid_run(train_runs: TrainRuns) -> None:
    assert train_runs.killed_while_running
    assert train_runs.killed_rc == -signal.SIGKILL
    assert KILL_AFTER_STEP <= train_runs.resume_step < MAX_STEPS


def test_resumed_losses_match_the_uninterrupted_run(train_runs: TrainRuns) -> None:
    reference = step_losses(train_runs.reference)
    resumed = step_losses(train_runs.resumed)
    start = train_runs.resume_step
    # Step s logs the loss of the (s + 1)-th batch; the checkpoint at global step g holds g batches.
    after = sorted(s for s in resumed if s >= start)
    assert after == list(range(start, MAX_STEPS))
    assert len({round(reference[s], 6) for s in after}) > 1, (
        "losses do not vary: the comparison would be weak"
    )
    for step in after:
        assert resumed[step] == pytest.approx(reference[step], abs=LOSS_TOL), f"step {step}"


def test_resumed_csv_log_keeps_the_steps_before_the_checkpoint(train_runs: TrainRuns) -> None:
    # The killed run wrote its rows as it went; the resume keeps those the checkpoint covers (steps before
    # it) and writes the rest once, so the file has every step once, as the uninterrupted run's has.
    reference = step_losses(train_runs.reference)
    resumed = step_losses(train_runs.resumed)
    rows = [r for r in csv_table(train_runs.resumed) if r["train/loss_step"]]
    assert sorted(int(r["step"]) for r in rows) == list(range(MAX_STEPS))
    for step in range(train_runs.resume_step):
        assert resumed[step] == pytest.approx(reference[step], abs=LOSS_TOL), f"step {step}"
    pretrained = [r for r in csv_table(train_runs.resumed) if r["step"] == "0" and r["eval/mlqa-r/map_multi"]]
    assert len(pretrained) == 1


def test_resumed_run_does_not_redo_the_pretrained_evaluation(train_runs: TrainRuns) -> None:
    records = eval_records(train_runs.resumed)
    assert [r["tag"] for r in records] == ["pretrained", f"epoch0-step{MAX_STEPS}"]
    assert records[0]["step"] == 0
    assert "[pretrained]" not in train_runs.resumed_log


def test_resumed_final_evaluation_matches_the_uninterrupted_run(train_runs: TrainRuns) -> None:
    reference = {r["tag"]: r for r in eval_records(train_runs.reference)}
    for record in eval_records(train_runs.resumed):
        expected = reference[record["tag"]]
        assert record["step"] == expected["step"]
        for dataset, scalars in expected["scalars"].items():
            assert record["scalars"][dataset] == pytest.approx(scalars, abs=1e-6), (record["tag"], dataset)


def test_resumed_final_weights_match_the_uninterrupted_run(train_runs: TrainRuns) -> None:
    reference, resumed = final_weights(train_runs.reference), final_weights(train_runs.resumed)
    assert reference.keys() == resumed.keys()
    for name, tensor in reference.items():
        assert torch.allclose(resumed[name], tensor, rtol=0, atol=1e-6), name
