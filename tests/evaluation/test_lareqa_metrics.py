"""Tests of hybrid_ir.evaluation.lareqa_metrics against a plain brute-force reference that uses ir_measures."""

from __future__ import annotations

import json
import random
from collections.abc import Sequence

import ir_measures
import numpy as np
import pytest
import torch
from ir_measures import AP

from hybrid_ir.data.corpus import Candidate, Query, RetrievalBenchmark
from hybrid_ir.evaluation.lareqa_metrics import LareqaResult, evaluate_lareqa
from hybrid_ir.utils.errors import DataError

LANGS = ["de", "en", "zh"]
# where each qid's answer exists; q4 is answered only in English, q3 not in Chinese.
EXISTS = {"q0": LANGS, "q1": LANGS, "q2": LANGS, "q3": ["de", "en"], "q4": ["en"], "q5": ["en", "zh"]}
MAP_K, SHARE_K = 5, 4


def make_bench(
    exists: dict[str, list[str]], langs: list[str], n_filler: int, seed: int
) -> RetrievalBenchmark:
    """Answer sentences plus fillers per language, shuffled so that languages are interleaved in the pool.
    Queries: one per (qid, language where it exists), plus a German query for q4 (no German answer) and
    a query whose qid has no answer at all."""
    rng = random.Random(seed)
    pool = [(lang, f"answer {qid}") for qid, where in exists.items() for lang in where]
    pool += [(lang, f"filler {i}") for lang in langs for i in range(n_filler)]
    rng.shuffle(pool)
    candidates = [Candidate(lang, text) for lang, text in pool]
    relevant: dict[str, dict[str, int]] = {}
    for index, (lang, text) in enumerate(pool):
        if text.startswith("answer "):
            relevant.setdefault(text.split()[1], {})[lang] = index
    queries = [Query(qid, lang, f"question {qid}") for qid, where in exists.items() for lang in where]
    queries += [Query("q4", langs[0], "question q4"), Query("unanswered", langs[-1], "?")]
    return RetrievalBenchmark("synthetic", langs, queries, candidates, relevant)


def integer_embeddings(n: int, seed: int) -> torch.Tensor:
    """Entries in {-1, 0, 1}: dot products are small exact integers, so scores tie often."""
    return torch.from_numpy(np.random.default_rng(seed).integers(-1, 2, size=(n, 4))).float()


def _mean(values: Sequence[float]) -> float | None:
    return sum(values) / len(values) if values else None


def reference(q: np.ndarray, c: np.ndarray, bench: RetrievalBenchmark) -> dict:
    """Brute force: one trec run per (query, setting), AP from ir_measures, averages by plain loops.
    Docnos are in reverse index order so trec_eval's ties (docno descending) mean lower index first."""
    langs, cands = bench.languages, bench.candidates
    n_cand = len(cands)

    def docno(j: int) -> str:
        return f"c{n_cand - 1 - j:04d}"

    run: dict[str, dict[str, float]] = {}
    qrels: dict[str, dict[str, int]] = {}
    instances = []  # (key, query index, setting, target)
    distance: dict[int, float | None] = {}
    share: dict[int, float] = {}
    for i, query in enumerate(bench.queries):
        rel = bench.relevant.get(query.qid, {})
        scores = [float(np.dot(q[i], c[j])) for j in range(n_cand)]
        for lang in langs:
            if lang in rel:
                key = f"{i}/{lang}"
                run[key] = {docno(j): scores[j] for j in range(n_cand) if cands[j].lang == lang}
                qrels[key] = {docno(rel[lang]): 1}
                instances.append((key, i, "mono" if lang == query.lang else "cross", lang))
        if rel:
            key = f"{i}/multi"
            run[key] = {docno(j): scores[j] for j in range(n_cand)}
            qrels[key] = {docno(j): 1 for j in rel.values()}
            instances.append((key, i, "multi", "multi"))
            order = sorted(range(n_cand), key=lambda j, s=scores: (-s[j], j))
            ranks = [order.index(j) + 1 for j in rel.values()]
            distance[i] = max(ranks) - min(ranks) if len(ranks) > 1 else None
            share[i] = sum(cands[j].lang == query.lang for j in order[:SHARE_K]) / SHARE_K
    measured = ir_measures.iter_calc([AP, AP @ MAP_K], qrels, run)
    ap = {(m.query_id, str(m.measure)): m.value for m in measured}

    lang_of = {i: q.lang for i, q in enumerate(bench.queries)}
    out: dict = {"per_query": {}}
    for key, i, setting, target in instances:
        query = bench.queries[i]
        rd = distance[i] if setting == "multi" else None
        out["per_query"][(query.qid, query.lang, setting, target)] = (
            ap[(key, "AP")],
            ap[(key, f"AP@{MAP_K}")],
            rd,
        )
    for measure, tag in (("AP", "map"), (f"AP@{MAP_K}", f"map_at{MAP_K}")):
        matrix = [
            [
                _mean([ap[(k, measure)] for k, i, _, t in instances if lang_of[i] == x and t == y])
                for y in langs
            ]
            for x in langs
        ]
        multi = {
            x: _mean([ap[(k, measure)] for k, i, s, _ in instances if s == "multi" and lang_of[i] == x])
            for x in langs
        }
        out[f"{tag}_matrix"] = matrix
        out[f"{tag}_multi_by_lang"] = multi
        out[f"{tag}_mono"] = _mean([matrix[x][x] for x in range(len(langs)) if matrix[x][x] is not None])
        off = [matrix[x][y] for x in range(len(langs)) for y in range(len(langs)) if x != y]
        out[f"{tag}_cross"] = _mean([v for v in off if v is not None])
        out[f"{tag}_multi"] = _mean([v for v in multi.values() if v is not None])
        for setting in ("mono", "cross", "multi"):
            values = [ap[(k, measure)] for k, _, s, _ in instances if s == setting]
            out[f"{tag}_{setting}_micro"] = _mean(values)
    rd_by_lang = {
        x: _mean([d for i, d in distance.items() if lang_of[i] == x and d is not None]) for x in langs
    }
    out["rank_distance_by_lang"] = {x: v for x, v in rd_by_lang.items() if v is not None}
    out["rank_distance"] = _mean(list(out["rank_distance_by_lang"].values()))
    out["rank_distance_micro"] = _mean([d for d in distance.values() if d is not None])
    share_by_lang = {x: _mean([s for i, s in share.items() if lang_of[i] == x]) for x in langs}
    out["lang_share"] = {x: v for x, v in share_by_lang.items() if v is not None}
    out["pool_share"] = {x: sum(cand.lang == x for cand in cands) / n_cand for x in langs}
    matrix = out["map_matrix"]
    gaps = {}
    for x, row in enumerate(matrix):
        cross = [v for y, v in enumerate(row) if y != x and v is not None]
        if row[x] is not None and cross:
            gaps[langs[x]] = row[x] - sum(cross) / len(cross)
    out["mono_cross_gap"] = gaps
    return out


