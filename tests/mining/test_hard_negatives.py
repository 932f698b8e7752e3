"""The hard-negative miner on a hand-built corpus whose nearest non-relevant passages are known."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from hybrid_ir.data.formats.jsonl import load_jsonl_corpus
from hybrid_ir.data.formats.lareqa_files import load_lareqa_corpus
from hybrid_ir.mining import hard_negatives as mining
from hybrid_ir.mining.hard_negatives import (
    EncodeSettings,
    MineSettings,
    build_pool,
    mine_corpus,
    ranked_candidates,
    summary_lines,
    write_corpus_mined,
    write_mined_jsonl,
)
from hybrid_ir.retrieval.index import IndexConfig, VectorIndex
from hybrid_ir.utils.errors import ConfigError
from tests.helpers.fakes import BagOfWordsEncoder
from tests.helpers.jsonl import write_jsonl
from tests.helpers.lareqa import write_lareqa, write_toy_lareqa

FILLER = [
    "river stone bridge",
    "cloud rain thunder",
    "piano violin concert",
    "engine wheel brake",
    "desert sand camel",
    "winter snow ice",
    "market price trade",
    "forest wolf den",
    "ocean wave surf",
    "castle king crown",
    "garden rose tulip",
    "planet orbit moon",
]


def records() -> list[dict]:
    """en and de records. For question ``a`` ("apple orchard harvest"): ``c`` shares a's passage_id and
    ``d`` has a's exact passage text (both must never be mined for ``a``); ``b`` is the nearest passage
    outside a's group; the filler passages share no word with a's question."""
    en = {
        "a": ("apple orchard harvest", "apple orchard harvest season"),
        "b": ("apple harvest festival", "apple orchard harvest festival"),
        "c": ("orchard work", "apple orchard harvest season work"),
        "d": ("same passage", "apple orchard harvest season"),
    }
    out = []
    for i, text in enumerate(FILLER):
        en[f"f{i:02d}"] = (f"question {text}", f"{text} story")
    for parallel_id, (question, passage) in en.items():
        extra = {"passage_id": "P-a"} if parallel_id in ("a", "c") else {}
        out.append(
            {
                "id": parallel_id,
                "lang": "en",
                "question": question,
                "passage": passage,
                "keep": parallel_id,
                **extra,
            }
        )
        # a "translation": the same words with a language marker, so translations are close neighbours
        out.append(
            {
                "id": parallel_id,
                "lang": "de",
                "question": f"{question} de",
                "passage": f"{passage} de",
                **extra,
            }
        )
    return out


@pytest.fixture
def corpus(tmp_path: Path):
    return load_jsonl_corpus(write_jsonl(tmp_path / "pairs.jsonl", records()), "toy")


def brute_force_ranks(corpus, lang_pool: list[str], parallel_id: str, lang: str) -> list[str]:
    """The representative ids by rank (1 first) for ``(parallel_id, lang)``, from a full torch ranking."""
    enc = BagOfWordsEncoder()
    groups = corpus.group
    pairs = [corpus.pairs[x][p] for x in lang_pool for p in sorted(corpus.pairs[x])]
    pool = build_pool(pairs, groups)
    q = enc.encode([corpus.pairs[lang][parallel_id].question], "query")
    scores = (q @ enc.encode(pool.texts, "passage").T)[0]
    order = torch.sort(scores, descending=True, stable=True).indices.numpy()
    ranked = ranked_candidates(order, pool.groups, groups[parallel_id])
    return [pool.ids[i] for i in ranked]


def test_the_loader_groups_shared_passage_ids_and_identical_texts(corpus) -> None:
    # the miner excludes the positive's group as the loader forms it
    assert (
        corpus.group["a"] == corpus.group["c"] == corpus.group["d"]
    )  # passage_id (c) and identical text (d)
    assert len({corpus.group["a"], corpus.group["b"], corpus.group["f00"]}) == 3


@pytest.mark.parametrize("pool", ["language", "all"])
def test_the_nearest_passage_outside_the_positive_group_is_mined(corpus, pool: str) -> None:
    settings = MineSettings(pool=pool, rank_min=1, rank_max=1, num_negatives=1)
    result = mine_corpus(BagOfWordsEncoder(), corpus, settings, IndexConfig(kind="flat", device="cpu"))
    assert result.negatives[("a", "en")] == ("b",)
    assert result.negatives[("a", "de")] == ("b",)
    # b's question shares "apple harvest" only with a's group: that group (seen as a or c) is its rank 1
    assert result.negatives[("b", "en")] in (("a",), ("c",))


@pytest.mark.parametrize("pool", ["language", "all"])
def test_the_positive_group_is_never_mined_and_the_window_is_respected(corpus, pool: str) -> None:
    settings = MineSettings(pool=pool, rank_min=3, rank_max=6, num_negatives=2, seed=3)
    result = mine_corpus(BagOfWordsEncoder(), corpus, settings, IndexConfig(kind="flat", device="cpu"))
    groups = corpus.group
    assert len(result.negatives) == 2 * len(corpus.parallel_ids)
    for (parallel_id, lang), ids in result.negatives.items():
        assert len(ids) == 2 and len(set(ids)) == 2
        assert all(groups[n] != groups[parallel_id] for n in ids), (parallel_id, lang, ids)
        ranked = brute_force_ranks(
            corpus, [lang] if pool == "language" else corpus.languages, parallel_id, lang
        )
        window = ranked[2:6]
        assert set(ids) <= set(window), (parallel_id, lang, ids, window)
        assert list(ids) == [n for n in window if n in ids]  # listed in rank order
    for lang in ("en", "de"):
        assert not {"c", "d"} & set(result.negatives[("a", lang)])
    stats = result.stats["en"]
    assert (stats.records, stats.negatives, stats.short, stats.empty) == (16, 32, 0, 0)


def test_sampling_is_seeded(corpus) -> None:
    def run(seed: int) -> dict:
        settings = MineSettings(rank_min=2, rank_max=12, num_negatives=3, seed=seed)
        return mine_corpus(
            BagOfWordsEncoder(), corpus, settings, IndexConfig(kind="flat", device="cpu")
        ).negatives

    first = run(0)
    assert run(0) == first
    assert run(1) != first


def test_a_short_window_gives_what_it_has_and_says_so(corpus) -> None:
    # 15 distinct passages per language (d repeats a's): a's group (a, c, d) and 13 others, so ranks 10..13 exist
    settings = MineSettings(rank_min=10, rank_max=100, num_negatives=5)
    result = mine_corpus(BagOfWordsEncoder(), corpus, settings, IndexConfig(kind="flat", device="cpu"))
    assert len(result.negatives[("a", "en")]) == 4
    assert len(result.negatives[("b", "en")]) == 4  # b's group is alone; a's group counts once
    assert result.stats["en"].short == 16 and result.stats["en"].empty == 0
    assert result.top_k["en"] == 15  # (rank_max + 1) * 2 passages of a's group, clipped to the pool


def test_approximate_index_mines_the_same_nearest_negative(corpus) -> None:
    settings = MineSettings(rank_min=1, rank_max=1, num_negatives=1)
    result = mine_corpus(BagOfWordsEncoder(), corpus, settings, IndexConfig(kind="hnsw", device="cpu"))
    assert result.index == {"en": "hnsw on cpu", "de": "hnsw on cpu"}
    assert result.negatives[("a", "en")] == ("b",)


def test_search_calls_are_bounded_for_any_top_k(corpus, monkeypatch: pytest.MonkeyPatch) -> None:
    settings = MineSettings(rank_min=1, rank_max=4, num_negatives=2)
    unbounded = mine_corpus(BagOfWordsEncoder(), corpus, settings, IndexConfig(device="cpu")).negatives
    sizes: list[tuple[int, int]] = []
    search_chunks = VectorIndex.search_chunks

    def spy(self, queries, k, chunk_size=4096):
        for start, scores, ids in search_chunks(self, queries, k, chunk_size):
            sizes.append(ids.shape)
            yield start, scores, ids

    monkeypatch.setattr(VectorIndex, "search_chunks", spy)
    monkeypatch.setattr(mining, "MAX_RESULTS_PER_SEARCH", 24)
    bounded = mine_corpus(BagOfWordsEncoder(), corpus, settings, IndexConfig(device="cpu")).negatives
    assert bounded == unbounded
    assert all(rows * k <= 24 for rows, k in sizes) and sum(rows for rows, _ in sizes) == 32


def test_embedding_files_are_removed_unless_kept(corpus, tmp_path: Path) -> None:
    settings = MineSettings(rank_min=1, rank_max=3, num_negatives=1)
    cache = tmp_path / "embeddings"
    encoding = EncodeSettings(batch_size=4, chunk_size=5, cache_dir=cache, query_chunk=3)
    chunked = mine_corpus(BagOfWordsEncoder(), corpus, settings, IndexConfig(device="cpu"), encoding)
    assert not cache.exists()
    kept = EncodeSettings(batch_size=4, chunk_size=5, cache_dir=cache, keep_embeddings=True)
    again = mine_corpus(BagOfWordsEncoder(), corpus, settings, IndexConfig(device="cpu"), kept)
    assert sorted(p.name for p in cache.iterdir()) == [
        "de.passages.npy",
        "de.queries.npy",
        "en.passages.npy",
        "en.queries.npy",
    ]
    assert np.load(cache / "en.passages.npy").shape == (15, BagOfWordsEncoder.dim)  # a and d: one text
    assert again.negatives == chunked.negatives


def test_written_file_keeps_every_field_and_reads_back(corpus, tmp_path: Path) -> None:
    source = Path(corpus.source)
    lines = source.read_text(encoding="utf-8").splitlines()
    lines[0] = json.dumps({**json.loads(lines[0]), "negative_ids": ["f00"]})  # an old list is replaced
    write_jsonl(source, [json.loads(line) for line in lines])
    settings = MineSettings(rank_min=1, rank_max=4, num_negatives=2)
    result = mine_corpus(BagOfWordsEncoder(), corpus, settings, IndexConfig(device="cpu"))
    target = tmp_path / "out" / "mined.jsonl"
    counts = write_mined_jsonl(source, target, result.negatives)
    assert counts == {"records": 32, "mined": 32, "replaced": 1}
    old = [json.loads(line) for line in source.read_text(encoding="utf-8").splitlines()]
    new = [json.loads(line) for line in target.read_text(encoding="utf-8").splitlines()]
    for before, after in zip(old, new, strict=True):
        assert {k: v for k, v in after.items() if k != "negative_ids"} == {
            k: v for k, v in before.items() if k != "negative_ids"
        }
        assert after["negative_ids"] == list(result.negatives[(after["id"], after["lang"])])
    back = load_jsonl_corpus(target, "toy")
    assert back.negative_ids["en"]["a"] == result.negatives[("a", "en")]


def test_a_lareqa_corpus_is_written_with_its_records_groups_and_negatives(tmp_path: Path) -> None:
    corpus = load_lareqa_corpus(write_toy_lareqa(tmp_path / "data"), "toy", ["de", "en", "es"])
    settings = MineSettings(rank_min=1, rank_max=4, num_negatives=2)
    result = mine_corpus(BagOfWordsEncoder(), corpus, settings, IndexConfig(device="cpu"))
    target = tmp_path / "out" / "toy.mined.jsonl"
    counts = write_corpus_mined(corpus, target, result.negatives)
    assert counts == {"records": 70, "mined": 70, "replaced": 0, "merged_groups": 0}
    back = load_jsonl_corpus(target, "toy")
    assert back.group == corpus.group and back.pairs == corpus.pairs
    assert {
        (parallel_id, lang): ids
        for lang, by_id in back.negative_ids.items()
        for parallel_id, ids in by_id.items()
    } == {key: ids for key, ids in result.negatives.items() if ids}
    lines = summary_lines(result, settings, counts, Path(corpus.source), target)
    assert not any("WARNING" in line for line in lines)


def test_texts_identical_across_languages_merge_groups_and_the_summary_warns(tmp_path: Path) -> None:
    """The LAReQA loader joins identical answer texts within a language only, the JSONL loader in any language:
    a text shared by q1 (en) and q2 (de) is one group in the written file, two in the corpus."""
    for lang, qid in (("en", "q1"), ("de", "q2")):
        write_lareqa(tmp_path, "toy", lang, [(["Paris.", f"Other {lang}."], [(qid, 0), ("q3", 1)])])
    corpus = load_lareqa_corpus(tmp_path, "toy", ["de", "en"])
    assert corpus.group["q1"] != corpus.group["q2"]
    target = tmp_path / "toy.mined.jsonl"
    counts = write_corpus_mined(corpus, target, {})
    assert counts == {"records": 4, "mined": 0, "replaced": 0, "merged_groups": 1}
    result = mining.MineResult({}, {}, {}, {})
    lines = summary_lines(result, MineSettings(), counts, Path(corpus.source), target)
    assert any(
        "WARNING: identical passage texts join 1 of the dataset's answer groups" in line for line in lines
    )


@pytest.mark.parametrize(
    ("settings", "message"),
    [
        (MineSettings(pool="each"), "mine.pool='each'"),
        (MineSettings(rank_min=0), "mine.rank_min=0"),
        (MineSettings(rank_min=20, rank_max=10), "mine.rank_max=10 is below mine.rank_min=20"),
        (MineSettings(num_negatives=0), "mine.num_negatives=0"),
        (MineSettings(top_k=50), "mine.top_k=50"),
    ],
)
def test_settings_errors_name_the_key(settings: MineSettings, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        settings.check("mine")
