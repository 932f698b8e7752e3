"""Several epochs in real ``train.py`` processes: every epoch ``e`` plays the plan of ``(seed, e)`` in full.

Each run records, per step, its batch and learning rate (:class:`BatchLog`). Three runs start at once (three
epochs; three epochs with ``limit_train_batches``; two epochs on two DDP ranks), and two resumes of the first from
its checkpoints at the end of epoch 1 and in the middle of epoch 2, each as soon as that checkpoint is written.
"""

from __future__ import annotations

import math
import re
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from hybrid_ir.data.formats.load_corpus import load_corpus
from hybrid_ir.data.planning.planner import plan_epoch
from hybrid_ir.training.optim import linear_warmup_decay
from hybrid_ir.utils.paths import default_data_root
from tests.helpers.batch_log import read_batch_log

from .runs import RUN_TIMEOUT_S, finish, start_train

pytestmark = pytest.mark.slow

BATCH = 128  # XQuAD-R's 1,190 ids in 9 languages: 9 batches per epoch
EPOCHS = 3
LIMIT = 4
LR = 3e-5
WARMUP_RATIO = 0.1
LANGS = ["ar", "de", "en", "es", "hi", "ru", "th", "tr", "zh"]


def _overrides(run_dir: Path, *extra: str) -> tuple[str, ...]:
    return (
        "experiment=smoke",
        "trainer.max_steps=-1",
        f"trainer.max_epochs={EPOCHS}",
        "trainer.precision=32-true",
        f"data.batch_size={BATCH}",
        f"module.lr={LR}",
        f"module.warmup_ratio={WARMUP_RATIO}",
        "~callbacks.zero_shot_eval",
        "~callbacks.export_encoder",
        "callbacks.model_checkpoint.every_n_train_steps=2",
        "callbacks.model_checkpoint.save_top_k=-1",
        "+callbacks.batch_log._target_=tests.helpers.batch_log.BatchLog",
        f"+callbacks.batch_log.dirpath={run_dir / 'batches'}",
        *extra,
    )


def _resume_points() -> dict[str, tuple[str, int]]:
    """The checkpoint of the full run each resume starts from, and the step it continues at."""
    per_epoch = len(_plan(0))
    return {
        "resumed_boundary": (
            f"epoch01-step{2 * per_epoch:06d}.ckpt",
            2 * per_epoch,
        ),  # epoch 1 done, epoch 2 next
        "resumed_mid": (
            f"epoch02-step{2 * per_epoch + 4:06d}.ckpt",
            2 * per_epoch + 4,
        ),  # the 5th batch of epoch 2
    }


def _written(path: Path, proc: subprocess.Popen, timeout_s: float = RUN_TIMEOUT_S) -> bool:
    """Wait until ``path`` exists (checkpoints are renamed into place when complete) or ``proc`` has ended."""
    deadline = time.monotonic() + timeout_s
    while not path.is_file() and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.2)
    return path.is_file()


@pytest.fixture(scope="module")
def runs(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Path]]:
    """The three runs, started at once, and the full run resumed from its checkpoint at the end of epoch 1 and from
    the one in the middle of epoch 2, each resume started as soon as the full run has written its checkpoint."""
    base = tmp_path_factory.mktemp("epochs")
    resumes = _resume_points()
    dirs = {name: base / name for name in ("full", "limited", "ddp", *resumes)}
    extra = {
        "full": (),
        "limited": (f"+trainer.limit_train_batches={LIMIT}",),
        "ddp": ("trainer=ddp_cpu", "trainer.max_epochs=2"),
    }
    procs = {
        dirs[name]: start_train(dirs[name], *_overrides(dirs[name], *over)) for name, over in extra.items()
    }
    try:
        full, checkpoints = procs[dirs["full"]], dirs["full"] / "checkpoints"
        for name, (ckpt, _) in resumes.items():
            if not _written(checkpoints / ckpt, full):
                written = sorted(p.name for p in checkpoints.iterdir()) if checkpoints.is_dir() else []
                pytest.fail(f"the full run wrote no {ckpt}; it has {written}")
            procs[dirs[name]] = start_train(
                dirs[name], *_overrides(dirs[name]), f"ckpt_path={checkpoints / ckpt}"
            )
        for run_dir, proc in procs.items():
            finish(proc, run_dir)
        yield dirs
    finally:
        for proc in procs.values():
            if proc.poll() is None:
                proc.kill()
                proc.wait()


