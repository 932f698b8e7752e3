"""Real ``train.py`` processes shared by the reliability tests, started once per session.

``train_runs`` starts three runs of the same tiny configuration (:data:`runs.SMOKE`, 12 steps) at once, then
a fourth:

* ``reference`` and ``repeat``: uninterrupted runs (determinism: they must agree exactly);
* ``killed``: the same run slowed down by :class:`hybrid_ir.utils.debug.StepDelay`, SIGKILLed as soon as its
  ``checkpoints/last.ckpt`` holds step >= ``KILL_AFTER_STEP``;
* ``resumed``: the killed run's command again with ``ckpt_path=last`` in the same ``hydra.run.dir``.
"""

from __future__ import annotations

import pytest

from .runs import (
    DELAY,
    KILL_AFTER_STEP,
    RUN_TIMEOUT_S,
    SMOKE,
    TrainRuns,
    checkpoint_step,
    finish,
    kill_after_checkpoint,
    start_train,
)


@pytest.fixture(scope="session")
def train_runs(tmp_path_factory: pytest.TempPathFactory) -> TrainRuns:
    base = tmp_path_factory.mktemp("train_runs")
    reference, repeat, resumed = base / "reference", base / "repeat", base / "resumed"
    procs = {reference: start_train(reference, *SMOKE), repeat: start_train(repeat, *SMOKE)}
    killed = start_train(resumed, *SMOKE, *DELAY)
    ckpt = resumed / "checkpoints" / "last.ckpt"
    alive = kill_after_checkpoint(killed, ckpt, KILL_AFTER_STEP, RUN_TIMEOUT_S)
    resume_step = checkpoint_step(ckpt)
    resumed.with_suffix(".log").rename(base / "killed.log")
    procs[resumed] = start_train(resumed, *SMOKE, *DELAY, "ckpt_path=last")
    for run_dir, proc in procs.items():
        finish(proc, run_dir)
    return TrainRuns(
        reference=reference,
        repeat=repeat,
        resumed=resumed,
        killed_while_running=alive,
        killed_rc=killed.returncode,
        resume_step=resume_step,
        resumed_log=resumed.with_suffix(".log").read_text(errors="replace"),
    )
