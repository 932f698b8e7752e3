"""Helpers to run ``train.py`` as a real process and read what it wrote (the runs: ``conftest.py``).

Each process runs with one intra-op thread (``OMP_NUM_THREADS=1``): parallel processes then do not fight over
the cores (with two threads each on a busy two-core machine a tiny step takes ~40× longer), and every run
computes with the same thread count, which bitwise equality of float results needs.
"""

from __future__ import annotations

import contextlib
import csv
import json
import os
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import torch

from hybrid_ir.utils.checkpoint_io import checkpoint_global_step
from tests.helpers.repo import REPO

MAX_STEPS = 12
KILL_AFTER_STEP = 4
DELAY_S = 0.5
RUN_TIMEOUT_S = 240
# The smoke experiment (tiny random model, CSV logger, checkpoint every 2 steps), 12 steps, a small evaluation.
SMOKE = (
    "experiment=smoke",
    f"trainer.max_steps={MAX_STEPS}",
    "callbacks.model_checkpoint.every_n_train_steps=2",
    "eval.max_qids=8",
    "eval.plots=false",
    "eval.per_query=false",
)
DELAY = (
    "+callbacks.step_delay._target_=tests.helpers.fakes.StepDelay",
    f"+callbacks.step_delay.seconds={DELAY_S}",
)


def run_env() -> dict[str, str]:
    """The environment of a test run: one thread, offline W&B, full Hydra tracebacks."""
    return {**os.environ, "OMP_NUM_THREADS": "1", "WANDB_MODE": "offline", "HYDRA_FULL_ERROR": "1"}


def start_train(run_dir: Path, *overrides: str) -> subprocess.Popen:
    """Start ``python train.py hydra.run.dir=<run_dir> <overrides>``; output goes to ``<run_dir>.log``."""
    with open(run_dir.with_suffix(".log"), "w") as log:
        return subprocess.Popen(
            [sys.executable, "train.py", f"hydra.run.dir={run_dir}", *overrides],
            cwd=REPO,
            env=run_env(),
            stdout=log,
            stderr=subprocess.STDOUT,
        )


def finish(proc: subprocess.Popen, run_dir: Path) -> None:
    """Wait for ``proc`` and fail with the tail of its log unless it exited with 0."""
    try:
        rc = proc.wait(timeout=RUN_TIMEOUT_S)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()
        rc = "timeout"
    if rc != 0:
        tail = run_dir.with_suffix(".log").read_text(errors="replace")[-4000:]
        pytest.fail(f"train.py in {run_dir} ended with {rc}:\n{tail}")


def final_weights(run_dir: Path) -> dict[str, torch.Tensor]:
    """The model weights in ``<run_dir>/checkpoints/last.ckpt``."""
    path = run_dir / "checkpoints" / "last.ckpt"
    return torch.load(path, map_location="cpu", weights_only=True)["state_dict"]


def child_pids(pid: int) -> list[int]:
    """The processes whose parent is ``pid`` (e.g. the DDP ranks that Lightning's launcher started), from
    ``/proc``."""
    children = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()  # after "pid (comm)": state, ppid, ...
        except (OSError, IndexError):
            continue  # ended meanwhile
        if int(fields[1]) == pid:
            children.append(int(stat.parent.name))
    return children


def kill_after_checkpoint(proc: subprocess.Popen, ckpt: Path, min_step: int, timeout_s: float) -> bool:
    """SIGKILL ``proc`` and its child processes (the other ranks of a ``trainer=ddp_cpu`` run: the whole run,
    as a scheduler kills a job) once ``ckpt`` holds ``global_step >= min_step``; True if it was still running then.

    ``ckpt`` is replaced by an atomic rename on every save, so a new inode means a new, complete checkpoint;
    only then is it loaded."""
    deadline = time.monotonic() + timeout_s
    seen: tuple[int, int] | None = None
    while time.monotonic() < deadline and proc.poll() is None:
        try:
            stat = ckpt.stat()
        except FileNotFoundError:
            time.sleep(0.05)
            continue
        if (stat.st_ino, stat.st_mtime_ns) != seen:
            seen = (stat.st_ino, stat.st_mtime_ns)
            if checkpoint_global_step(ckpt) >= min_step:
                alive = proc.poll() is None
                children = child_pids(proc.pid)
                os.kill(proc.pid, signal.SIGKILL)
                for child in children:
                    with contextlib.suppress(ProcessLookupError):
                        os.kill(child, signal.SIGKILL)
                proc.wait()
                return alive
        time.sleep(0.05)
    proc.kill()
    proc.wait()
    return False


def csv_table(run_dir: Path) -> list[dict[str, str]]:
    """Every row of ``<run_dir>/csv/metrics.csv``, in file order."""
    with open(run_dir / "csv" / "metrics.csv", newline="") as fh:
        return list(csv.DictReader(fh))


def csv_rows(run_dir: Path) -> dict[int, dict[str, str]]:
    """The training rows of ``<run_dir>/csv/metrics.csv`` (those with ``train/loss_step``) by step."""
    return {int(row["step"]): row for row in csv_table(run_dir) if row.get("train/loss_step")}


def step_losses(run_dir: Path) -> dict[int, float]:
    """``{step: train/loss_step}`` from ``<run_dir>/csv/metrics.csv`` (logged every step)."""
    return {step: float(row["train/loss_step"]) for step, row in csv_rows(run_dir).items()}


def eval_records(run_dir: Path) -> list[dict[str, Any]]:
    """``[{tag, step, scalars: {dataset: {name: value}}}]`` from ``<run_dir>/metrics.json``."""
    records = json.loads((run_dir / "metrics.json").read_text())
    return [
        {
            "tag": r["tag"],
            "step": r["step"],
            "scalars": {name: summary["scalars"] for name, summary in r["datasets"].items()},
        }
        for r in records
    ]


@dataclass
class TrainRuns:
    """The run folders of :func:`train_runs`, and what happened to the killed run."""

    reference: Path
    repeat: Path
    resumed: Path
    killed_while_running: bool
    killed_rc: int
    resume_step: int
    resumed_log: str
