"""Benchmark 10: the epoch planner alone at 10^6 and 10^7 ids × 9 languages (issue 25), on synthetic integer arrays.

:func:`planner_corpus` gives a corpus of ``N`` ids × 9 languages as the planner sees it: the integer view
(:class:`~hybrid_ir.data.corpus.CorpusArrays`: group number and language mask per id) and a number of ids, no texts
and no id strings held (the planner reads ``len(corpus.parallel_ids)`` only; a training input's ids are a memory-mapped
array of fixed-width bytes, :class:`~hybrid_ir.data.formats.table_corpus.TableCorpus`). Each id exists in a language
with probability 0.9 and in at least one; one id in ten is in the group of the id before it (shared passages). For each
``N`` a fresh worker process (so that its peak resident memory, ``ru_maxrss``, is its own) builds the corpus, then
plans epoch 0 and epoch 1 of the hybrid sampler (α = 0.5) and one epoch each of the mono and cross samplers, batch
32, with :func:`~hybrid_ir.data.planning.planner.plan_epoch`, the call the training sampler makes once per epoch (wall
and CPU time each: on a busy machine the CPU time is what the planner costs), and computes the dry run's statistics of
the hybrid plan (:func:`~hybrid_ir.data.planning.stats.batch_stats`).

Goal (issue 25): at 10^7 ids an epoch plan in <= 60 s and the worker's peak RSS <= 4 GB. ``--quick``: 20,000 ids.
Run it with ``OMP_NUM_THREADS=1`` (the planner is single-threaded numpy): ``python -m benchmarks.planner [--quick]
[--out DIR]``, or ``python -m benchmarks.run --only planner``.
"""

from __future__ import annotations

import resource
import sys
import time
from collections.abc import Iterator, Sequence
from typing import TYPE_CHECKING, Any, overload

import numpy as np

from benchmarks.process import run_worker, worker_main

if TYPE_CHECKING:
    from hybrid_ir.data.corpus import ParallelCorpus

NAME = "planner"
LANGS = ["ar", "de", "en", "es", "hi", "ru", "th", "tr", "zh"]
FULL = (1_000_000, 10_000_000)
QUICK = (20_000,)
BATCH = 32
GOAL_IDS = 10_000_000
GOAL_PLAN_S = 60.0
GOAL_PEAK_MB = 4096.0


class SyntheticIds(Sequence[str]):
    """``n`` ids ``s0000000``, ``s0000001``, ... made when read, so a corpus of 10^7 ids holds no id strings."""

    def __init__(self, n: int) -> None:
        self.n = n

    def __len__(self) -> int:
        return self.n

    @overload
    def __getitem__(self, i: int) -> str: ...

    @overload
    def __getitem__(self, i: slice) -> list[str]: ...

    def __getitem__(self, i: int | slice) -> str | list[str]:
        if isinstance(i, slice):
            return [self[j] for j in range(*i.indices(self.n))]
        if not -self.n <= i < self.n:
            raise IndexError(i)
        return f"s{i % self.n:07d}"

    def __iter__(self) -> Iterator[str]:
        return (f"s{i:07d}" for i in range(self.n))


def planner_corpus(n_ids: int, seed: int = 0) -> ParallelCorpus:
    """A corpus of ``n_ids`` ids x 9 languages for the planner alone: ids and their integer view (each id in a
    language with probability 0.9 and in at least one; one id in ten in the group of the id before it), no texts."""
    from hybrid_ir.data.corpus import CorpusArrays, ParallelCorpus

    rng = np.random.default_rng(seed)
    has_lang = rng.random((n_ids, len(LANGS))) < 0.9
    has_lang[np.arange(n_ids), rng.integers(len(LANGS), size=n_ids)] = True
    group = np.cumsum(rng.random(n_ids) >= 0.1) - 1
    group[0] = 0
    corpus = ParallelCorpus(
        name="planner", languages=list(LANGS), pairs={lang: {} for lang in LANGS}, group={}
    )
    corpus.parallel_ids = SyntheticIds(n_ids)  # type: ignore[assignment]
    corpus.__dict__["arrays"] = CorpusArrays(
        group=group, has_lang=has_lang, n_langs=has_lang.sum(1, dtype=np.int8)
    )
    return corpus


