"""Tests of hybrid_ir.evaluation.metrics: hand-computed cases and agreement with trec_eval."""

from __future__ import annotations

import math

import ir_measures
import numpy as np
import pytest
import pytrec_eval
import torch
from ir_measures import AP, R, nDCG

from hybrid_ir.evaluation.metrics import (
    average_precision,
    evaluate_run,
    full_ranking,
    mean_over_queries,
    ndcg_at_k,
    parse_measure,
    ranks_of_relevant,
    recall_at_k,
    trec_order,
)

INF = math.inf

# -------------------------------------------------- ranks and ties (hand-computed)


def test_ranks_with_ties_lower_index_first() -> None:
    # scores:        0    1    2    3    4
    scores = torch.tensor([0.5, 0.9, 0.5, 0.1, 0.5])
    # candidate 1 is first; the three 0.5s follow in index order 0, 2, 4; candidate 3 is last.
    ranks = ranks_of_relevant(scores, torch.tensor([0, 2, 4, 3, -1]))
    assert ranks.tolist() == [2.0, 3.0, 4.0, 5.0, INF]


def test_ranks_within_subset() -> None:
    scores = torch.tensor([[0.5, 0.9, 0.5, 0.1, 0.5], [0.1, 0.2, 0.3, 0.4, 0.5]])
    subset = torch.tensor([True, False, True, True, True])
    ranks = ranks_of_relevant(scores, torch.tensor([[0, 4], [3, -1]]), subset)
    # row 0 without candidate 1: 0 (tie, lower index), 2, 4, 3 -> candidate 4 is third.
    # row 1 without candidate 1: order 4, 3, 2, 0 -> candidate 3 is second.
    assert ranks.tolist() == [[1.0, 3.0], [2.0, INF]]


def test_ranks_per_query_subset_and_errors() -> None:
    scores = torch.tensor([[3.0, 2.0, 1.0], [3.0, 2.0, 1.0]])
    subset = torch.tensor([[True, True, True], [False, True, True]])
    assert ranks_of_relevant(scores, torch.tensor([[1], [1]]), subset).tolist() == [[2.0], [1.0]]
    with pytest.raises(ValueError, match="outside the subset"):
        ranks_of_relevant(scores, torch.tensor([[0], [0]]), subset)
    with pytest.raises(ValueError, match="out of range"):
        ranks_of_relevant(scores, torch.tensor([[3], [0]]))


def test_full_ranking_matches_ranks_on_heavy_ties() -> None:
    gen = torch.Generator().manual_seed(0)
    scores = torch.randint(0, 6, (20, 50), generator=gen).float()
    everyone = torch.arange(50).expand(20, 50)
    ranks = ranks_of_relevant(scores, everyone)
    assert sorted(ranks[0].tolist()) == [float(r) for r in range(1, 51)]
    order, all_ranks = full_ranking(scores)
    assert torch.equal(all_ranks.double(), ranks)
    assert torch.equal(ranks.gather(1, order), torch.arange(1, 51, dtype=torch.float64).expand(20, 50))


# -------------------------------------------------- metrics (hand-computed)


def test_average_precision_one_relevant() -> None:
    assert float(average_precision(torch.tensor([4.0]), 1)) == pytest.approx(0.25)
    assert float(average_precision(torch.tensor([4.0]), 1, k=3)) == 0.0
    assert float(average_precision(torch.tensor([INF]), 1)) == 0.0


def test_average_precision_several_relevant() -> None:
    # relevant at ranks 1, 3, 6: precisions 1/1, 2/3, 3/6.
    expected = (1 + 2 / 3 + 3 / 6) / 3
    assert float(average_precision(torch.tensor([6.0, 1.0, 3.0]), 3)) == pytest.approx(expected)
    # a fourth relevant item that is not ranked only enlarges the denominator.
    value = average_precision(torch.tensor([1.0, 3.0, 6.0, INF]), 4)
    assert float(value) == pytest.approx((1 + 2 / 3 + 3 / 6) / 4)
    # AP@5: the item at rank 6 drops out, the denominator stays 3 (trec_eval map_cut).
    assert float(average_precision(torch.tensor([1.0, 3.0, 6.0]), 3, k=5)) == pytest.approx((1 + 2 / 3) / 3)


