"""encode_benchmark / encode_texts / encode_corpus (dedupe, chunks, DDP sharding), faiss indexes vs exact search."""

from __future__ import annotations

import itertools
from pathlib import Path

import numpy as np
import pytest
import torch

from hybrid_ir.data.corpus import Candidate, Query, RetrievalBenchmark
from hybrid_ir.retrieval.encode import encode_benchmark, encode_corpus, encode_texts, shard_bounds
from hybrid_ir.retrieval.index import IndexConfig, build_index, faiss_has_gpu
from hybrid_ir.utils.errors import ConfigError
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


# -------------------------------------------------- encode_corpus: chunk by chunk, into a memory map

CORPUS = ["a b", "c", "a b", "d e", "f", "c", "g", "h i", "j", "a b", "k", "l m", "n"]


@pytest.mark.parametrize("chunk_size", [1, 3, 100])
def test_encode_corpus_writes_chunks_into_a_memmap_equal_to_encode_texts(
    tmp_path: Path, chunk_size: int
) -> None:
    enc = BagOfWordsEncoder()
    path = tmp_path / "emb" / "passages.npy"
    emb = encode_corpus(enc, CORPUS, "passage", batch_size=2, chunk_size=chunk_size, path=path)
    expected = encode_texts(BagOfWordsEncoder(), CORPUS, "passage", batch_size=2).numpy()
    assert isinstance(emb, np.memmap) and emb.shape == (len(CORPUS), enc.dim)
    np.testing.assert_array_equal(emb, expected)
    np.testing.assert_array_equal(np.load(path), expected)  # a plain .npy file, readable later
    unique = list(dict.fromkeys(CORPUS))
    assert [t for _, call in enc.calls for t in call] == unique  # each distinct text once
    assert max(len(call) for _, call in enc.calls) == min(chunk_size, len(unique))


def test_encode_corpus_in_memory_and_float16(tmp_path: Path) -> None:
    texts = list(dict.fromkeys(CORPUS))
    in_memory = encode_corpus(BagOfWordsEncoder(), texts, "query", batch_size=4, chunk_size=4)
    assert not isinstance(in_memory, np.memmap) and in_memory.dtype == np.float32
    half = encode_corpus(
        BagOfWordsEncoder(),
        texts,
        "query",
        batch_size=4,
        chunk_size=4,
        path=tmp_path / "q.npy",
        dtype="float16",
    )
    assert half.dtype == np.float16
    np.testing.assert_allclose(half.astype(np.float32), in_memory, atol=1e-3)
    assert list((tmp_path).glob("*.npy")) == [tmp_path / "q.npy"]  # no second file without repeats


def _corpus_worker(rank: int, port: int, out_dir: str) -> None:
    with gloo_group(rank, port, WORLD):
        enc = BagOfWordsEncoder()
        emb = encode_corpus(enc, CORPUS, "passage", batch_size=2, chunk_size=2, path=Path(out_dir) / "p.npy")
        torch.save(
            (np.asarray(emb), [t for _, call in enc.calls for t in call]), Path(out_dir) / f"r{rank}.pt"
        )


def test_ddp_encode_corpus_shards_rounds_and_every_rank_gets_all_rows(tmp_path: Path) -> None:
    spawn(_corpus_worker, str(tmp_path), nprocs=WORLD)
    expected = BagOfWordsEncoder().encode(CORPUS, "passage").numpy()
    unique = list(dict.fromkeys(CORPUS))
    encoded = []
    for r in range(WORLD):
        emb, texts = torch.load(tmp_path / f"r{r}.pt", weights_only=False)
        np.testing.assert_allclose(emb, expected, atol=1e-6)
        encoded.append(texts)
        start, stop = shard_bounds(len(unique), r, WORLD)
        assert texts == unique[start:stop]  # rank r encodes only its shard
    assert (tmp_path / "p.npy").exists() and (tmp_path / "p.rank1.npy").exists()


# -------------------------------------------------- faiss


def test_the_flat_index_matches_torch_topk() -> None:
    gen = torch.Generator().manual_seed(0)
    queries, docs = torch.randn(40, 16, generator=gen), torch.randn(150, 16, generator=gen)
    index = build_index(docs, IndexConfig(kind="flat", device="cpu"))
    assert (index.kind, index.device, index.n) == ("flat", "cpu", 150)
    chunks = list(index.search_chunks(queries, 12, chunk_size=16))
    assert [start for start, _, _ in chunks] == [0, 16, 32]
    scores = np.concatenate([s for _, s, _ in chunks])
    indices = np.concatenate([i for _, _, i in chunks])
    expected = (queries @ docs.T).topk(12, dim=1)
    assert indices.dtype == np.int64 and indices.shape == (40, 12)
    assert np.array_equal(indices, expected.indices.numpy())
    np.testing.assert_allclose(scores, expected.values.numpy(), atol=1e-4)


