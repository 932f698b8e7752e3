"""MIRACL evaluation: load the dev data of a dataset spec, retrieve by exact inner product, nDCG and Recall.

**Evaluated queries**: judgements of documents absent from the corpus are dropped, and only the judged queries
left with at least one relevant document *in the given corpus* are scored. With the full MIRACL corpus this is
every judged query (the official setting); with a partial corpus the scores are those of retrieval from that
corpus, not lowered by relevant documents that could never be found. Loading warns when judged documents are
missing from the corpus (how many judgements are dropped, how many queries are skipped), and every evaluation
logs how many queries were scored and skipped.

See docs/method.md (metrics and language bias).
"""

from __future__ import annotations

import logging
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from hybrid_ir.data.formats.miracl_files import load_miracl
from hybrid_ir.evaluation.config import DatasetSpec
from hybrid_ir.evaluation.metrics import evaluate_run, mean_over_queries
from hybrid_ir.evaluation.subset import choose_ids
from hybrid_ir.retrieval.encode import TextEncoder, encode_corpus, encode_texts
from hybrid_ir.retrieval.index import IndexConfig, SearchDevice, build_index
from hybrid_ir.utils.distributed import world_info

log = logging.getLogger(__name__)

K_NDCG = 10
K_RECALL = 100
NDCG = f"ndcg_at{K_NDCG}"
RECALL = f"recall_at{K_RECALL}"

Qrels = Mapping[str, Mapping[str, int]]


@dataclass
class MiraclData:
    """MIRACL dev data of one dataset spec: per language ``(topics, qrels, corpus)``."""

    name: str
    languages: list[str]
    by_lang: dict[str, tuple[dict[str, str], dict[str, dict[str, int]], dict[str, str]]]


@dataclass(frozen=True)
class Coverage:
    """How much of the qrels a corpus covers.

    Attributes:
        judgements: judged (query, document) pairs.
        dropped: judgements of documents missing from the corpus.
        dropped_relevant: of those, judgements with ``rel > 0``.
        queries: judged queries.
        scored: judged queries left with a relevant document in the corpus.
    """

    judgements: int
    dropped: int
    dropped_relevant: int
    queries: int
    scored: int

    @property
    def skipped(self) -> int:
        """Judged queries without a relevant document in the corpus (not scored)."""
        return self.queries - self.scored


def judged_in_corpus(qrels: Qrels, corpus: Mapping[str, str]) -> dict[str, dict[str, int]]:
    """The qrels restricted to the documents of ``corpus``, then to the queries left with a relevant
    (``rel > 0``) document."""
    kept = {qid: {doc: rel for doc, rel in judged.items() if doc in corpus} for qid, judged in qrels.items()}
    return {qid: judged for qid, judged in kept.items() if any(rel > 0 for rel in judged.values())}


def coverage(qrels: Qrels, corpus: Mapping[str, str]) -> Coverage:
    """Count the judgements ``corpus`` lacks and the queries left to score (see :class:`Coverage`)."""
    missing = [rel for judged in qrels.values() for doc, rel in judged.items() if doc not in corpus]
    return Coverage(
        judgements=sum(len(judged) for judged in qrels.values()),
        dropped=len(missing),
        dropped_relevant=sum(rel > 0 for rel in missing),
        queries=len(qrels),
        scored=len(judged_in_corpus(qrels, corpus)),
    )


def warn_if_incomplete(name: str, lang: str, cov: Coverage) -> None:
    """Log a warning (rank 0) when judged documents are missing from the corpus (the scores then differ from
    MIRACL's)."""
    if cov.dropped and world_info()[0] == 0:
        log.warning(
            "%s [%s]: INCOMPLETE CORPUS: %d of %d judgements (%d relevant) name documents missing from the "
            "corpus and are dropped; %d of %d judged queries have no relevant document left and are skipped. "
            "Scores are for retrieval from this partial corpus, not comparable with full-corpus MIRACL results.",
            name,
            lang,
            cov.dropped,
            cov.judgements,
            cov.dropped_relevant,
            cov.skipped,
            cov.queries,
        )


def load_miracl_dataset(
    root: Path, spec: DatasetSpec, max_queries_per_language: int | None = None, seed: int = 0
) -> MiraclData:
    """Read the topics, qrels and corpus of every language of ``spec`` (optionally a seeded sample of
    ``max_queries_per_language`` judged queries per language) and warn about incomplete corpora."""
    by_lang = {}
    for lang in spec.languages:
        topics, qrels, corpus = load_miracl(root, lang, spec.corpus[lang])
        if max_queries_per_language is not None and max_queries_per_language < len(qrels):
            kept = choose_ids(list(qrels), max_queries_per_language, seed)
            qrels = {qid: judged for qid, judged in qrels.items() if qid in kept}
        warn_if_incomplete(spec.name, lang, coverage(qrels, corpus))
        by_lang[lang] = (topics, qrels, corpus)
    return MiraclData(spec.name, list(spec.languages), by_lang)


