"""Benchmark 3: per-epoch evaluation time against the time to just embed the evaluation texts once.

*Ours*: :meth:`~hybrid_ir.evaluation.runner.Evaluator.run` as the zero-shot callback calls it after an epoch
(benchmark already loaded; embedding every distinct text once, LAReQA metrics, figures, per-query file,
``metrics.json``) on an MLQA-R subset (``eval.max_qids`` parallel questions with only their paragraphs as the
pool, all seven languages), settings from ``conf/train.yaml``.
*Encode only*: ``Encoder.encode`` of the distinct query texts and of the distinct candidate texts, same batch
size and precision: the least any evaluation must spend.

A third competitor is ``Evaluator.run`` with ``eval.plots=false`` (no figures), to show where the difference
goes. The three alternate (A B C A B C ...) after one warm-up of each; the slowdown is the median over rounds of
``t_ours / t_encode_only`` (``timings.ratio_ours``: the timings are relative to encode-only here). The
encoder handed to ``Evaluator.run`` records its outputs, which must equal the encode-only embeddings.

The difference is a cost per evaluation that hardly grows with the subset (figures, files), so the ratio
depends on the subset size; ``projection_default`` estimates it at the training default ``eval.max_qids``
(encoding time scaled by the number of tokens, LAReQA metrics timed at that size on random embeddings).

Goal: ours <= 1.1 x encode-only.
"""

from __future__ import annotations

import tempfile
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, replace
from typing import Any

import torch
from hydra.utils import instantiate
from omegaconf import OmegaConf
from torch import Tensor

from benchmarks.harness import bench_config, joined_precision
from benchmarks.timing import compare_timings, goal
from hybrid_ir.data.corpus import RetrievalBenchmark
from hybrid_ir.evaluation.callback import eval_precision
from hybrid_ir.evaluation.config import EvalConfig
from hybrid_ir.evaluation.lareqa_metrics import evaluate_lareqa
from hybrid_ir.evaluation.runner import Evaluator
from hybrid_ir.models.encoder import Encoder
from hybrid_ir.models.tokenizer import TextKind
from hybrid_ir.utils.settings import settings

NAME = "eval_overhead"
TARGET = 1.1


@dataclass(frozen=True)
class Case:
    """``conf/model/<model>.yaml``, ``eval.max_qids`` and the number of timed rounds after one warm-up."""

    model: str
    max_qids: int
    rounds: int


FULL = (Case("e5-small", 6, 2),)
QUICK = (Case("tiny", 4, 1),)


class RecordingEncoder:
    """Passes ``encode`` calls to the encoder and keeps the last output per text kind (for the agreement
    check); everything :class:`~hybrid_ir.retrieval.encode.TextEncoder` needs, nothing more."""

    def __init__(self, encoder: Encoder) -> None:
        self.encoder = encoder
        self.outputs: dict[str, Tensor] = {}

    @property
    def dim(self) -> int:
        return self.encoder.dim

    def parameters(self):
        return self.encoder.parameters()

    def encode(self, texts: Sequence[str], kind: TextKind, **kwargs: Any) -> Tensor:
        out = self.encoder.encode(texts, kind, **kwargs)
        self.outputs[kind] = out
        return out


def _benchmark(cfg: Any, max_qids: int) -> tuple[EvalConfig, Evaluator]:
    """The evaluation settings of ``cfg`` with ``max_qids`` and an :class:`Evaluator` (benchmark loaded)."""
    eval_cfg = settings(
        EvalConfig, {**OmegaConf.to_container(cfg.eval, resolve=True), "max_qids": max_qids}, "eval"
    )
    evaluator = Evaluator(eval_cfg, tempfile.mkdtemp(prefix="hybrid_ir_bench_eval_"))
    evaluator.load()
    return eval_cfg, evaluator


def _distinct_texts(bench: RetrievalBenchmark) -> tuple[list[str], list[str]]:
    return list(dict.fromkeys(q.text for q in bench.queries)), list(
        dict.fromkeys(c.text for c in bench.candidates)
    )


def _tokens(encoder: Encoder, queries: list[str], candidates: list[str]) -> int:
    """Number of tokens the encoder sees for these texts (encoding time is about proportional to it)."""
    tt = encoder.text_tokenizer
    return sum(len(ids) for ids in tt(queries, "query")) + sum(len(ids) for ids in tt(candidates, "passage"))


def _lareqa_seconds(bench: RetrievalBenchmark, dim: int, eval_cfg: EvalConfig) -> float:
    """Time of :func:`evaluate_lareqa` on random normalised embeddings of ``bench``."""
    generator = torch.Generator().manual_seed(0)
    q = torch.nn.functional.normalize(torch.randn(len(bench.queries), dim, generator=generator), dim=1)
    c = torch.nn.functional.normalize(torch.randn(len(bench.candidates), dim, generator=generator), dim=1)
    start = time.perf_counter()
    evaluate_lareqa(q, c, bench, map_k=eval_cfg.map_k, share_k=eval_cfg.share_k)
    return time.perf_counter() - start


