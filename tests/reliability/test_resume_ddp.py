"""A DDP run killed and resumed with dropout on trains on exactly as the uninterrupted run (docs/reliability.md).

Two runs of the tiny random model (dropout on) on two gloo ranks (``trainer=ddp_cpu``) start at once:
``reference``, uninterrupted, and ``resumed``, slowed down and SIGKILLed (both ranks) once its ``last.ckpt``
holds step >= ``KILL_AFTER_STEP``, then restarted with ``ckpt_path=last``. The ranks draw different numbers of
random values (their batches are padded to different lengths), so their generators drift apart: a checkpoint
with rank 0's random state only made rank 1 draw other dropout masks after the resume, and the losses differed
from the first resumed step on. (That the tiny model has dropout on is checked in ``test_resume_boundaries.py``.)
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import torch

from hybrid_ir.utils.checkpoint_io import checkpoint_global_step

from .runs import DELAY, RUN_TIMEOUT_S, finish, kill_after_checkpoint, start_train, step_losses

pytestmark = pytest.mark.slow

STEPS = 16
KILL_AFTER_STEP = 6
OVERRIDES = (
    "experiment=smoke",
    "trainer=ddp_cpu",
    "trainer.precision=32-true",
    f"trainer.max_steps={STEPS}",
    "callbacks.model_checkpoint.every_n_train_steps=2",
    "~callbacks.zero_shot_eval",
    "~callbacks.export_encoder",
)


@dataclass
class DDPRuns:
    reference: Path
    resumed: Path
    killed_while_running: bool
    resume_step: int


@pytest.fixture(scope="module")
def ddp_runs(tmp_path_factory: pytest.TempPathFactory) -> Iterator[DDPRuns]:
    base = tmp_path_factory.mktemp("resume_ddp")
    reference, resumed = base / "reference", base / "resumed"
    procs = {reference: start_train(reference, *OVERRIDES)}
    killed = start_train(resumed, *OVERRIDES, *DELAY)
    try:
        ckpt = resumed / "checkpoints" / "last.ckpt"
        # two runs of two processes each start at once: allow for a slow start
        alive = kill_after_checkpoint(killed, ckpt, KILL_AFTER_STEP, 2 * RUN_TIMEOUT_S)
        killed_log = resumed.with_suffix(".log").rename(base / "killed.log")
        if not ckpt.is_file():
            pytest.fail(f"the run to be killed wrote no checkpoint:\n{killed_log.read_text()[-4000:]}")
        resume_step = checkpoint_global_step(ckpt)
        procs[resumed] = start_train(resumed, *OVERRIDES, "ckpt_path=last")
        for run_dir, proc in procs.items():
            finish(proc, run_dir)
        yield DDPRuns(reference, resumed, alive, resume_step)
    finally:
        for proc in [killed, *procs.values()]:
            if proc.poll() is None:
                proc.kill()
                proc.wait()


def test_the_kill_lands_mid_run(ddp_runs: DDPRuns) -> None:
    assert ddp_runs.killed_while_running
    assert KILL_AFTER_STEP <= ddp_runs.resume_step < STEPS


def test_each_rank_checkpoints_its_own_random_state(ddp_runs: DDPRuns) -> None:
    state = torch.load(ddp_runs.resumed / "checkpoints" / "last.ckpt", weights_only=True)["hybrid_ir"]
    by_rank = state["rng_state_by_rank"]
    assert len(by_rank) == 2
    assert torch.equal(by_rank[0]["torch"], state["rng_state"]["torch"])
    # the ranks' generators have drifted apart: restoring rank 0's on both ranks would change rank 1's masks
    assert not torch.equal(by_rank[0]["torch"], by_rank[1]["torch"])


def test_resumed_ddp_losses_equal_the_uninterrupted_run(ddp_runs: DDPRuns) -> None:
    reference, resumed = step_losses(ddp_runs.reference), step_losses(ddp_runs.resumed)
    assert sorted(reference) == sorted(resumed) == list(range(STEPS))
    after = range(ddp_runs.resume_step, STEPS)
    assert len({reference[step] for step in after}) > 1, "losses do not vary: the comparison would be weak"
    assert [resumed[step] for step in after] == [reference[step] for step in after]
