"""Lightning DDP with 2 CPU processes (gloo) trains and validates like one process on the same global batch.

Four ``train.py`` runs start at once (one intra-op thread each): one process and two ranks, in ``32-true`` (one
epoch of three batches, then validation on a held-out 2 % and the zero-shot evaluation) and in ``bf16-mixed``
(three steps). In ``32-true`` the two agree to float rounding. In ``bf16-mixed`` each rank embeds half the batch,
padded to its own longest text, so the bf16 matmuls round differently from the single process; bf16 keeps 8
significant bits (relative rounding 2**-8 ~ 0.4%), so step losses near log(8) ~ 2 may differ by a few hundredths
and the zero-shot metrics by a few thousandths. The precision is pinned, so the test means the same on every
machine.
"""

from __future__ import annotations

import csv
import json
import os
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.helpers.repo import REPO

ROOT = REPO
NO_DROPOUT = [
    "+model.config_overrides.hidden_dropout_prob=0.0",
    "+model.config_overrides.attention_probs_dropout_prob=0.0",
]


# precision -> (absolute tolerance of the step losses, tolerance of the evaluation scalars). Measured in bf16-mixed
# on the tiny model: losses (about 2.0) differ by up to 0.016, metrics by up to 0.001 (mAP) and 1% (rank distance).
TOLERANCES: dict[str, tuple[float, dict[str, float]]] = {
    "32-true": (1e-5, {"abs": 1e-4}),
    "bf16-mixed": (5e-2, {"abs": 1e-2, "rel": 5e-2}),
}


# Each run's own settings: 32-true fills one epoch of 3 batches, so it ends with a validation (and the test of the
# validation metrics shares its runs); bf16-mixed stops after 3 steps.
SETTINGS: dict[str, tuple[str, ...]] = {
    "32-true": (
        "data.val.fraction=0.02",
        "trainer.max_steps=-1",
        "trainer.max_epochs=1",
        "+trainer.limit_train_batches=3",
        "~callbacks.export_encoder",
    ),
    "bf16-mixed": ("trainer.max_steps=3",),
}
TRAINERS = {"single": "cpu", "ddp": "ddp_cpu"}
TIMEOUT_S = 600


@dataclass
class Run:
    """What one run logged: its step losses, its zero-shot evaluations and its validation rows."""

    losses: list[float]
    metrics: list[dict]
    validations: list[dict[str, str]]


def _start(out: Path, trainer: str, precision: str) -> subprocess.Popen:
    env = {
        **os.environ,
        "OMP_NUM_THREADS": "1",  # four runs (six processes) share the cores
        "WANDB_MODE": "offline",
        "WANDB_SILENT": "true",
        "HF_HUB_OFFLINE": "1",
    }
    args = [
        sys.executable,
        "train.py",
        "experiment=smoke",
        f"trainer={trainer}",
        f"trainer.precision={precision}",
        "trainer.log_every_n_steps=1",
        "module.lr=1e-3",
        "module.warmup_ratio=0.0",
        *NO_DROPOUT,
        f"hydra.run.dir={out}",
        *SETTINGS[precision],
    ]
    with open(out.with_suffix(".log"), "w") as log:
        return subprocess.Popen(args, cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT)


def _read(out: Path) -> Run:
    with open(out / "csv" / "metrics.csv", newline="") as fh:
        rows = list(csv.DictReader(fh))
    losses = [float(r["train/loss_step"]) for r in rows if r.get("train/loss_step")]
    metrics = json.loads((out / "metrics.json").read_text())
    return Run(losses, metrics, [r for r in rows if r.get("val/loss")])


@pytest.fixture(scope="module")
def runs(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[tuple[str, str], Run]]:
    """``runs[precision, name]`` for ``name`` in single / ddp, all four started at once."""
    base = tmp_path_factory.mktemp("ddp_equivalence")
    dirs = {(p, n): base / f"{n}-{p}" for p in SETTINGS for n in TRAINERS}
    procs = {key: _start(out, TRAINERS[key[1]], key[0]) for key, out in dirs.items()}
    try:
        for key, proc in procs.items():
            try:
                rc = proc.wait(timeout=TIMEOUT_S)
            except subprocess.TimeoutExpired:
                rc = "timeout"
            if rc != 0:
                tail = dirs[key].with_suffix(".log").read_text(errors="replace")[-4000:]
                pytest.fail(f"train.py {key} ended with {rc}:\n{tail}")
        yield {key: _read(out) for key, out in dirs.items()}
    finally:
        for proc in procs.values():
            if proc.poll() is None:
                proc.kill()
                proc.wait()


@pytest.mark.slow
@pytest.mark.parametrize("precision", sorted(TOLERANCES))
def test_two_ranks_match_one_process(runs: dict[tuple[str, str], Run], precision: str) -> None:
    loss_tol, metric_tol = TOLERANCES[precision]
    single, ddp = runs[precision, "single"], runs[precision, "ddp"]
    assert len(single.losses) == len(ddp.losses) == 3
    # the same global batches, all-rank negatives and averaged gradients: the same losses step after step
    assert ddp.losses == pytest.approx(single.losses, abs=loss_tol)
    # zero-shot evaluation with the encoding sharded over ranks gives the same metrics
    assert single.metrics, "no zero-shot evaluation to compare"
    for a, b in zip(single.metrics, ddp.metrics, strict=True):
        assert a["tag"] == b["tag"]
        sa, sb = a["datasets"]["mlqa-r"]["scalars"], b["datasets"]["mlqa-r"]["scalars"]
        assert sa.keys() == sb.keys()
        for key in sa:
            assert sb[key] == pytest.approx(sa[key], **metric_tol), key


@pytest.mark.slow
def test_two_ranks_validate_like_one_process(runs: dict[tuple[str, str], Run]) -> None:
    """Each rank validates its half of every fixed validation batch against the passages of both halves; the
    torchmetrics means over the ranks equal the one-process values."""
    values = []
    for name in TRAINERS:
        rows = runs["32-true", name].validations
        assert len(rows) == 1, f"{name}: one validation expected, got {len(rows)}"
        values.append({key: float(rows[0][key]) for key in ("val/loss", "val/acc@1", "val/mrr")})
    single, ddp = values
    assert ddp == pytest.approx(single, abs=1e-5)
