"""Benchmark 4: how the cost of LAReQA scoring grows with the candidate pool.

:func:`~hybrid_ir.evaluation.lareqa_metrics.evaluate_lareqa` (ranking and metrics only; no encoder) on random
L2-normalised 384-d embeddings of XQuAD-R (all 11 languages), with the candidate pool replicated 1x, 4x and 16x
(``k`` copies of every candidate and its embedding; the relevant items stay in the first copy). Each size runs
in a fresh process, which reports its wall time (median over ``repeats``) and its peak resident memory
(``VmHWM`` reset after setup, so the figure is that of the evaluation; ``ru_maxrss`` is reported too).

Time is linear in the number of queries (they are scored in independent chunks of ``query_chunk = 1024``), so
to bound the run time the queries are a seeded sample of ``queries_per_language`` question ids in every
language (more than one chunk in total, so the peak memory is that of a full-size run); the time for all
13,090 XQuAD-R queries is extrapolated linearly.

Agreement check: with exact copies, a single relevant item at rank ``r`` in the 1x pool has rank
``k (r - 1) + 1`` in the k-x pool (the ``r - 1`` better candidates each appear ``k`` times; its own copies
tie and come after it), so its AP is ``1 / (k (r - 1) + 1)``. Each worker with ``k > 1`` also scores the 1x
pool and reports the largest deviation from that prediction over the mono and cross settings.
"""

from __future__ import annotations

import sys
import time
from dataclasses import asdict, dataclass
from typing import Any

from benchmarks.process import run_worker, worker_main

NAME = "eval_scaling"
DATASET = "xquad-r"
LANGUAGES = ("ar", "de", "el", "en", "es", "hi", "ru", "th", "tr", "vi", "zh")
DIM = 384
XQUAD_R_QUERIES = 13090


@dataclass(frozen=True)
class Settings:
    """Pool multipliers, sampled question ids per language, timed repeats per size (at most)."""

    factors: tuple[int, ...]
    queries_per_language: int
    repeats: int


FULL = Settings(factors=(1, 4, 16), queries_per_language=100, repeats=1)
QUICK = Settings(factors=(1, 2), queries_per_language=5, repeats=1)


def replicate(bench: Any, factor: int) -> Any:
    """``bench`` with its candidate list repeated ``factor`` times (relevant indices unchanged)."""
    from hybrid_ir.data.corpus import RetrievalBenchmark

    return RetrievalBenchmark(
        bench.name, bench.languages, bench.queries, bench.candidates * factor, bench.relevant
    )


def predicted_ap_error(base: Any, scaled: Any, factor: int) -> float:
    """Largest ``|AP_k - 1 / (k (r - 1) + 1)|`` over the single-relevant (mono, cross) records, where
    ``r = 1 / AP_1`` is the rank in the 1x pool."""
    errors = [
        abs(b_k.ap - 1.0 / (factor * (1.0 / b_1.ap - 1.0) + 1.0))
        for b_1, b_k in zip(base.per_query, scaled.per_query, strict=True)
        if b_1.setting != "multi"
    ]
    return max(errors, default=0.0)


def work(config: dict[str, Any]) -> dict[str, Any]:
    """Worker: evaluate one pool size (``config``: ``factor``, ``queries_per_language``, ``repeats``, ``seed``)."""
    import torch

    from benchmarks.process import current_rss_mb, peak_rss_mb, reset_peak_rss
    from hybrid_ir.data.formats.lareqa_files import load_lareqa_benchmark
    from hybrid_ir.evaluation.lareqa_metrics import evaluate_lareqa
    from hybrid_ir.utils.paths import default_data_root

    factor = int(config["factor"])
    bench = load_lareqa_benchmark(
        default_data_root(), DATASET, LANGUAGES, config["queries_per_language"], config.get("seed", 0)
    )
    generator = torch.Generator().manual_seed(config.get("seed", 0))
    q_emb = torch.nn.functional.normalize(torch.randn(len(bench.queries), DIM, generator=generator), dim=1)
    c_base = torch.nn.functional.normalize(
        torch.randn(len(bench.candidates), DIM, generator=generator), dim=1
    )
    base_result = evaluate_lareqa(q_emb, c_base, bench) if factor > 1 else None
    scaled = replicate(bench, factor)
    c_emb = c_base.repeat(factor, 1)
    baseline = current_rss_mb()
    reset = reset_peak_rss()
    times = []
    for _ in range(int(config["repeats"])):
        start = time.perf_counter()
        result = evaluate_lareqa(q_emb, c_emb, scaled)
        times.append(time.perf_counter() - start)
    import resource

    return {
        "factor": factor,
        "queries": len(bench.queries),
        "candidates": len(scaled.candidates),
        "times_s": times,
        "rss_before_mb": baseline,
        "peak_rss_mb": peak_rss_mb(),
        "peak_reset": reset,
        "ru_maxrss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
        "max_ap_error": predicted_ap_error(base_result, result, factor) if base_result is not None else 0.0,
    }


def run(quick: bool = False) -> dict[str, Any]:
    """One worker process per pool size; no goal (the figures show the growth)."""
    settings = QUICK if quick else FULL
    sizes = []
    for factor in settings.factors:
        repeats = settings.repeats if factor < max(settings.factors) else 1
        config = {"factor": factor, "queries_per_language": settings.queries_per_language, "repeats": repeats}
        out = run_worker("benchmarks.eval_scaling", config)
        median = sorted(out["times_s"])[(len(out["times_s"]) - 1) // 2]
        out["median_s"] = median
        out["per_query_ms"] = 1e3 * median / out["queries"]
        out["extrapolated_all_queries_s"] = median * XQUAD_R_QUERIES / out["queries"]
        out["eval_memory_mb"] = out["peak_rss_mb"] - out["rss_before_mb"]
        sizes.append(out)
    first = sizes[0]
    for size in sizes:
        size["time_growth"] = size["median_s"] / first["median_s"]
        size["memory_growth"] = size["eval_memory_mb"] / max(first["eval_memory_mb"], 1e-9)
    # Random float32 embeddings, no model: ranking and metrics only.
    return {"precision": "32-true", "settings": asdict(settings), "sizes": sizes, "goals": []}


def summary(result: dict[str, Any]) -> list[str]:
    return [
        f"pool x{s['factor']:>2} ({s['candidates']} candidates, {s['queries']} queries): {s['median_s']:.2f} s "
        f"({s['per_query_ms']:.2f} ms/query, all {XQUAD_R_QUERIES} queries ~{s['extrapolated_all_queries_s']:.0f} s), "
        f"peak RSS {s['peak_rss_mb']:.0f} MiB (+{s['eval_memory_mb']:.0f} MiB over setup); AP check error "
        f"{s['max_ap_error']:.1e}"
        for s in result["sizes"]
    ]


if __name__ == "__main__":
    worker_main(sys.argv[1:], work)
