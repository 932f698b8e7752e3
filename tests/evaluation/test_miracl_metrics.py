"""MIRACL evaluation: evaluate_miracl vs ir_measures, incomplete corpora (counts and warnings), several corpus
files, the summary and per-query columns."""

from __future__ import annotations

import gzip
import json
import logging
import random
from pathlib import Path

import ir_measures
import pytest
from ir_measures import R, nDCG

from hybrid_ir.data.formats.miracl_files import load_miracl
from hybrid_ir.evaluation.config import DatasetSpec
from hybrid_ir.evaluation.miracl_metrics import (
    coverage,
    evaluate_dataset,
    evaluate_miracl,
    load_miracl_dataset,
    per_query_columns,
    summarize,
)
from tests.helpers.fakes import BagOfWordsEncoder


def _write_miracl(root: Path, lang: str) -> Path:
    """A small MIRACL-format dataset: topics TSV, TREC qrels (with judgements of documents that are not in the
    corpus, and one query whose only relevant document is missing), and a JSONL corpus."""
    rng = random.Random(0)
    vocab = [f"w{i}" for i in range(60)]
    corpus = {f"{a}#{p}": " ".join(rng.sample(vocab, 6)) for a in range(40) for p in range(5)}
    doc_ids = list(corpus)
    topics, qrels = {}, []
    for q in range(30):
        relevant = rng.sample(doc_ids, rng.randint(1, 4))
        words = corpus[relevant[0]].split()[:3] + rng.sample(vocab, 2)
        topics[str(100 + q)] = " ".join(words)
        qrels += [(str(100 + q), doc, 1) for doc in relevant]
        qrels += [(str(100 + q), doc, 0) for doc in rng.sample(doc_ids, 3) if doc not in relevant]
        if q % 4 == 0:
            qrels.append((str(100 + q), f"missing#{q}", 1))
    topics["999"] = "w1 w2"
    qrels.append(("999", "missing#999", 1))
    base = root / "miracl"
    (base / "topics").mkdir(parents=True)
    (base / "qrels").mkdir()
    (base / "topics" / f"topics.miracl-v1.0-{lang}-dev.tsv").write_text(
        "".join(f"{qid}\t{text}\n" for qid, text in topics.items()), encoding="utf-8"
    )
    (base / "qrels" / f"qrels.miracl-v1.0-{lang}-dev.tsv").write_text(
        "".join(f"{qid} Q0 {doc} {rel}\n" for qid, doc, rel in qrels), encoding="utf-8"
    )
    corpus_file = root / f"corpus-{lang}.jsonl"
    lines = [
        json.dumps({"docid": d, "title": f"t{d.split('#')[0]}" if i % 2 else "", "text": t})
        for i, (d, t) in enumerate(corpus.items())
    ]
    corpus_file.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return corpus_file


def test_evaluate_miracl_matches_ir_measures(tmp_path: Path) -> None:
    corpus_file = _write_miracl(tmp_path, "sw")
    topics, qrels, corpus = load_miracl(tmp_path, "sw", corpus_file)
    result = evaluate_miracl(
        BagOfWordsEncoder(), topics, qrels, corpus, batch_size=16, k_ndcg=10, k_recall=20
    )

    judged = {q: {d: r for d, r in j.items() if d in corpus} for q, j in qrels.items()}
    judged = {q: j for q, j in judged.items() if any(r > 0 for r in j.values())}
    assert "999" not in judged and len(judged) == 30
    assert result["n_queries"] == 30 and result["n_skipped"] == 1
    assert set(result["per_query"]) == set(judged)

    enc, doc_ids = BagOfWordsEncoder(), list(corpus)
    q_emb = enc.encode([topics[q] for q in judged], "query")
    d_emb = enc.encode([corpus[d] for d in doc_ids], "passage")
    top = (q_emb @ d_emb.T).topk(20, dim=1)
    run = {
        q: {doc_ids[j]: s for s, j in zip(vals, idx, strict=True)}
        for q, vals, idx in zip(judged, top.values.tolist(), top.indices.tolist(), strict=True)
    }
    expected = {
        (m.query_id, str(m.measure)): m.value for m in ir_measures.iter_calc([nDCG @ 10, R @ 20], judged, run)
    }
    for (qid, measure), value in expected.items():
        name = "ndcg_at10" if measure == "nDCG@10" else "recall_at20"
        assert result["per_query"][qid][name] == pytest.approx(value, abs=1e-6), (qid, measure)
    aggregate = ir_measures.calc_aggregate([nDCG @ 10, R @ 20], judged, run)
    assert result["ndcg_at10"] == pytest.approx(aggregate[nDCG @ 10], abs=1e-6)
    assert result["recall_at20"] == pytest.approx(aggregate[R @ 20], abs=1e-6)
    assert 0.2 < result["ndcg_at10"] < 1.0  # the bag-of-words encoder finds some, not all