def _plan(epoch: int) -> list[list[list[str]]]:
    corpus = load_corpus({"name": "xquad-r", "languages": LANGS}, default_data_root(), download=False)
    plan = plan_epoch([corpus], "hybrid", BATCH, 0.5, 0, epoch)
    return [[[ref.parallel_id, ref.q_lang, ref.p_lang] for ref in refs] for _, refs in plan]


def _expected_lrs(total: int) -> list[float]:
    factor = linear_warmup_decay(math.ceil(WARMUP_RATIO * total), total)
    return [LR * factor(step) for step in range(total)]


def _batches_by_epoch(records: list[dict[str, Any]]) -> dict[int, list[list[list[str]]]]:
    out: dict[int, list[list[list[str]]]] = {}
    for record in records:
        out.setdefault(record["epoch"], []).append(record["pairs"])
    return out


def test_every_epoch_plays_its_own_plan_in_full(runs: dict[str, Path]) -> None:
    records = read_batch_log(runs["full"] / "batches")
    plans = [_plan(e) for e in range(EPOCHS)]
    assert [r["step"] for r in records] == list(range(sum(len(p) for p in plans)))
    assert _batches_by_epoch(records) == dict(enumerate(plans))
    assert plans[0] != plans[1] != plans[2]


def test_the_schedule_spans_the_steps_actually_run(runs: dict[str, Path]) -> None:
    records = read_batch_log(runs["full"] / "batches")
    assert [r["lr"] for r in records] == pytest.approx(_expected_lrs(len(records)), rel=1e-6)
    assert records[-1]["lr"] > 0, "the last step must still learn: the schedule ends with the run"


def test_limit_train_batches_starts_every_epoch_at_its_first_batch(runs: dict[str, Path]) -> None:
    records = read_batch_log(runs["limited"] / "batches")
    assert _batches_by_epoch(records) == {e: _plan(e)[:LIMIT] for e in range(EPOCHS)}
    assert [r["lr"] for r in records] == pytest.approx(_expected_lrs(EPOCHS * LIMIT), rel=1e-6)


def test_two_ranks_each_play_their_slice_of_every_epoch(runs: dict[str, Path]) -> None:
    half = BATCH // 2
    for rank in (0, 1):
        records = read_batch_log(runs["ddp"] / "batches", rank)
        expected = {e: [b[rank * half : (rank + 1) * half] for b in _plan(e)] for e in range(2)}
        assert _batches_by_epoch(records) == expected, f"rank {rank}"


@pytest.mark.parametrize("name", ["resumed_mid", "resumed_boundary"])
def test_a_resumed_run_continues_with_the_same_batches_and_rates(runs: dict[str, Path], name: str) -> None:
    full = read_batch_log(runs["full"] / "batches")
    records = read_batch_log(runs[name] / "batches")
    assert records[0]["step"] == _resume_points()[name][1]
    assert records == full[records[0]["step"] :]


def _plan_log_epochs(log: Path) -> list[int]:
    """The epochs of the plan summaries (``epoch N: B batches; ...``) in a run's console output, in order."""
    return [int(m) for m in re.findall(r"\] - epoch (\d+): \d+ batches;", log.read_text(errors="replace"))]


def test_each_epoch_plan_is_logged_once_and_none_after_the_last(runs: dict[str, Path]) -> None:
    # Every process of a DDP run writes to the console output; rank 1 plans epoch 0 for its checks too, and Lightning
    # asks for the loader's length once more after the last epoch.
    assert _plan_log_epochs(runs["full"].with_suffix(".log")) == list(range(EPOCHS))
    assert _plan_log_epochs(runs["limited"].with_suffix(".log")) == list(range(EPOCHS))
    assert _plan_log_epochs(runs["ddp"].with_suffix(".log")) == [0, 1]
