"""Language-bias measures for multilingual retrieval (pure functions on ranks, languages and matrices).

* **Rank distance** (the language-bias measure of KD-SPD, arXiv 2408.10536): in the multilingual
  setting a query has one relevant item per language in which its id exists; the distance is the rank of
  the worst-ranked relevant item minus the rank of the best-ranked one. 0 means all translations of
  the answer are ranked together; a large value means the ranking prefers some languages.
* **Language share@k**: the share of the top-k multilingual results that are written in the query's
  language, to be compared with that language's share of the pool (ratio > 1: bias toward the query
  language).
* **Mono-cross gap**: per query language, monolingual mAP minus the mean cross-lingual mAP.

See docs/method.md (metrics and language bias).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from torch import Tensor


def rank_distance(ranks: Tensor) -> Tensor:
    """Per query: ``max_j r_j - min_j r_j`` over its finite ranks.

    A query with fewer than two ranked relevant items has no distance: NaN (callers exclude it).

    Args:
        ranks: ``[B, R]`` float ranks of the relevant items, ``inf`` for padding.

    Returns:
        ``[B]`` float64.
    """
    ranks = torch.as_tensor(ranks, dtype=torch.float64)
    finite = torch.isfinite(ranks)
    worst = torch.where(finite, ranks, -math.inf).max(dim=1).values
    best = torch.where(finite, ranks, math.inf).min(dim=1).values
    return torch.where(finite.sum(1) >= 2, worst - best, math.nan)


def language_share(top_langs: Tensor, query_langs: Tensor) -> Tensor:
    """Per query: share of its top-k results written in its own language.

    Args:
        top_langs: ``[B, k]`` language ids of the top-k results.
        query_langs: ``[B]`` language id of each query.

    Returns:
        ``[B]`` float64 in ``[0, 1]``: ``#{i : top_langs[b, i] == query_langs[b]} / k``.
    """
    return (top_langs == query_langs.unsqueeze(1)).to(torch.float64).mean(dim=1)


def pool_share(cand_langs: Tensor, n_langs: int) -> Tensor:
    """Share of each language in the candidate pool.

    Args:
        cand_langs: ``[C]`` language id (``0 .. n_langs - 1``) of each candidate, ``C > 0``.

    Returns:
        ``[n_langs]`` float64 summing to 1.
    """
    counts = torch.bincount(cand_langs.cpu(), minlength=n_langs).to(torch.float64)
    return counts / counts.sum()


def mono_cross_gap(matrix: Sequence[Sequence[float | None]]) -> list[float | None]:
    """Per query language ``x``: ``M[x][x] - mean_{y != x, M[x][y] defined} M[x][y]``.

    Args:
        matrix: square ``[L][L]`` matrix (rows: query language, columns: passage language), ``None``
            for an absent pair.

    Returns:
        ``[L]`` gaps; ``None`` where the diagonal or every off-diagonal entry of the row is absent.
    """
    gaps: list[float | None] = []
    for x, row in enumerate(matrix):
        cross = [value for y, value in enumerate(row) if y != x and value is not None]
        mono = row[x]
        gaps.append(None if mono is None or not cross else mono - sum(cross) / len(cross))
    return gaps