def test_a_search_clips_k_to_the_collection_and_checks_it() -> None:
    index = build_index(torch.randn(5, 8), IndexConfig(kind="flat", device="cpu"))
    (_, _, indices), *_ = index.search_chunks(torch.randn(3, 8), 50)
    assert indices.shape == (3, 5) and sorted(indices[0].tolist()) == list(range(5))
    with pytest.raises(ValueError, match="k must be >= 1"):
        next(index.search_chunks(torch.randn(3, 8), 0))


def _clustered(n_docs: int, dim: int = 32, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Easy data: unit documents around 40 well-separated centres and queries next to some documents."""
    rng = np.random.default_rng(seed)
    centres = rng.standard_normal((40, dim))
    docs = centres[rng.integers(0, 40, n_docs)] + 0.3 * rng.standard_normal((n_docs, dim))
    docs /= np.linalg.norm(docs, axis=1, keepdims=True)
    queries = docs[rng.choice(n_docs, 50, replace=False)] + 0.05 * rng.standard_normal((50, dim))
    return queries.astype(np.float32), docs.astype(np.float32)


@pytest.mark.parametrize(
    "cfg",
    [
        IndexConfig(kind="ivf", nlist=16, nprobe=16, device="cpu"),
        IndexConfig(kind="hnsw", hnsw_m=16, ef_search=64, device="cpu"),
    ],
    ids=["ivf", "hnsw"],
)
def test_approximate_indexes_agree_with_exact_search_on_easy_data(cfg: IndexConfig) -> None:
    queries, docs = _clustered(2000)
    exact = build_index(docs, IndexConfig(kind="flat", device="cpu"))
    approx = build_index(docs, cfg)
    assert approx.kind == cfg.kind and approx.device == "cpu"
    (_, _, want), *_ = exact.search_chunks(queries, 10)
    got = np.concatenate([ids for _, _, ids in approx.search_chunks(queries, 10, chunk_size=7)])
    assert got.shape == want.shape
    assert (got[:, 0] == want[:, 0]).all()  # the nearest document
    overlap = np.mean([len(set(a) & set(b)) / 10 for a, b in zip(got, want, strict=True)])
    assert overlap >= 0.95


@pytest.mark.skipif(not faiss_has_gpu(), reason="needs faiss-gpu and a visible GPU")
@pytest.mark.parametrize("kind", ["flat", "ivf"])
def test_gpu_index_matches_the_cpu_one(kind: str) -> None:
    queries, docs = _clustered(2000)
    cfg = {"kind": kind, "nlist": 16, "nprobe": 16}
    cpu = build_index(docs, IndexConfig(**cfg, device="cpu"))
    gpu = build_index(docs, IndexConfig(**cfg, device="gpu"))
    assert gpu.device == "gpu"
    (_, _, want), *_ = cpu.search_chunks(queries, 10)
    (_, _, got), *_ = gpu.search_chunks(queries, 10)
    assert (got[:, 0] == want[:, 0]).all()
    assert np.mean([len(set(a) & set(b)) / 10 for a, b in zip(got, want, strict=True)]) >= 0.95


def test_auto_index_is_exact_up_to_exact_max_and_ivf_above() -> None:
    queries, docs = _clustered(500)
    assert build_index(docs, IndexConfig(exact_max=500, device="cpu")).kind == "flat"
    ivf = build_index(docs, IndexConfig(exact_max=499, device="cpu"))
    assert ivf.kind == "ivf" and ivf.index.nlist == min(int(4 * 500**0.5), 500 // 39)
    chunks = list(ivf.search_chunks(queries, 5, chunk_size=20))
    assert [start for start, _, _ in chunks] == [0, 20, 40] and sum(len(ids) for *_, ids in chunks) == 50


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"kind": "pq"}, "mine.index.kind='pq'"),
        ({"device": "tpu"}, "mine.index.device='tpu'"),
        ({"kind": "hnsw", "device": "gpu"}, "no GPU HNSW"),
        ({"nprobe": 0}, "mine.index.nprobe=0"),
        ({"nlist": -1}, "mine.index.nlist=-1"),
    ],
)
def test_index_config_errors_name_the_key(change: dict, message: str) -> None:
    with pytest.raises(ConfigError, match=message.replace("(", r"\(")):
        IndexConfig(**change).check("mine.index")


# -------------------------------------------------- MIRACL
