"""encode_benchmark / encode_texts (dedupe, DDP sharding), faiss_search vs torch, evaluate_miracl vs ir_measures."""

from __future__ import annotations

import itertools
import json
import random
from pathlib import Path

import ir_measures
import pytest
import torch
from ir_measures import R, nDCG

from hybrid_ir.data.corpus import Candidate, Query, RetrievalBenchmark
from hybrid_ir.data.miracl import load_miracl
from hybrid_ir.evaluation.retrieval import (
    encode_benchmark,
    encode_texts,
    evaluate_miracl,
    faiss_has_gpu,
    faiss_search,
    shard_bounds,
)
from tests.ddp import gloo_group, spawn
from tests.fakes import BagOfWordsEncoder

WORLD = 2


def _bench() -> RetrievalBenchmark:
    texts = ["red fox", "blue sky", "red fox", "green tree", "blue sky", "red fox", "old road"]
    return RetrievalBenchmark(
        name="toy",
        languages=["de", "en"],
        queries=[Query("q1", "en", "where fox"), Query("q1", "de", "wo fox"), Query("q2", "en", "where fox")],
        candidates=[Candidate("en" if i < 4 else "de", t, context=f"c{i // 4}") for i, t in enumerate(texts)],
        relevant={"q1": {"en": 0, "de": 5}, "q2": {"en": 1}},
    )


def test_encode_benchmark_encodes_each_distinct_text_once() -> None:
    enc, bench = BagOfWordsEncoder(), _bench()
    q_emb, c_emb = encode_benchmark(enc, bench, batch_size=2)
    assert [kind for kind, _ in enc.calls] == ["query", "passage"]
    assert enc.calls[0][1] == ["where fox", "wo fox"]
    assert enc.calls[1][1] == ["red fox", "blue sky", "green tree", "old road"]
    reference = BagOfWordsEncoder()
    assert torch.equal(q_emb, reference.encode([q.text for q in bench.queries], "query"))
    assert torch.equal(c_emb, reference.encode([c.text for c in bench.candidates], "passage"))
    assert q_emb.shape == (3, enc.dim) and c_emb.shape == (7, enc.dim)


@pytest.mark.parametrize("n", [0, 1, 5, 8])
def test_shard_bounds_cover_all_items(n: int) -> None:
    bounds = [shard_bounds(n, r, 3) for r in range(3)]
    assert bounds[0][0] == 0 and bounds[-1][1] == n
    assert all(a[1] == b[0] for a, b in itertools.pairwise(bounds))
    sizes = [stop - start for start, stop in bounds]
    assert max(sizes) - min(sizes) <= 1


# -------------------------------------------------- DDP: each rank encodes its shard, all get everything

DDP_CASES = {
    "uneven": ["a b", "c", "a b", "d e", "f", "c", "g", "h i", "j", "a b", "k"],
    "one-text": ["same words", "same words", "same words"],
}


def _worker(rank: int, port: int, out_dir: str) -> None:
    with gloo_group(rank, port, WORLD):
        result = {}
        for name, texts in DDP_CASES.items():
            enc = BagOfWordsEncoder()
            emb = encode_texts(enc, texts, "passage", batch_size=4)
            result[name] = (emb, [t for _, call in enc.calls for t in call])
        torch.save(result, Path(out_dir) / f"rank{rank}.pt")


def test_ddp_ranks_encode_their_shard_and_gather_everything(tmp_path: Path) -> None:
    spawn(_worker, str(tmp_path), nprocs=WORLD)
    results = [torch.load(tmp_path / f"rank{r}.pt", weights_only=False) for r in range(WORLD)]
    for name, texts in DDP_CASES.items():
        expected = BagOfWordsEncoder().encode(texts, "passage")
        unique = list(dict.fromkeys(texts))
        encoded = [results[r][name][1] for r in range(WORLD)]
        assert [t for part in encoded for t in part] == unique, name  # contiguous shards in rank order
        assert all(len(part) <= -(-len(unique) // WORLD) for part in encoded)
        for r in range(WORLD):
            assert torch.allclose(results[r][name][0], expected, atol=1e-6), (name, r)


# -------------------------------------------------- faiss


def test_faiss_search_matches_torch_topk() -> None:
    gen = torch.Generator().manual_seed(0)
    queries, docs = torch.randn(40, 16, generator=gen), torch.randn(150, 16, generator=gen)
    scores, indices = faiss_search(queries, docs, k=12, device="cpu")
    expected = (queries @ docs.T).topk(12, dim=1)
    assert indices.dtype == torch.int64 and indices.shape == (40, 12)
    assert torch.equal(indices, expected.indices)
    assert torch.allclose(scores, expected.values, atol=1e-4)
    _, auto_indices = faiss_search(queries.numpy(), docs.numpy(), k=12, device="auto")
    assert torch.equal(auto_indices, expected.indices)


def test_faiss_search_clips_k_and_checks_arguments() -> None:
    queries, docs = torch.randn(3, 8), torch.randn(5, 8)
    _, indices = faiss_search(queries, docs, k=50, device="cpu")
    assert indices.shape == (3, 5) and sorted(indices[0].tolist()) == list(range(5))
    with pytest.raises(ValueError, match="same D"):
        faiss_search(queries, torch.randn(5, 7), k=2)
    with pytest.raises(ValueError, match="device"):
        faiss_search(queries, docs, k=2, device="tpu")
    if not faiss_has_gpu():
        with pytest.raises(RuntimeError, match="GPU"):
            faiss_search(queries, docs, k=2, device="gpu")


# -------------------------------------------------- MIRACL


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
