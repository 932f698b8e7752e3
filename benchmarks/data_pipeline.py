"""Benchmark 6: the data pipeline's cost per batch against the training step.

Iterates the ``ParallelQADataModule``'s training loader (``train_dataloader()``: hybrid batch sampler over
XQuAD-R, ``PairDataset`` lookups, padding collate; ``data.num_workers`` from the config, 0 by default, so all of
it runs in the training process and adds to every step) and alternates one fetch (A) with one training step on
the fetched batch (B, :class:`~benchmarks.bare_loop.BareLoop`, the step Lightning wraps; see
:mod:`benchmarks.train_throughput` for the Lightning overhead). The first fetch of an epoch also plans the
epoch (:func:`~hybrid_ir.data.planning.planner.plan_epoch`); that time is reported apart and spread over the epoch's
batches: the data cost of round ``i`` is ``plan / batches_per_epoch + fetch[i]``, and the figure compared with
the goal is the median over rounds of its share of the step of the same round (``share_of_step``; the ratio of
medians is ``median_share``).

Goal: data time per batch < 2 % of the training step. It is measured against the step of the tiny model, the
shortest there is (the worst case); the e5-small step of the default configuration is one to two orders of
magnitude longer (:mod:`benchmarks.train_throughput`), so its share is that much smaller.
"""

from __future__ import annotations

import statistics
import time
from dataclasses import asdict, dataclass
from typing import Any

from benchmarks.bare_loop import bare_loop_like
from benchmarks.harness import bench_config, build_training, joined_precision
from benchmarks.timing import goal, seed_step, stats

NAME = "data_pipeline"
TARGET = 0.02


@dataclass(frozen=True)
class Case:
    """``conf/model/<model>.yaml``, dropped warm-up rounds (>= 1: the first fetch plans the epoch), timed rounds
    (fetch + step each)."""

    model: str
    warmup: int
    steps: int


FULL = (Case("tiny", 2, 10),)
QUICK = (Case("tiny", 1, 2),)


def measure(case: Case) -> dict[str, Any]:
    """Alternate fetch and step; the loader and sampler are the DataModule's own."""
    cfg = bench_config([f"model={case.model}", "logger=none", "callbacks=none"])
    run = build_training(cfg)
    datamodule = run.datamodule
    total = case.warmup + case.steps
    precision = str(run.trainer.precision)
    bare = bare_loop_like(run.module, total, device=run.trainer.strategy.root_device, precision=precision)
    loader = datamodule.train_dataloader()
    start = time.perf_counter()
    iterator = iter(loader)
    batch = next(iterator)
    first_fetch = time.perf_counter() - start
    sampler = loader.batch_sampler
    start = time.perf_counter()
    sampler.plan(sampler.epoch + 1)
    plan_s = time.perf_counter() - start
    batches_per_epoch = len(loader)
    fetch, step = [], []
    for i in range(total):
        if i:
            start = time.perf_counter()
            batch = next(iterator)
            fetch.append(time.perf_counter() - start)
        seed_step(i)
        start = time.perf_counter()
        bare.step(batch)
        step.append(time.perf_counter() - start)
    timed_fetch = fetch[case.warmup - 1 :]  # fetch[k] comes right before step[k + 1]
    timed_step = step[case.warmup :]
    plan_per_batch = plan_s / batches_per_epoch
    shares = [(plan_per_batch + f) / s for f, s in zip(timed_fetch, timed_step, strict=True)]
    fetch_stats, step_stats = stats(timed_fetch), stats(timed_step)
    return {
        "case": asdict(case),
        "precision": precision,
        "batch_size": int(cfg.data.batch_size),
        "num_workers": int(cfg.data.num_workers),
        "batches_per_epoch": batches_per_epoch,
        "first_fetch_s": first_fetch,
        "plan_epoch_s": plan_s,
        "fetch": fetch_stats,
        "step": step_stats,
        "data_per_batch_s": plan_per_batch + fetch_stats["median_s"],
        "share_of_step": statistics.median(shares),
        "median_share": (plan_per_batch + fetch_stats["median_s"]) / step_stats["median_s"],
    }


def run(quick: bool = False) -> dict[str, Any]:
    """All cases; ``goals``: data share of the step < 2 % for each model."""
    cases = [measure(case) for case in (QUICK if quick else FULL)]
    goals = [
        goal(f"{c['case']['model']}: data time / step time", c["share_of_step"], TARGET, False) for c in cases
    ]
    return {"precision": joined_precision(cases), "cases": cases, "goals": goals}


def summary(result: dict[str, Any]) -> list[str]:
    return [
        f"{c['case']['model']:>9} ({c['precision']}): fetch {1e3 * c['fetch']['median_s']:.2f} ms/batch + plan "
        f"{1e3 * c['plan_epoch_s']:.0f} ms/epoch ({c['batches_per_epoch']} batches) vs step "
        f"{1e3 * c['step']['median_s']:.0f} ms -> {100 * c['share_of_step']:.2f} % of the step"
        for c in result["cases"]
    ]