def test_evaluate_miracl_without_evaluable_queries() -> None:
    result = evaluate_miracl(BagOfWordsEncoder(), {"1": "a"}, {"1": {"gone": 1}}, {"d": "a"}, batch_size=4)
    assert result["n_queries"] == 0 and result["n_skipped"] == 1 and result["per_query"] == {}


def _spec(corpus: object) -> DatasetSpec:
    return DatasetSpec("miracl", "miracl", ("sw",), {"sw": corpus})


def test_coverage_counts_dropped_judgements_and_skipped_queries(tmp_path: Path) -> None:
    _, qrels, corpus = load_miracl(tmp_path, "sw", _write_miracl(tmp_path, "sw"))
    cov = coverage(qrels, corpus)
    assert cov.judgements == sum(len(judged) for judged in qrels.values())
    # queries 100, 104, ..., 128 each lose one relevant document; query 999 loses its only one
    assert (cov.dropped, cov.dropped_relevant) == (9, 9)
    assert (cov.queries, cov.scored, cov.skipped) == (31, 30, 1)
    assert coverage(qrels, {**corpus, **{f"missing#{q}": "x" for q in (*range(0, 30, 4), 999)}}).dropped == 0


def test_incomplete_corpus_warns_and_evaluation_logs_scored_and_skipped(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    corpus_file = _write_miracl(tmp_path, "sw")
    with caplog.at_level(logging.INFO, logger="hybrid_ir.evaluation.miracl_metrics"):
        data = load_miracl_dataset(tmp_path, _spec((str(corpus_file),)))
        warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
        assert len(warnings) == 1
        assert "INCOMPLETE CORPUS: 9 of" in warnings[0] and "(9 relevant)" in warnings[0]
        assert "1 of 31 judged queries" in warnings[0]
        caplog.clear()
        per_lang = evaluate_dataset(BagOfWordsEncoder(), data, batch_size=16)
    assert "miracl [sw]: 30 queries scored, 1 skipped" in caplog.text
    summary = summarize("miracl", per_lang)
    assert summary["scalars"]["n_queries"] == 30 and summary["scalars"]["n_skipped"] == 1
    columns = per_query_columns(per_lang)
    assert len(columns["qid"]) == 30 and set(columns["lang"]) == {"sw"}


def test_complete_corpus_does_not_warn(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    corpus_file = _write_miracl(tmp_path, "sw")
    with gzip.open(tmp_path / "docs-1.jsonl.gz", "wt", encoding="utf-8") as fh:
        for q in (*range(0, 30, 4), 999):
            fh.write(json.dumps({"docid": f"missing#{q}", "title": "", "text": "w3 w4"}) + "\n")
    with caplog.at_level(logging.WARNING, logger="hybrid_ir.evaluation.miracl_metrics"):
        data = load_miracl_dataset(tmp_path, _spec((str(corpus_file), str(tmp_path / "docs-*.jsonl.gz"))))
    assert not caplog.records
    assert len(data.by_lang["sw"][2]) == 200 + 9