def test_average_precision_batched_and_no_relevant() -> None:
    ranks = torch.tensor([[2.0, INF], [1.0, 2.0], [INF, INF]])
    values = average_precision(ranks, torch.tensor([1, 2, 0]))
    assert values.tolist() == pytest.approx([0.5, 1.0, 0.0])
    with pytest.raises(ValueError, match="n_relevant"):
        average_precision(torch.tensor([[1.0, 2.0]]), 1)


def test_ndcg_graded() -> None:
    # gains 3, 2, 1 at ranks 2, 1, 12: the third is below the cut-off.
    dcg = 3 / math.log2(3) + 2 / math.log2(2)
    idcg = 3 / math.log2(2) + 2 / math.log2(3) + 1 / math.log2(4)
    value = ndcg_at_k(torch.tensor([2.0, 1.0, 12.0]), torch.tensor([3.0, 2.0, 1.0]), 10)
    assert float(value) == pytest.approx(dcg / idcg)
    # the ideal ranking is cut at k too: with k=2 only gains 3 and 2 enter the ideal DCG.
    value = ndcg_at_k(torch.tensor([2.0, 1.0, 12.0]), torch.tensor([3.0, 2.0, 1.0]), 2)
    assert float(value) == pytest.approx(dcg / (3 + 2 / math.log2(3)))
    assert float(ndcg_at_k(torch.tensor([1.0, 2.0]), torch.tensor([0.0, 0.0]), 10)) == 0.0


def test_recall_at_100() -> None:
    ranks = torch.tensor([[5.0, 100.0, 101.0, INF], [INF, INF, INF, INF]])
    assert recall_at_k(ranks, torch.tensor([4, 0]), 100).tolist() == [0.5, 0.0]


def test_trec_order_and_measure_names() -> None:
    assert trec_order({"a": 1.0, "b": 2.0, "c": 1.0}) == ["b", "c", "a"]
    assert parse_measure("AP") == ("AP", None)
    assert parse_measure("nDCG@10") == ("nDCG", 10)
    for bad in ("nDCG", "P@5", "R@"):
        with pytest.raises(ValueError, match="unknown measure"):
            parse_measure(bad)


def test_evaluate_run_hand() -> None:
    run = {"q1": {"a": 0.9, "b": 0.8, "c": 0.8}, "extra": {"a": 1.0}}
    qrels = {"q1": {"a": 0, "b": 2, "c": 1, "z": 1}, "q2": {"a": 1}}
    values = evaluate_run(run, qrels, ["AP", "R@2", "nDCG@3"])
    assert set(values) == {"q1", "q2"}
    # ranking a, c, b (tie broken by docno descending): relevant c at 2, b at 3, z unranked.
    assert values["q1"]["AP"] == pytest.approx((1 / 2 + 2 / 3) / 3)
    assert values["q1"]["R@2"] == pytest.approx(1 / 3)
    ideal = 2 + 1 / math.log2(3) + 1 / math.log2(4)
    assert values["q1"]["nDCG@3"] == pytest.approx((1 / math.log2(3) + 2 / math.log2(4)) / ideal)
    assert values["q2"] == {"AP": 0.0, "R@2": 0.0, "nDCG@3": 0.0}
    means = mean_over_queries(values)
    assert means["AP"] == pytest.approx(values["q1"]["AP"] / 2)


# -------------------------------------------------- oracle: trec_eval (via pytrec_eval, ir_measures)

N_QUERIES, N_CAND = 200, 300


def _docno(index: int) -> str:
    """Docnos in reverse index order, so trec_eval's tie rule (docno descending) = lower index first."""
    return f"d{N_CAND - 1 - index:04d}"


@pytest.fixture(scope="module")
def random_run() -> tuple[torch.Tensor, dict[str, dict[str, int]]]:
    """Scores with many ties (two decimals) and graded qrels, some queries without relevant items."""
    rng = np.random.default_rng(7)
    scores = np.round(rng.random((N_QUERIES, N_CAND)), 2).astype(np.float32)
    qrels: dict[str, dict[str, int]] = {}
    for q in range(N_QUERIES):
        judged = rng.choice(N_CAND, size=int(rng.integers(1, 12)), replace=False)
        rels = rng.integers(0, 4, size=len(judged))
        if q % 25 == 0:
            rels[:] = 0
        qrels[f"q{q}"] = {_docno(int(d)): int(r) for d, r in zip(judged, rels, strict=True)}
    return torch.from_numpy(scores), qrels


