"""Per-query ranking metrics (AP, AP@k, nDCG@k, Recall@k), batched over queries.

Conventions shared by every function here:

* A ranking position (*rank*) is 1-based. Ranks of relevant items are ``float64`` tensors;
  ``inf`` marks a relevant item that is not ranked (padding, or not in a top-k list); it contributes
  nothing to any metric. (:func:`full_ranking`'s table of every candidate's rank is ``long``.)
* Relevant items are given as candidate indices, ``relevant[b, j]``, padded with ``-1``.
* **Ties** are broken by candidate index, lower index first (what a stable descending sort gives):
  the rank of candidate ``r`` among the candidates ``S`` of a query is

      rank(r) = 1 + #{c in S : s_c > s_r} + #{c in S : s_c = s_r and c < r}.

  trec_eval sorts by score descending, then by *docno descending*; both agree when docnos are
  named in reverse index order (``docno(i) > docno(j)`` iff ``i < j``). :func:`evaluate_run` works on
  run dicts, where there is no index, and uses trec_eval's own rule.
* Definitions follow trec_eval (``map``, ``map_cut_k``, ``ndcg_cut_k``, ``recall_k``); a query with no
  relevant item scores 0 on all of them, as in trec_eval.

See docs/method.md (metrics and language bias).
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterable, Mapping

import torch
from torch import Tensor

RELEVANCE_LEVEL = 1
"""Judgements ``rel >= RELEVANCE_LEVEL`` count as relevant for AP and recall (trec_eval's default)."""

_MEASURE = re.compile(r"^(AP|nDCG|R)(?:@(\d+))?$")


def _as_ranks(ranks: Tensor | Iterable[float]) -> tuple[Tensor, bool]:
    """``ranks`` as a float64 ``[B, R]`` tensor, and whether the input was a single query ``[R]``."""
    ranks = torch.as_tensor(ranks, dtype=torch.float64)
    if ranks.ndim == 1:
        return ranks.unsqueeze(0), True
    if ranks.ndim != 2:
        raise ValueError(f"ranks must be [R] or [B, R], got shape {tuple(ranks.shape)}")
    return ranks, False


def _per_query(values: Tensor | int, batch: int, device: torch.device) -> Tensor:
    """An int or a ``[B]`` tensor as a float64 ``[B]`` tensor."""
    out = torch.as_tensor(values, dtype=torch.float64, device=device)
    return out.expand(batch) if out.ndim == 0 else out


def _finish(values: Tensor, single: bool) -> Tensor:
    return values[0] if single else values


def ranks_of_relevant(scores: Tensor, relevant: Tensor, subset: Tensor | None = None) -> Tensor:
    """Rank of each relevant candidate among the candidates of ``subset`` (ties: lower index first).

    Args:
        scores: ``[B, C]`` (or ``[C]``) scores, higher is better.
        relevant: ``[B, R]`` (or ``[R]``) candidate indices, ``-1`` for padding.
        subset: ``None`` (all candidates), or a bool mask ``[C]`` or ``[B, C]`` of the candidates that
            take part in the ranking; every relevant index must lie in it.

    Returns:
        ``[B, R]`` (or ``[R]``) float64 ranks, ``inf`` at padding. Cost: ``R`` passes over ``[B, C]``.
    """
    single = scores.ndim == 1
    if single:
        scores, relevant = scores.unsqueeze(0), relevant.unsqueeze(0)
    n_batch, n_cand = scores.shape
    if relevant.ndim != 2 or relevant.shape[0] != n_batch:
        raise ValueError(f"relevant must be [{n_batch}, R], got shape {tuple(relevant.shape)}")
    if bool((relevant >= n_cand).any()):
        raise ValueError(f"relevant index out of range for {n_cand} candidates")
    valid = relevant >= 0
    if n_cand == 0:  # an empty candidate set (e.g. a language absent from a pool subset): nothing is ranked
        return _finish(
            torch.full(relevant.shape, math.inf, dtype=torch.float64, device=scores.device), single
        )
    safe = relevant.clamp(min=0)
    if subset is not None:
        subset = subset.to(device=scores.device, dtype=torch.bool).expand(n_batch, n_cand)
        if not bool(subset.gather(1, safe)[valid].all()):
            raise ValueError("a relevant candidate lies outside the subset")
    rel_scores = scores.gather(1, safe)
    index = torch.arange(n_cand, device=scores.device)
    out = torch.full(relevant.shape, math.inf, dtype=torch.float64, device=scores.device)
    for j in range(relevant.shape[1]):
        if not bool(valid[:, j].any()):
            continue
        s_r = rel_scores[:, j : j + 1]
        before = (scores > s_r) | ((scores == s_r) & (index < safe[:, j : j + 1]))
        if subset is not None:
            before &= subset
        out[:, j] = torch.where(valid[:, j], 1.0 + before.sum(1).to(torch.float64), math.inf)
    return _finish(out, single)


def full_ranking(scores: Tensor) -> tuple[Tensor, Tensor]:
    """Sort every candidate (a stable descending sort: ties lower index first).

    Cheaper than :func:`ranks_of_relevant` when many relevant items per query are needed
    (one ``O(C log C)`` sort instead of ``R`` passes), at the cost of two ``[B, C]`` long tensors.

    Args:
        scores: ``[B, C]`` scores.

    Returns:
        ``(order, ranks)``, both ``[B, C]`` long: ``order[b, i]`` is the candidate at rank ``i + 1``;
        ``ranks[b, c]`` is the rank of candidate ``c`` (the inverse permutation, 1-based).
    """
    order = scores.sort(dim=1, descending=True, stable=True).indices
    positions = torch.arange(1, scores.shape[1] + 1, device=scores.device).expand_as(order)
    return order, torch.empty_like(order).scatter_(1, order, positions)


def average_precision(ranks: Tensor, n_relevant: Tensor | int, k: int | None = None) -> Tensor:
    """Average precision (trec_eval ``map``), or ``map_cut_k`` when ``k`` is given.

    With the finite ranks of query ``b`` sorted, ``r_1 < r_2 < ...``::

        AP   = (1 / n_relevant) * sum_j  j / r_j
        AP@k = (1 / n_relevant) * sum_{j : r_j <= k}  j / r_j

    Relevant items that are not ranked (``inf``) count in ``n_relevant`` only. 0 when ``n_relevant == 0``.

    Args:
        ranks: ``[B, R]`` (or ``[R]``) distinct ranks of the relevant items, ``inf`` for unranked/padding.
        n_relevant: int or ``[B]``: the number of relevant items of each query (>= its finite ranks).
        k: cut-off, or ``None`` for the full ranking.

    Returns:
        ``[B]`` (or scalar) float64.
    """
    ranks, single = _as_ranks(ranks)
    n_rel = _per_query(n_relevant, ranks.shape[0], ranks.device)
    if bool((torch.isfinite(ranks).sum(1) > n_rel).any()):
        raise ValueError("more ranked relevant items than n_relevant")
    ranks = ranks.sort(dim=1).values
    hits = torch.arange(1, ranks.shape[1] + 1, dtype=torch.float64, device=ranks.device)
    precision = hits / ranks
    if k is not None:
        precision = torch.where(ranks <= k, precision, 0.0)
    total = precision.sum(1)
    return _finish(torch.where(n_rel > 0, total / n_rel.clamp(min=1), 0.0), single)


def recall_at_k(ranks: Tensor, n_relevant: Tensor | int, k: int) -> Tensor:
    """Recall@k (trec_eval ``recall_k``): ``#{j : r_j <= k} / n_relevant``, 0 when ``n_relevant == 0``.

    Args:
        ranks: ``[B, R]`` (or ``[R]``) ranks of the relevant items, ``inf`` for unranked/padding.
        n_relevant: int or ``[B]``.

    Returns:
        ``[B]`` (or scalar) float64.
    """
    ranks, single = _as_ranks(ranks)
    n_rel = _per_query(n_relevant, ranks.shape[0], ranks.device)
    found = (ranks <= k).sum(1, dtype=torch.float64)
    return _finish(torch.where(n_rel > 0, found / n_rel.clamp(min=1), 0.0), single)


def ndcg_at_k(ranks: Tensor, gains: Tensor, k: int) -> Tensor:
    """nDCG@k with trec_eval's ``ndcg_cut_k`` definition (linear gains, log2 discount).

    ::

        DCG@k  = sum_{j : r_j <= k} g_j / log2(r_j + 1)
        IDCG@k = sum_{i=1..min(k, #g>0)} g_(i) / log2(i + 1),   g_(1) >= g_(2) >= ... the positive gains
        nDCG@k = DCG@k / IDCG@k   (0 when IDCG@k == 0)

    Args:
        ranks: ``[B, R]`` (or ``[R]``) ranks of *all* judged-relevant items of each query
            (``inf`` when not ranked or padding), so the ideal ranking can be built from ``gains``.
        gains: same shape, the graded relevance of each item (``<= 0`` for padding: no gain).
        k: cut-off.

    Returns:
        ``[B]`` (or scalar) float64.
    """
    ranks, single = _as_ranks(ranks)
    gains = torch.as_tensor(gains, dtype=torch.float64, device=ranks.device).reshape(ranks.shape).clamp(min=0)
    dcg = torch.where(ranks <= k, gains / torch.log2(ranks + 1.0), 0.0).sum(1)
    ideal = gains.sort(dim=1, descending=True).values[:, :k]
    positions = torch.arange(1, ideal.shape[1] + 1, dtype=torch.float64, device=ranks.device)
    idcg = (ideal / torch.log2(positions + 1.0)).sum(1)
    return _finish(torch.where(idcg > 0, dcg / idcg.clamp(min=1e-300), 0.0), single)


def trec_order(doc_scores: Mapping[str, float]) -> list[str]:
    """Doc ids in trec_eval's ranking order: score descending, then docno descending."""
    return [doc for doc, _ in sorted(doc_scores.items(), key=lambda item: (item[1], item[0]), reverse=True)]


def parse_measure(name: str) -> tuple[str, int | None]:
    """``"AP"``, ``"AP@20"``, ``"nDCG@10"``, ``"R@100"`` (ir_measures names) -> ``(kind, k)``."""
    match = _MEASURE.match(name)
    if match is None or (match.group(1) != "AP" and match.group(2) is None):
        raise ValueError(f"unknown measure {name!r}: expected AP, AP@k, nDCG@k or R@k")
    return match.group(1), None if match.group(2) is None else int(match.group(2))


def evaluate_run(
    run: Mapping[str, Mapping[str, float]],
    qrels: Mapping[str, Mapping[str, int]],
    measures: Iterable[str] = ("nDCG@10", "R@100"),
) -> dict[str, dict[str, float]]:
    """Per-query measures of a run, as trec_eval computes them (MIRACL-style evaluation).

    Every query of ``qrels`` is evaluated; a query absent from ``run`` has an empty ranking
    (scores 0, like ``trec_eval -c``); run queries absent from ``qrels`` are ignored. Documents are
    ranked by :func:`trec_order`. ``rel >= RELEVANCE_LEVEL`` is relevant for AP and recall; the gain of
    nDCG is ``rel`` for ``rel > 0``.

    Args:
        run: ``{qid: {docid: score}}``.
        qrels: ``{qid: {docid: rel}}``.
        measures: ir_measures-style names: ``AP``, ``AP@k``, ``nDCG@k``, ``R@k``.

    Returns:
        ``{qid: {measure: value}}``.
    """
    parsed = {name: parse_measure(name) for name in measures}
    out: dict[str, dict[str, float]] = {}
    for qid, judged in qrels.items():
        position = {doc: i + 1 for i, doc in enumerate(trec_order(run.get(qid, {})))}
        graded = [(doc, rel) for doc, rel in judged.items() if rel > 0]
        ranks = torch.tensor([float(position.get(doc, math.inf)) for doc, _ in graded], dtype=torch.float64)
        gains = torch.tensor([float(rel) for _, rel in graded], dtype=torch.float64)
        binary = torch.tensor([rel >= RELEVANCE_LEVEL for _, rel in graded], dtype=torch.bool)
        bin_ranks = ranks[binary]
        n_rel = int(binary.sum())
        values: dict[str, float] = {}
        for name, (kind, k) in parsed.items():
            if kind == "AP":
                values[name] = float(average_precision(bin_ranks, n_rel, k))
            elif kind == "R":
                values[name] = float(recall_at_k(bin_ranks, n_rel, k))
            else:
                values[name] = float(ndcg_at_k(ranks, gains, k))
        out[qid] = values
    return out


def mean_over_queries(per_query: Mapping[str, Mapping[str, float]]) -> dict[str, float]:
    """``{measure: mean over queries}`` of an :func:`evaluate_run` result (empty for no queries)."""
    names = sorted({name for values in per_query.values() for name in values})
    return {name: sum(values[name] for values in per_query.values()) / len(per_query) for name in names}