def assert_matrix_close(ours: list[list[float | None]], expected: list[list[float | None]]) -> None:
    assert len(ours) == len(expected)
    for row, expected_row in zip(ours, expected, strict=True):
        assert [v is None for v in row] == [v is None for v in expected_row]
        for value, want in zip(row, expected_row, strict=True):
            if want is not None:
                assert value == pytest.approx(want, abs=1e-9)


@pytest.fixture(scope="module")
def small() -> tuple[LareqaResult, dict, RetrievalBenchmark]:
    bench = make_bench(EXISTS, LANGS, n_filler=12, seed=3)
    q = integer_embeddings(len(bench.queries), seed=1)
    c = integer_embeddings(len(bench.candidates), seed=2)
    result = evaluate_lareqa(q, c, bench, map_k=MAP_K, share_k=SHARE_K, query_chunk=4)
    return result, reference(q.numpy(), c.numpy(), bench), bench


def test_fixture_has_ties(small: tuple[LareqaResult, dict, RetrievalBenchmark]) -> None:
    _, _, bench = small
    q = integer_embeddings(len(bench.queries), seed=1)
    c = integer_embeddings(len(bench.candidates), seed=2)
    scores = q @ c.T
    tied = [
        i
        for i, query in enumerate(bench.queries)
        for j in bench.relevant.get(query.qid, {}).values()
        if int((scores[i] == scores[i, j]).sum()) > 1
    ]
    assert len(tied) > 5


def test_matrices_match_reference(small: tuple[LareqaResult, dict, RetrievalBenchmark]) -> None:
    result, ref, _ = small
    assert result.languages == LANGS
    assert_matrix_close(result.pair_map, ref["map_matrix"])
    assert_matrix_close(result.pair_map_at_k, ref[f"map_at{MAP_K}_matrix"])
    de, en, zh = 0, 1, 2  # query counts per pair, from EXISTS by hand
    assert result.pair_count[de][de] == 4  # q0, q1, q2, q3
    assert result.pair_count[de][en] == 5  # q0-q3, plus the German q4 query (English answer only)
    assert result.pair_count[zh][de] == 3  # q0-q2 (q5 has no German answer)
    assert result.pair_count[en][en] == 6
    for lang, value in ref["map_multi_by_lang"].items():
        assert result.multi_map[lang] == pytest.approx(value, abs=1e-9)
    for lang, value in ref[f"map_at{MAP_K}_multi_by_lang"].items():
        assert result.multi_map_at_k[lang] == pytest.approx(value, abs=1e-9)