def project(
    encoder: Encoder, cfg: Any, measured: dict[str, Any], tokens: int, metrics_s: float
) -> dict[str, Any]:
    """Ratio expected at the training default ``eval.max_qids``: encoding time scaled by the token count, the
    measured fixed cost per evaluation (figures, files) kept, the LAReQA metrics timed at that size."""
    default_qids = int(bench_config().eval.max_qids)
    eval_cfg, evaluator = _benchmark(cfg, default_qids)
    bench = next(iter(evaluator.load().values()))
    default_tokens = _tokens(encoder, *_distinct_texts(bench))
    encode_s = measured["encode_only"]["median_s"] * default_tokens / tokens
    fixed_s = -measured["extra_s_vs_ours"] - metrics_s
    default_metrics_s = _lareqa_seconds(bench, encoder.dim, eval_cfg)
    return {
        "max_qids": default_qids,
        "queries": len(bench.queries),
        "candidates": len(bench.candidates),
        "tokens": default_tokens,
        "encode_s": encode_s,
        "fixed_s": fixed_s,
        "lareqa_metrics_s": default_metrics_s,
        "ratio": (encode_s + fixed_s + default_metrics_s) / encode_s,
    }


def measure(case: Case) -> dict[str, Any]:
    """Warm up all three, then ``case.rounds`` rounds of (Evaluator.run, the same without figures, encode-only)."""
    cfg = bench_config([f"model={case.model}"])
    encoder: Encoder = instantiate(cfg.model)
    eval_cfg, evaluator = _benchmark(cfg, case.max_qids)
    no_figures = Evaluator(replace(eval_cfg, plots=False), tempfile.mkdtemp(prefix="hybrid_ir_bench_eval_"))
    bench = next(iter(evaluator.load().values()))
    no_figures.load()
    precision = eval_precision(cfg.trainer.precision)
    queries, candidates = _distinct_texts(bench)
    recorder = RecordingEncoder(encoder)
    encoded: dict[str, Tensor] = {}

    def encode_only() -> None:
        encoded["query"] = encoder.encode(
            queries, "query", batch_size=eval_cfg.batch_size, precision=precision
        )
        encoded["passage"] = encoder.encode(
            candidates, "passage", batch_size=eval_cfg.batch_size, precision=precision
        )

    competitors = {
        "ours": lambda i: evaluator.run(recorder, tag=f"round{i}", precision=precision),
        "ours_no_figures": lambda i: no_figures.run(encoder, tag=f"round{i}", precision=precision),
        "encode_only": lambda i: encode_only(),
    }
    times: dict[str, list[float]] = {name: [] for name in competitors}
    max_diff = 0.0
    for i in range(case.rounds + 1):
        for name, run_competitor in competitors.items():
            start = time.perf_counter()
            run_competitor(i)
            times[name].append(time.perf_counter() - start)
        max_diff = max(max_diff, *(float((recorder.outputs[k] - encoded[k]).abs().max()) for k in encoded))
    timings = compare_timings(times, 1, len(bench.queries), ours="encode_only")
    metrics_s = _lareqa_seconds(bench, encoder.dim, eval_cfg)
    tokens = _tokens(encoder, queries, candidates)
    return {
        "case": asdict(case),
        "precision": precision,
        "eval_batch_size": eval_cfg.batch_size,
        "queries": len(bench.queries),
        "candidates": len(bench.candidates),
        "distinct_texts": [len(queries), len(candidates)],
        "tokens": tokens,
        "per_query_files": eval_cfg.per_query,
        "timings": timings,
        "warmup_s": {name: values[0] for name, values in times.items()},
        "slowdown": timings["ratio_ours"],
        "slowdown_no_figures": timings["ratio_ours_no_figures"],
        "lareqa_metrics_s": metrics_s,
        "projection_default": project(encoder, cfg, timings, tokens, metrics_s),
        "max_abs_embedding_diff": max_diff,
    }


def run(quick: bool = False) -> dict[str, Any]:
    """All cases; ``goals``: Evaluator.run / encode-only <= 1.1 per model."""
    cases = [measure(case) for case in (QUICK if quick else FULL)]
    goals = [
        goal(f"{c['case']['model']}: evaluation / encode-only time", c["slowdown"], TARGET, False)
        for c in cases
    ]
    return {"precision": joined_precision(cases), "cases": cases, "goals": goals}


def summary(result: dict[str, Any]) -> list[str]:
    lines = []
    for c in result["cases"]:
        t, proj = c["timings"], c["projection_default"]
        lines.append(
            f"{c['case']['model']:>9}: {c['queries']} queries, {c['candidates']} candidates: Evaluator.run "
            f"{t['ours']['median_s']:.2f} s, without figures {t['ours_no_figures']['median_s']:.2f} s, encode-only "
            f"{t['encode_only']['median_s']:.2f} s -> {c['slowdown']:.3f}x ({c['slowdown_no_figures']:.3f}x without "
            f"figures; LAReQA metrics {c['lareqa_metrics_s']:.3f} s); embeddings identical: "
            f"{c['max_abs_embedding_diff'] == 0.0}"
        )
        lines.append(
            f"           projected at the default eval.max_qids={proj['max_qids']} ({proj['queries']} queries, "
            f"{proj['candidates']} candidates): {proj['ratio']:.3f}x"
        )
    return lines