def peak_rss_mb() -> float:
    """This process's peak resident set size (``getrusage`` ``ru_maxrss``, KiB on Linux), in MiB."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def measure(config: dict[str, Any]) -> dict[str, Any]:
    """The worker: build :func:`planner_corpus` of ``config["n"]`` ids, plan the epochs (see the module docstring)."""
    from hybrid_ir.data.planning.planner import plan_epoch
    from hybrid_ir.data.planning.stats import batch_stats

    rss_imports = peak_rss_mb()
    start = time.perf_counter()
    corpus = planner_corpus(config["n"])
    out: dict[str, Any] = {
        "ids": config["n"],
        "rss_after_imports_mb": rss_imports,
        "corpus_s": time.perf_counter() - start,
        "rss_before_plan_mb": peak_rss_mb(),
    }
    for mode, epoch in (("hybrid", 0), ("hybrid", 1), ("mono", 0), ("cross", 0)):
        name = f"{mode}_epoch{epoch}" if mode == "hybrid" else mode
        start, cpu = time.perf_counter(), time.process_time()
        plan = plan_epoch([corpus], mode, BATCH, 0.5, seed=0, epoch=epoch)
        out[f"{name}_plan_s"] = time.perf_counter() - start
        out[f"{name}_plan_cpu_s"] = time.process_time() - cpu
        out[f"{name}_batches"] = len(plan)
        if name == "hybrid_epoch0":
            start = time.perf_counter()
            batch_stats(plan, LANGS, [corpus])
            out["stats_s"] = time.perf_counter() - start
        del plan
    out["peak_rss_mb"] = peak_rss_mb()
    return out


def run(quick: bool = False, sizes: tuple[int, ...] | None = None) -> dict[str, Any]:
    """One fresh worker process per size; the goals at :data:`GOAL_IDS`."""
    from benchmarks.timing import goal

    cases = [
        run_worker("benchmarks.planner", {"n": n}, timeout=3600) for n in sizes or (QUICK if quick else FULL)
    ]
    goals = []
    for c in cases:
        if c["ids"] >= GOAL_IDS:
            names = ("hybrid_epoch0", "hybrid_epoch1", "mono", "cross")
            goals += [
                goal(
                    f"{c['ids']} ids: plan per epoch, slowest mode (s)",
                    max(c[f"{name}_plan_s"] for name in names),
                    GOAL_PLAN_S,
                    False,
                ),
                goal(
                    f"{c['ids']} ids: plan per epoch, slowest mode (CPU s)",
                    max(c[f"{name}_plan_cpu_s"] for name in names),
                    GOAL_PLAN_S,
                    False,
                ),
                goal(f"{c['ids']} ids: planner peak RSS (MB)", c["peak_rss_mb"], GOAL_PEAK_MB, False),
            ]
    return {"precision": None, "batch_size": BATCH, "cases": cases, "goals": goals}


def summary(result: dict[str, Any]) -> list[str]:
    def both(c: dict[str, Any], name: str) -> str:
        return f"{c[f'{name}_plan_s']:.1f} s ({c[f'{name}_plan_cpu_s']:.1f} s CPU)"

    return [
        f"{c['ids']:>10} ids x {len(LANGS)} languages: plan per epoch hybrid {both(c, 'hybrid_epoch0')} "
        f"(epoch 1: {both(c, 'hybrid_epoch1')}), mono {both(c, 'mono')}, cross {both(c, 'cross')} "
        f"({c['hybrid_epoch0_batches']} batches of {BATCH}); dry-run statistics {c['stats_s']:.2f} s; peak RSS "
        f"{c['peak_rss_mb']:.0f} MB ({c['rss_after_imports_mb']:.0f} MB after the imports, "
        f"{c['rss_before_plan_mb']:.0f} MB with the corpus built)"
        for c in result["cases"]
    ]


if __name__ == "__main__":
    if sys.argv[1:2] == ["--worker"]:
        worker_main(sys.argv[1:], measure)
    else:
        from benchmarks.run import main

        main(["--only", NAME, *sys.argv[1:]])
