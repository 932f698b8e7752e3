"""The real model end to end: e5-small trains on XQuAD-R (the loss falls) and its checkpoint evaluates."""

from __future__ import annotations

import csv
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from transformers import AutoModel

from tests.helpers.repo import REPO

ROOT = REPO
ENV = {**os.environ, "WANDB_MODE": "offline", "WANDB_SILENT": "true", "HF_HUB_OFFLINE": "1"}


def run(args: list[str]) -> None:
    proc = subprocess.run(
        [sys.executable, *args], cwd=ROOT, env=ENV, capture_output=True, text=True, timeout=1200, check=False
    )
    assert proc.returncode == 0, proc.stderr[-4000:]


@pytest.mark.slow
def test_e5_small_loss_falls_and_checkpoint_evaluates(tmp_path: Path) -> None:
    out = tmp_path / "train"
    run(
        [
            "train.py",
            "model=e5-small",
            "model.max_length=32",
            "data.batch_size=16",
            "trainer.max_steps=8",
            "trainer.log_every_n_steps=1",
            "logger=csv",
            "callbacks.zero_shot_eval=null",
            "seed=0",
            f"hydra.run.dir={out}",
        ]
    )
    with open(out / "csv" / "metrics.csv", newline="") as fh:
        losses = [float(r["train/loss_step"]) for r in csv.DictReader(fh) if r.get("train/loss_step")]
    assert len(losses) == 8
    assert sum(losses[-3:]) / 3 < sum(losses[:3]) / 3  # fixed seed: the same batches every run

    encoder_dir = out / "checkpoints" / "encoder"
    model = AutoModel.from_pretrained(encoder_dir, add_pooling_layer=False)  # plain transformers loads it
    trained = torch.load(out / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=True)[
        "state_dict"
    ]
    key = "encoder.model.encoder.layer.0.attention.self.query.weight"
    assert torch.equal(model.state_dict()["encoder.layer.0.attention.self.query.weight"], trained[key])

    ev = tmp_path / "eval"
    run(
        [
            "evaluate.py",
            f"ckpt_path={out / 'checkpoints' / 'last.ckpt'}",
            "data=mlqa-r",
            "model.max_length=32",
            "eval.max_qids=8",
            f"hydra.run.dir={ev}",
        ]
    )
    record = json.loads((ev / "metrics.json").read_text())[-1]
    assert (record["tag"], record["step"]) == (str(out / "checkpoints" / "last.ckpt"), 8)
    scalars = record["datasets"]["mlqa-r"]["scalars"]
    assert 0.0 < scalars["map_multi"] <= 1.0 and scalars["map_mono"] > scalars["map_multi"]