def test_scalars_match_reference(small: tuple[LareqaResult, dict, RetrievalBenchmark]) -> None:
    result, ref, bench = small
    scalars = result.scalars()
    settings = [f"{s}{m}" for s in ("mono", "cross", "multi") for m in ("", "_micro")]
    names = [f"{tag}_{setting}" for tag in ("map", f"map_at{MAP_K}") for setting in settings]
    names += ["rank_distance", "rank_distance_micro"]
    for name in names:
        assert scalars[name] == pytest.approx(ref[name], abs=1e-9), name
    share_macro = sum(ref["lang_share"].values()) / len(ref["lang_share"])
    assert scalars[f"lang_share_at{SHARE_K}"] == pytest.approx(share_macro)
    ratios = [ref["lang_share"][x] / ref["pool_share"][x] for x in ref["lang_share"]]
    assert scalars[f"lang_share_ratio_at{SHARE_K}"] == pytest.approx(sum(ratios) / len(ratios))
    gap = ref["mono_cross_gap"]
    assert scalars["mono_cross_gap"] == pytest.approx(sum(gap.values()) / len(gap))
    assert scalars["n_queries"] == len(bench.queries)
    assert scalars["map_mono"] != scalars["map_mono_micro"]  # the two averages do differ here


def test_bias_values_match_reference(small: tuple[LareqaResult, dict, RetrievalBenchmark]) -> None:
    result, ref, _ = small
    assert result.rank_distance == pytest.approx(ref["rank_distance_by_lang"])
    assert result.lang_share == pytest.approx(ref["lang_share"])
    assert result.pool_share == pytest.approx(ref["pool_share"])
    assert result.mono_cross_gap == pytest.approx(ref["mono_cross_gap"])


def test_per_query_records_match_reference(small: tuple[LareqaResult, dict, RetrievalBenchmark]) -> None:
    result, ref, _ = small
    ours = {
        (r.qid, r.lang, r.setting, r.target): (r.ap, r.ap_at_k, r.rank_distance) for r in result.per_query
    }
    assert len(ours) == len(result.per_query)
    assert set(ours) == set(ref["per_query"])
    for key, (ap, ap_k, rd) in ref["per_query"].items():
        assert ours[key][0] == pytest.approx(ap, abs=1e-9)
        assert ours[key][1] == pytest.approx(ap_k, abs=1e-9)
        assert ours[key][2] == rd
    # q4 is answered only in English: its English query has a single multilingual relevant item.
    assert ours[("q4", "en", "multi", "multi")][2] is None
    assert not any(r.qid == "unanswered" for r in result.per_query)


def test_to_json_round_trip(small: tuple[LareqaResult, dict, RetrievalBenchmark]) -> None:
    result, _, _ = small
    data = json.loads(json.dumps(result.to_json(), allow_nan=False))
    assert data["languages"] == LANGS
    assert data["scalars"] == pytest.approx(result.scalars())
    assert len(data["per_query"]["qid"]) == len(result.per_query)
    assert "per_query" not in result.to_json(per_query=False)


def test_chunking_gives_identical_results() -> None:
    langs = ["ar", "de", "en", "hi"]
    rng = random.Random(5)
    exists = {f"q{i}": sorted(rng.sample(langs, rng.randint(1, 4))) for i in range(60)}
    bench = make_bench(exists, langs, n_filler=470, seed=11)
    assert len(bench.candidates) > 1900
    gen = torch.Generator().manual_seed(0)
    q = torch.nn.functional.normalize(torch.randn(len(bench.queries), 16, generator=gen), dim=1)
    c = torch.nn.functional.normalize(torch.randn(len(bench.candidates), 16, generator=gen), dim=1)
    small_chunks = evaluate_lareqa(q, c, bench, query_chunk=7).to_json()
    one_chunk = evaluate_lareqa(q, c, bench, query_chunk=10000).to_json()
    assert small_chunks == one_chunk
    assert small_chunks["scalars"]["map_multi"] > 0


def test_input_errors() -> None:
    bench = make_bench(EXISTS, LANGS, n_filler=2, seed=0)
    q = integer_embeddings(len(bench.queries), seed=1)
    c = integer_embeddings(len(bench.candidates), seed=2)
    with pytest.raises(ValueError, match="embeddings"):
        evaluate_lareqa(q[:-1], c, bench)
    with pytest.raises(ValueError, match="share_k"):
        evaluate_lareqa(q, c, bench, share_k=len(bench.candidates) + 1)
    wrong_lang = bench.relevant["q0"]["en"]
    bench.relevant["q0"]["de"] = wrong_lang
    with pytest.raises(DataError, match="not a de candidate"):
        evaluate_lareqa(q, c, bench)