def _as_run(scores: torch.Tensor, depth: int | None = None) -> dict[str, dict[str, float]]:
    order = full_ranking(scores)[0][:, :depth]
    return {f"q{q}": {_docno(int(d)): float(scores[q, d]) for d in order[q]} for q in range(scores.shape[0])}


def _padded_relevant(qrels: dict[str, dict[str, int]]) -> tuple[torch.Tensor, torch.Tensor]:
    """``[Nq, R]`` candidate indices of the rel > 0 judgements (-1 padded) and their gains."""
    width = max(len(judged) for judged in qrels.values())
    relevant = torch.full((N_QUERIES, width), -1, dtype=torch.long)
    gains = torch.zeros((N_QUERIES, width), dtype=torch.float64)
    for q in range(N_QUERIES):
        positive = [(doc, rel) for doc, rel in qrels[f"q{q}"].items() if rel > 0]
        for j, (doc, rel) in enumerate(positive):
            relevant[q, j] = N_CAND - 1 - int(doc[1:])
            gains[q, j] = rel
    return relevant, gains


def _trec(qrels: dict, run: dict) -> dict[str, dict[str, float]]:
    measures = {"map", "map_cut.20", "ndcg_cut.10", "recall.100"}
    return pytrec_eval.RelevanceEvaluator(qrels, measures).evaluate(run)


def _check_tensor_metrics(ranks: torch.Tensor, gains: torch.Tensor, reference: dict) -> None:
    n_rel = (gains > 0).sum(1)
    ours = {
        "map": average_precision(ranks, n_rel),
        "map_cut_20": average_precision(ranks, n_rel, k=20),
        "ndcg_cut_10": ndcg_at_k(ranks, gains, 10),
        "recall_100": recall_at_k(ranks, n_rel, 100),
    }
    for name, values in ours.items():
        expected = [reference[f"q{q}"][name] for q in range(N_QUERIES)]
        np.testing.assert_allclose(values.numpy(), expected, rtol=0, atol=1e-6, err_msg=name)


def test_oracle_full_ranking(random_run: tuple[torch.Tensor, dict]) -> None:
    scores, qrels = random_run
    relevant, gains = _padded_relevant(qrels)
    assert len(set(scores[0].tolist())) < N_CAND  # the run has ties
    reference = _trec(qrels, _as_run(scores))
    _check_tensor_metrics(ranks_of_relevant(scores, relevant), gains, reference)


def test_oracle_top_100(random_run: tuple[torch.Tensor, dict]) -> None:
    scores, qrels = random_run
    relevant, gains = _padded_relevant(qrels)
    ranks = ranks_of_relevant(scores, relevant)
    reference = _trec(qrels, _as_run(scores, depth=100))
    _check_tensor_metrics(torch.where(ranks <= 100, ranks, INF), gains, reference)


def test_oracle_evaluate_run_vs_ir_measures(random_run: tuple[torch.Tensor, dict]) -> None:
    scores, qrels = random_run
    # a run dict with its own docnos and order: evaluate_run must rank it as trec_eval does.
    run = {qid: dict(sorted(docs.items())) for qid, docs in _as_run(scores).items()}
    ours = evaluate_run(run, qrels, ["AP", "AP@20", "nDCG@10", "R@100"])
    measures = [AP, AP @ 20, nDCG @ 10, R @ 100]
    expected = {(m.query_id, str(m.measure)): m.value for m in ir_measures.iter_calc(measures, qrels, run)}
    assert len(expected) == 4 * N_QUERIES
    for (qid, name), value in expected.items():
        assert ours[qid][name] == pytest.approx(value, abs=1e-6), (qid, name)
    aggregate = ir_measures.calc_aggregate(measures, qrels, run)
    for measure, value in aggregate.items():
        assert mean_over_queries(ours)[str(measure)] == pytest.approx(value, abs=1e-6)


def test_ranks_with_no_candidates_are_unranked() -> None:
    scores = torch.empty((3, 0))
    relevant = torch.full((3, 2), -1, dtype=torch.long)
    ranks = ranks_of_relevant(scores, relevant)
    assert ranks.shape == (3, 2) and bool(torch.isinf(ranks).all())