def evaluate_miracl(
    encoder: TextEncoder,
    topics: Mapping[str, str],
    qrels: Qrels,
    corpus: Mapping[str, str],
    batch_size: int,
    precision: str = "32",
    k_ndcg: int = K_NDCG,
    k_recall: int = K_RECALL,
    search_device: SearchDevice = "auto",
) -> dict[str, Any]:
    """MIRACL-style dense retrieval: nDCG@``k_ndcg`` and Recall@``k_recall`` (trec_eval definitions) of the
    evaluated queries (see the module docstring).

    Each query's top ``max(k_ndcg, k_recall)`` documents by inner product (the corpus encoded in chunks by
    :func:`~hybrid_ir.retrieval.encode.encode_corpus`, exact faiss search) form the run;
    :func:`hybrid_ir.evaluation.metrics.evaluate_run` scores it. Encoding is a collective under DDP; after it
    every rank has all embeddings and computes the (same) metrics.

    Returns:
        ``{"ndcg_at{k}": mean, "recall_at{k}": mean, "n_queries": evaluated, "n_skipped": judged queries left
        out, "per_query": {qid: {"ndcg_at{k}": v, "recall_at{k}": v}}}``.
    """
    judged = judged_in_corpus(qrels, corpus)
    qids = [qid for qid in judged if qid in topics]
    missing = sorted(set(judged) - set(topics))
    if missing:
        raise ValueError(f"{len(missing)} judged queries have no topic, e.g. {missing[0]!r}")
    doc_ids = list(corpus)
    ndcg, recall = f"ndcg_at{k_ndcg}", f"recall_at{k_recall}"
    out: dict[str, Any] = {
        ndcg: 0.0,
        recall: 0.0,
        "n_queries": len(qids),
        "n_skipped": len(qrels) - len(qids),
    }
    if not qids:
        out["per_query"] = {}
        return out
    q_emb = encode_texts(encoder, [topics[qid] for qid in qids], "query", batch_size, precision)
    d_emb = encode_corpus(
        encoder, [corpus[doc] for doc in doc_ids], "passage", batch_size, precision, desc="encode corpus"
    )
    index = build_index(d_emb, IndexConfig(kind="flat", device=search_device))
    run = {}
    for start, scores, indices in index.search_chunks(q_emb, max(k_ndcg, k_recall)):
        for qid, row_s, row_i in zip(qids[start:], scores.tolist(), indices.tolist(), strict=False):
            run[qid] = {doc_ids[j]: float(s) for s, j in zip(row_s, row_i, strict=True) if j >= 0}
    names = {f"nDCG@{k_ndcg}": ndcg, f"R@{k_recall}": recall}
    measured = evaluate_run(run, {qid: judged[qid] for qid in qids}, measures=tuple(names))
    per_query = {qid: {names[m]: v for m, v in values.items()} for qid, values in measured.items()}
    out.update(mean_over_queries(per_query))
    out["per_query"] = per_query
    return out


def _mean(values: Sequence[float]) -> float:
    return sum(values) / len(values) if values else math.nan


def evaluate_dataset(
    encoder: TextEncoder, data: MiraclData, batch_size: int, precision: str = "32"
) -> dict[str, dict[str, Any]]:
    """:func:`evaluate_miracl` per language of ``data`` (a collective under DDP), logging (rank 0) the queries
    scored and skipped of each."""
    per_lang = {}
    for lang, (topics, qrels, corpus) in data.by_lang.items():
        per_lang[lang] = evaluate_miracl(encoder, topics, qrels, corpus, batch_size, precision)
        if world_info()[0] != 0:
            continue
        log.info(
            "%s [%s]: %d queries scored, %d skipped (no relevant document in the corpus)",
            data.name,
            lang,
            per_lang[lang]["n_queries"],
            per_lang[lang]["n_skipped"],
        )
    return per_lang


def summarize(name: str, per_lang: Mapping[str, Mapping[str, Any]]) -> dict[str, Any]:
    """The ``metrics.json`` summary of one MIRACL dataset: macro averages over languages and per-language
    values (``scalars``: ``ndcg_at10``, ``recall_at100``, ``n_queries``, ``n_skipped`` and per language
    ``ndcg_at10_<lang>``, ``recall_at100_<lang>``)."""
    langs = list(per_lang)
    scalars = {
        NDCG: _mean([per_lang[lang][NDCG] for lang in langs]),
        RECALL: _mean([per_lang[lang][RECALL] for lang in langs]),
        "n_queries": float(sum(per_lang[lang]["n_queries"] for lang in langs)),
        "n_skipped": float(sum(per_lang[lang]["n_skipped"] for lang in langs)),
    }
    for lang in langs:
        scalars[f"{NDCG}_{lang}"] = per_lang[lang][NDCG]
        scalars[f"{RECALL}_{lang}"] = per_lang[lang][RECALL]
    summary_per_lang = {
        lang: {k: v for k, v in res.items() if k != "per_query"} for lang, res in per_lang.items()
    }
    return {"name": name, "languages": langs, "scalars": scalars, "per_language": summary_per_lang}


def per_query_columns(per_lang: Mapping[str, Mapping[str, Any]]) -> dict[str, list[Any]]:
    """The per-query values of every language as columns ``qid``, ``lang``, ``ndcg_at10``, ``recall_at100``."""
    rows = [(lang, qid, values) for lang, res in per_lang.items() for qid, values in res["per_query"].items()]
    columns: dict[str, list[Any]] = {"qid": [q for _, q, _ in rows], "lang": [lang for lang, _, _ in rows]}
    for measure in (NDCG, RECALL):
        columns[measure] = [values[measure] for _, _, values in rows]
    return columns
