"""Lightning DDP with 2 CPU processes (gloo) trains exactly like one process on the same global batch."""

from __future__ import annotations

import csv
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
NO_DROPOUT = [
    "+model.config_overrides.hidden_dropout_prob=0.0",
    "+model.config_overrides.attention_probs_dropout_prob=0.0",
]


def train(out: Path, trainer: str) -> tuple[list[float], list[dict]]:
    env = {**os.environ, "WANDB_MODE": "offline", "WANDB_SILENT": "true", "HF_HUB_OFFLINE": "1"}
    args = [
        sys.executable,
        "train.py",
        "experiment=smoke",
        f"trainer={trainer}",
        "trainer.max_steps=3",
        "trainer.log_every_n_steps=1",
        "module.lr=1e-3",
        "module.warmup_ratio=0.0",
        *NO_DROPOUT,
        f"hydra.run.dir={out}",
    ]
    proc = subprocess.run(args, cwd=ROOT, env=env, capture_output=True, text=True, timeout=400, check=False)
    assert proc.returncode == 0, proc.stderr[-4000:]
    with open(out / "csv" / "metrics.csv", newline="") as fh:
        losses = [float(r["train/loss_step"]) for r in csv.DictReader(fh) if r.get("train/loss_step")]
    return losses, json.loads((out / "metrics.json").read_text())


@pytest.mark.slow
def test_two_ranks_match_one_process(tmp_path: Path) -> None:
    single, single_metrics = train(tmp_path / "single", "cpu")
    ddp, ddp_metrics = train(tmp_path / "ddp", "ddp_cpu")
    assert len(single) == len(ddp) == 3
    # the same global batches, all-rank negatives and averaged gradients: the same losses step after step
    assert ddp == pytest.approx(single, abs=1e-5)
    # zero-shot evaluation with the encoding sharded over ranks gives the same metrics
    for a, b in zip(single_metrics, ddp_metrics, strict=True):
        assert a["tag"] == b["tag"]
        sa, sb = a["datasets"]["mlqa-r"]["scalars"], b["datasets"]["mlqa-r"]["scalars"]
        assert sa.keys() == sb.keys()
        for key in sa:
            assert sb[key] == pytest.approx(sa[key], abs=1e-4), key
