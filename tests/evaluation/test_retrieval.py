"""encode_benchmark / encode_texts (dedupe, DDP sharding), faiss_search vs torch."""

from __future__ import annotations

import itertools
from pathlib import Path

import pytest
import torch

from hybrid_ir.data.corpus import Candidate, Query, RetrievalBenchmark
from hybrid_ir.evaluation.retrieval import (
    encode_benchmark,
    encode_texts,
    faiss_has_gpu,
    faiss_search,
    shard_bounds,
)
from tests.helpers.ddp import gloo_group, spawn
from tests.helpers.fakes import BagOfWordsEncoder

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
