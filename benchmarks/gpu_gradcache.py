"""Benchmark 8: GradCache at base size on a GPU: peak GPU memory of batch 1024 against the plain step of batch
64, and the loss of the GradCache step against the plain step's (skipped without CUDA).

Model: :mod:`benchmarks.base_model` (BERT-base, XLM-R vocabulary, random weights, dropout off), at ``bf16-mixed``;
inputs: one batch of random token ids per batch size (queries of ``QUERY_TOKENS`` tokens, passages of 128).
For each batch size, one :class:`~benchmarks.bare_loop.BareLoop` step (the module's step without Lightning: the
same GradCache code, optimiser and precision) plain and one with GradCache in chunks of ``chunk`` texts, each from
a fresh copy of the same weights, with ``torch.cuda.max_memory_allocated`` reset before it: the peak counts the
weights, gradients, AdamW state and activations. A plain step that does not fit is recorded as out of memory.

Goals: peak(GradCache, largest batch) <= 1.3 x peak(plain, smallest batch); GradCache loss = plain loss within
the precision's tolerance at every batch size where the plain step fits.
"""

from __future__ import annotations

import gc
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Any

import torch

from benchmarks.bare_loop import bare_loop_like
from benchmarks.base_model import random_model_overrides
from benchmarks.gradcache_memory import NO_DROPOUT, QUERY_TOKENS, random_batch
from benchmarks.harness import bench_config, build_training
from benchmarks.timing import goal, seed_step

NAME = "gpu_gradcache"
MEMORY_TARGET = 1.3
LOSS_TOLERANCE = {"32-true": 1e-5, "bf16-mixed": 5e-3, "16-mixed": 5e-3}


@dataclass(frozen=True)
class Settings:
    """Batch sizes (smallest first), the GradCache chunk size and the precision of every step."""

    batch_sizes: tuple[int, ...]
    chunk: int
    precision: str


FULL = Settings(batch_sizes=(64, 1024), chunk=64, precision="bf16-mixed")
QUICK = Settings(batch_sizes=(8, 16), chunk=4, precision="bf16-mixed")


def _peak_mb(device: torch.device) -> float | None:
    return torch.cuda.max_memory_allocated(device) / 2**20 if device.type == "cuda" else None


def one_step(
    module: Any, batch: dict[str, Any], chunk: int | None, device: torch.device, precision: str
) -> dict:
    """One bare step (GradCache in chunks of ``chunk``, or plain) from a copy of ``module``'s weights on
    ``device``: ``{"loss", "peak_memory_mb"}`` (memory ``None`` off CUDA; ``{"oom": True}`` if it did not fit)."""
    gc.collect()
    if device.type == "cuda":
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats(device)
    loop = None
    try:
        loop = bare_loop_like(module, 1, chunk, device=device, precision=precision)
        seed_step(0)
        loss = float(loop.step(batch))
        return {"loss": loss, "peak_memory_mb": _peak_mb(device)}
    except torch.cuda.OutOfMemoryError:
        return {"oom": True, "peak_memory_mb": _peak_mb(device)}
    finally:
        del loop
        gc.collect()


def measure(model_overrides: Sequence[str], settings: Settings, device: torch.device | str) -> dict[str, Any]:
    """Plain and GradCache steps at each batch size of ``settings`` for the model of ``model_overrides``."""
    device = torch.device(device)
    cfg = bench_config([*model_overrides, *NO_DROPOUT, "logger=none", "callbacks=none"])
    module = build_training(cfg).module
    vocab, passage_tokens = module.encoder.model.config.vocab_size, module.encoder.text_tokenizer.max_length
    rows = []
    for size in settings.batch_sizes:
        batch = random_batch(size, passage_tokens, vocab)
        steps = {
            "plain": one_step(module, batch, None, device, settings.precision),
            "grad_cache": one_step(module, batch, settings.chunk, device, settings.precision),
        }
        fits = all("loss" in s for s in steps.values())
        diff = abs(steps["plain"]["loss"] - steps["grad_cache"]["loss"]) if fits else None
        rows.append({"batch_size": size, **steps, "loss_abs_diff": diff})
    return {"query_tokens": QUERY_TOKENS, "passage_tokens": passage_tokens, "rows": rows}


def goals(result: dict[str, Any], settings: Settings) -> list[dict[str, Any]]:
    """Memory ratio (when measured) and loss agreement per batch size where the plain step fit."""
    out = []
    first, last = result["rows"][0], result["rows"][-1]
    if first["plain"].get("peak_memory_mb") and "loss" in last["grad_cache"]:
        ratio = last["grad_cache"]["peak_memory_mb"] / first["plain"]["peak_memory_mb"]
        name = f"peak memory GradCache B={last['batch_size']} / plain B={first['batch_size']}"
        out.append(goal(name, ratio, MEMORY_TARGET, False))
    for row in result["rows"]:
        if row["loss_abs_diff"] is not None:
            name = f"B={row['batch_size']}: |loss GradCache - plain|"
            out.append(goal(name, row["loss_abs_diff"], LOSS_TOLERANCE[settings.precision], False))
    return out


def run(quick: bool = False) -> dict[str, Any]:
    """On the current CUDA device (the tiny model with ``quick``); without one, a record that says it was skipped."""
    if not torch.cuda.is_available():
        return {"skipped": "no CUDA device visible", "goals": []}
    settings = QUICK if quick else FULL
    model = ["model=tiny"] if quick else ["model=e5-small", *random_model_overrides("base")]
    result = measure(model, settings, "cuda")
    return {
        "gpu": torch.cuda.get_device_name(),
        "precision": settings.precision,
        "settings": asdict(settings),
        **result,
        "goals": goals(result, settings),
    }


def summary(result: dict[str, Any]) -> list[str]:
    if result.get("skipped"):
        return [f"skipped: {result['skipped']}"]

    def mem(step: dict[str, Any]) -> str:
        return "OOM" if step.get("oom") else f"{step['peak_memory_mb']:.0f} MiB"

    return [f"GPU: {result['gpu']}"] + [
        f"B={r['batch_size']:>5}: peak plain {mem(r['plain'])}, GradCache {mem(r['grad_cache'])}; loss diff "
        f"{'n/a' if r['loss_abs_diff'] is None else format(r['loss_abs_diff'], '.1e')}"
        for r in result["rows"]
    ]
