"""What every in-process benchmark shares: the configuration ``train.py`` uses (with the ``--set`` overrides),
the training components built as ``train.py`` builds them, the precision all competitors run at, the machine
description and the result files (process-level helpers: :mod:`benchmarks.process`)."""

from __future__ import annotations

import os
import platform
import tempfile
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import lightning as L
import torch
from omegaconf import DictConfig

from benchmarks.process import REPO
from benchmarks.timing import Batch
from hybrid_ir.data.runtime.datamodule import ParallelQADataModule
from hybrid_ir.tasks.instantiate import compose_config
from hybrid_ir.tasks.train import Components, build_components
from hybrid_ir.utils.hardware import cpu_has_fast_bf16
from hybrid_ir.utils.io import atomic_write_json

CONF_DIR = REPO / "conf"
RESULTS_DIR = Path(__file__).resolve().parent / "results"

EXTRA_OVERRIDES: list[str] = []
"""Hydra overrides applied after every benchmark's own (``python -m benchmarks.run --set KEY=VALUE ...``)."""


def bench_config(overrides: Sequence[str] = ()) -> DictConfig:
    """``conf/train.yaml`` composed as ``train.py experiment=cpu`` (the run ``make train`` makes) would, with
    ``overrides`` (Hydra syntax), then :data:`EXTRA_OVERRIDES`, and the output directory set to a fresh temporary
    folder."""
    out = tempfile.mkdtemp(prefix="hybrid_ir_bench_")
    return compose_config(
        CONF_DIR, "train", [f"paths.output_dir={out}", "experiment=cpu", *overrides, *EXTRA_OVERRIDES]
    )


def joined_precision(cases: Sequence[Mapping[str, Any]]) -> str:
    """The precision of a benchmark's record: its cases' ``precision`` (all competitors of a case run at it),
    comma-joined when cases differ."""
    return ", ".join(sorted({str(c["precision"]) for c in cases}))


def build_training(cfg: DictConfig, extra_callbacks: Sequence[L.Callback] = ()) -> Components:
    """The components of :func:`hybrid_ir.tasks.train.train` (:func:`~hybrid_ir.tasks.train.build_components`, with
    ``extra_callbacks`` first), the DataModule set up for fitting."""
    run = build_components(cfg, extra_callbacks)
    run.datamodule.setup("fit")
    return run


def precollate(datamodule: ParallelQADataModule, n: int) -> list[Batch]:
    """The first ``n`` batches of epoch 0 of the DataModule's training loader, collated up front (the same
    batches a Trainer gets: the sampler is deterministic in ``(seed, epoch)``)."""
    loader = datamodule.train_dataloader()
    if n > len(loader):
        raise ValueError(f"asked for {n} batches but an epoch has {len(loader)}; lower the step count")
    batches = []
    for batch in loader:
        batches.append(batch)
        if len(batches) == n:
            break
    return batches


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text(encoding="utf-8", errors="replace").splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def machine_info() -> dict[str, Any]:
    """CPU model (``/proc/cpuinfo``), logical CPUs, torch version and thread counts, Python, load average, and
    the GPU's name when CUDA is available."""
    return {
        "cpu": _cpu_model(),
        "logical_cpus": os.cpu_count(),
        "gpu": torch.cuda.get_device_name() if torch.cuda.is_available() else None,
        "torch": torch.__version__,
        "torch_threads": torch.get_num_threads(),
        "torch_interop_threads": torch.get_num_interop_threads(),
        "fast_bf16": cpu_has_fast_bf16(),
        "python": platform.python_version(),
        "platform": platform.platform(),
        "load_average_1_5_15": list(os.getloadavg()) if hasattr(os, "getloadavg") else None,
    }


def write_result(out_dir: Path, name: str, result: Mapping[str, Any]) -> Path:
    """Write ``<out_dir>/<name>.json`` atomically; returns the path."""
    path = Path(out_dir) / f"{name}.json"
    atomic_write_json(path, dict(result))
    return path
