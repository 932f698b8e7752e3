"""Several epochs in real ``train.py`` processes: every epoch ``e`` plays the plan of ``(seed, e)`` in full.

Each run records, per step, its batch and learning rate (:class:`BatchLog`). Four runs start at once (three
epochs; three epochs with ``limit_train_batches``; two epochs on two DDP ranks), then two resumes of the first
from its checkpoints: in the middle of epoch 2 and at the end of epoch 1.
"""

from __future__ import annotations

import math
import re
from pathlib import Path
from typing import Any

import pytest

from hybrid_ir.data.loading import load_corpus
from hybrid_ir.data.planner import plan_epoch
from hybrid_ir.models.module import linear_warmup_decay
from hybrid_ir.utils.paths import default_data_root
from tests.helpers.batch_log import read_batch_log

from .runs import finish, start_train

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


def _run_all(runs: dict[Path, tuple[str, ...]]) -> None:
    """Start every run at once and wait for all of them (failing with the log of one that failed)."""
    procs = {run_dir: start_train(run_dir, *over) for run_dir, over in runs.items()}
    try:
        for run_dir, proc in procs.items():
            finish(proc, run_dir)
    finally:
        for proc in procs.values():
            if proc.poll() is None:
                proc.kill()
                proc.wait()


@pytest.fixture(scope="module")
def runs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    base = tmp_path_factory.mktemp("epochs")
    dirs = {name: base / name for name in ("full", "limited", "ddp")}
    _run_all(
        {
            dirs["full"]: _overrides(dirs["full"]),
            dirs["limited"]: _overrides(dirs["limited"], f"+trainer.limit_train_batches={LIMIT}"),
            dirs["ddp"]: _overrides(dirs["ddp"], "trainer=ddp_cpu", "trainer.max_epochs=2"),
        }
    )
    return dirs


@pytest.fixture(scope="module")
def resumed(runs: dict[str, Path]) -> dict[str, Path]:
    """The full run resumed from its checkpoint in the middle of epoch 2 and from the one at the end of epoch 1."""
    per_epoch = len(_plan(0))
    wanted = {
        "resumed_mid": f"epoch02-step{2 * per_epoch + 4:06d}.ckpt",  # the 5th batch of epoch 2 is next
        "resumed_boundary": f"epoch01-step{2 * per_epoch:06d}.ckpt",  # epoch 1 done, epoch 2 next
    }
    checkpoints = runs["full"] / "checkpoints"
    missing = [name for name in wanted.values() if not (checkpoints / name).is_file()]
    if missing:
        pytest.fail(
            f"the full run wrote no {missing}; it has {sorted(p.name for p in checkpoints.iterdir())}"
        )
    dirs = {name: runs["full"].parent / name for name in wanted}
    _run_all(
        {
            dirs[name]: (*_overrides(dirs[name]), f"ckpt_path={checkpoints / ckpt}")
            for name, ckpt in wanted.items()
        }
    )
    return dirs


def _plan(epoch: int) -> list[list[list[str]]]:
    corpus = load_corpus({"name": "xquad-r", "languages": LANGS}, default_data_root(), download=False)
    plan = plan_epoch([corpus], "hybrid", BATCH, 0.5, 0, epoch)
    return [[[ref.pid, ref.q_lang, ref.p_lang] for ref in refs] for _, refs in plan]


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
def test_a_resumed_run_continues_with_the_same_batches_and_rates(
    runs: dict[str, Path], resumed: dict[str, Path], name: str
) -> None:
    full = read_batch_log(runs["full"] / "batches")
    records = read_batch_log(resumed[name] / "batches")
    per_epoch = len(_plan(0))
    assert records[0]["step"] == {"resumed_mid": 2 * per_epoch + 4, "resumed_boundary": 2 * per_epoch}[name]
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
