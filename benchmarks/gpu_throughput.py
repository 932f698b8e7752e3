"""Benchmark 7: training throughput on a GPU, ours against a bare PyTorch loop (skipped without CUDA).

The measurement of :mod:`benchmarks.train_throughput` on the GPU (``trainer=gpu``, ``bf16-mixed`` for every
competitor): the Trainer ``train.py`` builds (default per-step callbacks, tqdm bar) and our DataModule against
:class:`~benchmarks.bare_loop.BareLoop` on the same GPU, at the same precision (``torch.autocast``), on the same
batches, alternating step by step. Each side's step time runs until the GPU has finished its work
(``torch.cuda.synchronize``), so queued kernels are not credited to the other side.

Cases:

* **base**: the base-size model of :mod:`benchmarks.base_model` (BERT-base, XLM-R vocabulary, random weights),
  128-token texts, batch 128: per competitor tokens/s and model FLOPs utilisation (:mod:`benchmarks.mfu`, against
  the chip's bf16 peak), and ours / bare per round.
* **e5-small**'s architecture (random weights: the same cost as the real ones) at batch 32 and 64, 128-token
  texts: where the step is short enough for the loop's fixed cost to show.

Only e5-small's ``tokenizer.json`` is needed (``$HYBRID_IR_TOKENIZER_JSON`` where its package is not installed).

Goals: ours >= 0.97 x bare (median over rounds of the per-round ratio) and, at base size, MFU >= 35 %.
"""

from __future__ import annotations

import statistics
from collections.abc import Mapping
from typing import Any

import torch

from benchmarks.base_model import random_model_overrides
from benchmarks.harness import joined_precision
from benchmarks.mfu import bf16_peak_flops, train_step_flops
from benchmarks.timing import goal
from benchmarks.train_throughput import Case, label, measure
from benchmarks.train_throughput import summary as throughput_summary

NAME = "gpu_throughput"
RATIO_TARGET = 0.97
MFU_TARGET = 0.35
GPU = ("trainer=gpu", "trainer.precision=bf16-mixed")
QUICK = (Case("tiny", 1, 2, ("trainer=gpu",)),)


def full_cases() -> tuple[Case, ...]:
    """Base size at batch 128 (an epoch of the default training data has 8 such batches: 2 warm-up + 6 timed),
    then e5-small's architecture at batch 32 and 64; random weights (:mod:`benchmarks.base_model`)."""
    base, small = random_model_overrides("base"), random_model_overrides("e5-small")
    return (
        Case("e5-small", 2, 6, (*GPU, *base, "data.batch_size=128")),
        Case("e5-small", 5, 30, (*GPU, *small, "data.batch_size=32")),
        Case("e5-small", 2, 14, (*GPU, *small, "data.batch_size=64")),
    )


def flops_figures(result: Mapping[str, Any], peak_flops: float | None) -> dict[str, Any]:
    """Per competitor, medians over the timed rounds of tokens/s (padded tokens of both sides), achieved
    TFLOP/s and MFU (``None`` when the chip's peak is unknown), from a :func:`measure` record: its
    ``architecture``, ``batch_size``, ``seq_lengths`` and per-round ``timings[name]["samples_s"]``."""
    arch, batch = result["architecture"], int(result["batch_size"])
    shapes = [((batch, int(lq)), (batch, int(lp))) for lq, lp in result["seq_lengths"]]
    flops = [train_step_flops(arch["layers"], arch["hidden"], arch["ffn"], s) for s in shapes]
    tokens = [batch * (lq + lp) for (_, lq), (_, lp) in shapes]
    out: dict[str, Any] = {"peak_flops": peak_flops, "flops_per_step": statistics.fmean(flops)}
    for name in ("ours", "bare"):
        times = result["timings"][name]["samples_s"]
        rates = [f / t for f, t in zip(flops, times, strict=True)]
        out[name] = {
            "tokens_per_s": statistics.median(n / t for n, t in zip(tokens, times, strict=True)),
            "tflops": statistics.median(rates) / 1e12,
            "mfu": statistics.median(r / peak_flops for r in rates) if peak_flops else None,
        }
    return out


def measure_with_flops(case: Case, peak_flops: float | None) -> dict[str, Any]:
    """:func:`~benchmarks.train_throughput.measure` plus :func:`flops_figures` under ``"flops"``."""
    result = measure(case)
    return {**result, "flops": flops_figures(result, peak_flops)}


def run(quick: bool = False) -> dict[str, Any]:
    """All cases on the current CUDA device; without one, a record that says it was skipped."""
    if not torch.cuda.is_available():
        return {"skipped": "no CUDA device visible", "cases": [], "goals": []}
    device = torch.cuda.get_device_name()
    peak = bf16_peak_flops(device)
    cases = QUICK if quick else full_cases()
    results = [measure_with_flops(case, peak) for case in cases]
    goals = [
        goal(f"{label(c)}: ours / bare", c["timings"]["ratio_bare"], RATIO_TARGET, True) for c in results
    ]
    if not quick and peak:
        goals.append(goal("base size: MFU (ours)", results[0]["flops"]["ours"]["mfu"], MFU_TARGET, True))
    return {"gpu": device, "precision": joined_precision(results), "cases": results, "goals": goals}


def summary(result: dict[str, Any]) -> list[str]:
    if result.get("skipped"):
        return [f"skipped: {result['skipped']}"]
    lines = [f"GPU: {result['gpu']}", *throughput_summary(result)]
    for c in result["cases"]:
        f, arch = c["flops"], c["architecture"]
        mfu = {n: "n/a" if f[n]["mfu"] is None else f"{100 * f[n]['mfu']:.1f} %" for n in ("ours", "bare")}
        lines.append(
            f"  {arch['layers']}x{arch['hidden']} ({arch['parameters'] / 1e6:.0f} M params), batch "
            f"{c['batch_size']}: ours {f['ours']['tokens_per_s']:.0f} tokens/s, {f['ours']['tflops']:.1f} TFLOP/s, "
            f"MFU {mfu['ours']}; bare {f['bare']['tokens_per_s']:.0f} tokens/s, MFU {mfu['bare']}"
        )
    return lines
