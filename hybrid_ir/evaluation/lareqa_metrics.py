"""LAReQA-style evaluation of a dense retriever on a :class:`~hybrid_ir.data.corpus.RetrievalBenchmark`.

Scores are dot products of the given embeddings (cosine similarity when they are L2-normalised).
Ranks follow :func:`hybrid_ir.evaluation.metrics.ranks_of_relevant` (ties: lower candidate index first).
For a query ``q`` in language ``X`` (its relevant items are ``bench.relevant[q.qid]``, one per language
in which ``q.qid`` exists):

* **mono** (``X -> X``): candidates in ``X``; relevant: the answer sentence in ``X`` (skipped if absent).
* **cross** (``X -> Y``, ``Y != X``, for each ``Y`` where the qid exists): candidates in ``Y``;
  relevant: the answer sentence in ``Y``.
* **multi**: the whole pool; relevant: the answer sentence in every language where the qid exists.

Each (query, setting) gets AP over the full ranking and AP@``map_k`` (trec_eval ``map_cut``). Averages:

* the pair matrix ``M[X][Y]``: mean AP over the queries of the (X, Y) setting (diagonal = mono);
* macro: ``map_mono`` = mean of the diagonal, ``map_cross`` = mean of the off-diagonal pairs present,
  ``map_multi`` = mean over query languages of their mean multilingual AP;
* micro (``*_micro``): mean over all (query, setting) instances of the setting.

Language bias (multilingual setting, see :mod:`hybrid_ir.evaluation.bias`):

* ``rank_distance``: worst minus best rank of a query's relevant items. Queries with a single relevant
  item have no distance and are **excluded** (not counted as 0); per language, mean over its queries;
  the scalar is the macro mean over languages (``rank_distance_micro``: mean over queries).
* ``lang_share``: per query language, mean share of the top-``share_k`` results written in the query's
  language (over the queries of the multilingual setting), next to that language's share of the pool;
  ``lang_share_ratio`` = share / pool share (> 1: bias toward the query language).
* ``mono_cross_gap``: per query language, ``M[X][X]`` minus the mean of ``M[X][Y]`` over ``Y != X``.

See docs/method.md (metrics and language bias).
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor

from hybrid_ir.data.corpus import RetrievalBenchmark
from hybrid_ir.evaluation import bias
from hybrid_ir.evaluation.metrics import average_precision, full_ranking, ranks_of_relevant
from hybrid_ir.utils.errors import DataError

MULTI = "multi"
"""``target`` of the per-query records of the multilingual setting."""


@dataclass(frozen=True, slots=True)
class QueryResult:
    """One (query, setting) instance.

    Attributes:
        qid, lang: the query (``(qid, lang)`` identifies it across models).
        setting: ``"mono"``, ``"cross"`` or ``"multi"``.
        target: the passage language (mono/cross) or ``"multi"``.
        ap, ap_at_k: AP over the full ranking and AP@map_k.
        rank_distance: multi only: worst minus best relevant rank; ``None`` in the other settings and
            for a query with a single relevant item.
    """

    qid: str
    lang: str
    setting: str
    target: str
    ap: float
    ap_at_k: float
    rank_distance: float | None = None


def _mean(values: Iterable[float | None]) -> float | None:
    present = [v for v in values if v is not None and not math.isnan(v)]
    return sum(present) / len(present) if present else None


@dataclass
class LareqaResult:
    """Result of :func:`evaluate_lareqa`.

    Matrices are ``[query language][passage language]`` nested lists in the order of ``languages``,
    ``None`` for a pair without queries. Per-language dicts hold the languages where the value is defined.
    """

    name: str
    languages: list[str]
    map_k: int
    share_k: int
    n_queries: int
    pair_map: list[list[float | None]]
    pair_map_at_k: list[list[float | None]]
    pair_count: list[list[int]]
    multi_map: dict[str, float]
    multi_map_at_k: dict[str, float]
    multi_count: dict[str, int]
    rank_distance: dict[str, float]
    rank_distance_count: dict[str, int]
    lang_share: dict[str, float]
    pool_share: dict[str, float]
    per_query: list[QueryResult]

    @property
    def lang_share_ratio(self) -> dict[str, float]:
        """Per query language: ``lang_share / pool_share``."""
        return {
            lang: share / self.pool_share[lang]
            for lang, share in self.lang_share.items()
            if self.pool_share.get(lang, 0.0) > 0
        }

    @property
    def mono_cross_gap(self) -> dict[str, float]:
        """Per query language: mono mAP minus mean cross mAP (full-ranking AP)."""
        gaps = bias.mono_cross_gap(self.pair_map)
        return {lang: gap for lang, gap in zip(self.languages, gaps, strict=True) if gap is not None}

    def _micro(self, setting: str, field: str) -> float | None:
        return _mean(getattr(r, field) for r in self.per_query if r.setting == setting)

    def scalars(self) -> dict[str, float]:
        """Flat summary: ``map_{mono,cross,multi}`` (macro), ``..._micro``, the same with ``map_at{k}_``,
        ``rank_distance`` (+ ``_micro``), ``lang_share_at{k}`` and ``lang_share_ratio_at{k}`` (macro over
        query languages), ``mono_cross_gap`` (macro), ``n_queries``. Undefined values are left out."""
        n_lang = len(self.languages)
        k = self.map_k
        values: dict[str, float | None] = {}
        for prefix, matrix, multi, field in (
            ("map", self.pair_map, self.multi_map, "ap"),
            (f"map_at{k}", self.pair_map_at_k, self.multi_map_at_k, "ap_at_k"),
        ):
            values[f"{prefix}_mono"] = _mean(matrix[x][x] for x in range(n_lang))
            off_diagonal = (matrix[x][y] for x in range(n_lang) for y in range(n_lang) if x != y)
            values[f"{prefix}_cross"] = _mean(off_diagonal)
            values[f"{prefix}_multi"] = _mean(multi.values())
            for setting in ("mono", "cross", "multi"):
                values[f"{prefix}_{setting}_micro"] = self._micro(setting, field)
        values["rank_distance"] = _mean(self.rank_distance.values())
        values["rank_distance_micro"] = self._micro("multi", "rank_distance")
        values[f"lang_share_at{self.share_k}"] = _mean(self.lang_share.values())
        values[f"lang_share_ratio_at{self.share_k}"] = _mean(self.lang_share_ratio.values())
        values["mono_cross_gap"] = _mean(self.mono_cross_gap.values())
        values["n_queries"] = float(self.n_queries)
        return {name: float(value) for name, value in values.items() if value is not None}

    def per_query_columns(self) -> dict[str, list[Any]]:
        """The per-query records as columns (``qid``, ``lang``, ``setting``, ``target``, ``ap``, ``ap_at_k``,
        ``rank_distance``)."""
        fields = ("qid", "lang", "setting", "target", "ap", "ap_at_k", "rank_distance")
        return {field: [getattr(r, field) for r in self.per_query] for field in fields}

    def to_json(self, per_query: bool = True) -> dict[str, Any]:
        """A JSON-serialisable dict of all fields and :meth:`scalars` (per-query records as columns,
        left out with ``per_query=False``)."""
        out: dict[str, Any] = {
            "name": self.name,
            "languages": list(self.languages),
            "map_k": self.map_k,
            "share_k": self.share_k,
            "n_queries": self.n_queries,
            "scalars": self.scalars(),
            "pair_map": self.pair_map,
            "pair_map_at_k": self.pair_map_at_k,
            "pair_count": self.pair_count,
            "multi_map": self.multi_map,
            "multi_map_at_k": self.multi_map_at_k,
            "multi_count": self.multi_count,
            "rank_distance": self.rank_distance,
            "rank_distance_count": self.rank_distance_count,
            "lang_share": self.lang_share,
            "pool_share": self.pool_share,
            "lang_share_ratio": self.lang_share_ratio,
            "mono_cross_gap": self.mono_cross_gap,
        }
        if per_query:
            out["per_query"] = self.per_query_columns()
        return out


def _check_inputs(q_emb: Tensor, c_emb: Tensor, bench: RetrievalBenchmark, map_k: int, share_k: int) -> None:
    if not bench.queries or not bench.candidates:
        raise DataError(bench.name, "benchmark", "needs at least one query and one candidate")
    if q_emb.ndim != 2 or c_emb.ndim != 2 or q_emb.shape[1] != c_emb.shape[1]:
        shapes = f"{tuple(q_emb.shape)}, {tuple(c_emb.shape)}"
        raise ValueError(f"embeddings must be [Nq, D] and [Nc, D] with the same D, got {shapes}")
    if q_emb.shape[0] != len(bench.queries) or c_emb.shape[0] != len(bench.candidates):
        raise ValueError(
            f"{q_emb.shape[0]} query and {c_emb.shape[0]} candidate embeddings for "
            f"{len(bench.queries)} queries and {len(bench.candidates)} candidates"
        )
    if not (bool(torch.isfinite(q_emb).all()) and bool(torch.isfinite(c_emb).all())):
        raise ValueError("embeddings contain NaN or inf")
    if map_k < 1 or not 1 <= share_k <= len(bench.candidates):
        limit = len(bench.candidates)
        raise ValueError(f"map_k must be >= 1 and share_k in [1, {limit}], got {map_k} and {share_k}")


def _language_ids(bench: RetrievalBenchmark) -> tuple[Tensor, Tensor, Tensor]:
    """Language ids (positions in ``bench.languages``) of the queries ``[Nq]`` and candidates ``[Nc]``,
    and the relevant candidate of each query per language ``[Nq, L]`` (-1 where absent); checks them."""
    lang_id = {lang: i for i, lang in enumerate(bench.languages)}
    for i, cand in enumerate(bench.candidates):
        if cand.lang not in lang_id:
            raise DataError(bench.name, f"candidate {i}", f"language {cand.lang!r} not in {bench.languages}")
    for query in bench.queries:
        if query.lang not in lang_id:
            problem = f"language {query.lang!r} not in {bench.languages}"
            raise DataError(bench.name, f"query {query.qid}", problem)
    by_qid: dict[str, list[int]] = {}
    for qid, per_lang in bench.relevant.items():
        row = [-1] * len(lang_id)
        for lang, index in per_lang.items():
            if lang not in lang_id:
                raise DataError(bench.name, f"relevant {qid}", f"language {lang!r} not in {bench.languages}")
            if not 0 <= index < len(bench.candidates) or bench.candidates[index].lang != lang:
                raise DataError(bench.name, f"relevant {qid}", f"index {index} is not a {lang} candidate")
            row[lang_id[lang]] = index
        by_qid[qid] = row
    missing = [-1] * len(lang_id)
    q_lang = torch.tensor([lang_id[q.lang] for q in bench.queries], dtype=torch.long)
    c_lang = torch.tensor([lang_id[c.lang] for c in bench.candidates], dtype=torch.long)
    relevant = torch.tensor([by_qid.get(q.qid, missing) for q in bench.queries], dtype=torch.long)
    return q_lang, c_lang, relevant


def _rank_all(
    q_emb: Tensor, c_emb: Tensor, q_lang: Tensor, c_lang: Tensor, relevant: Tensor, share_k: int, chunk: int
) -> tuple[Tensor, Tensor, Tensor]:
    """Score chunks of ``chunk`` queries against the pool and return, on CPU:
    ``pair_ranks [Nq, L]`` (rank of the relevant item of language l among the language-l candidates),
    ``multi_ranks [Nq, L]`` (its rank in the whole pool) and ``share [Nq]`` (own-language top-k share).

    Language-l ranks are computed on the language-l columns only, in increasing candidate index, so the
    tie rule (lower index first) is that of the whole pool."""
    device = q_emb.device
    c_lang = c_lang.to(device)
    q_lang = q_lang.to(device)
    columns = [torch.nonzero(c_lang == lang).squeeze(1) for lang in range(relevant.shape[1])]
    local = torch.empty_like(c_lang)
    for cols in columns:
        local[cols] = torch.arange(len(cols), device=device)
    pair_parts, multi_parts, share_parts = [], [], []
    for start in range(0, q_emb.shape[0], chunk):
        stop = start + chunk
        scores = q_emb[start:stop] @ c_emb.T
        rel = relevant[start:stop].to(device)
        pair = []
        for lang, cols in enumerate(columns):
            rel_lang = rel[:, lang : lang + 1]
            rel_local = torch.where(rel_lang >= 0, local[rel_lang.clamp(min=0)], -1)
            pair.append(ranks_of_relevant(scores[:, cols], rel_local))
        pair_parts.append(torch.cat(pair, dim=1).cpu())
        order, ranks = full_ranking(scores)
        multi = torch.where(rel >= 0, ranks.gather(1, rel.clamp(min=0)).to(torch.float64), math.inf)
        multi_parts.append(multi.cpu())
        top_langs = c_lang[order[:, :share_k]]
        share_parts.append(bias.language_share(top_langs, q_lang[start:stop]).cpu())
    return torch.cat(pair_parts), torch.cat(multi_parts), torch.cat(share_parts)


def evaluate_lareqa(
    q_emb: Tensor,
    c_emb: Tensor,
    bench: RetrievalBenchmark,
    *,
    map_k: int = 20,
    share_k: int = 10,
    query_chunk: int = 1024,
) -> LareqaResult:
    """Evaluate embeddings on a LAReQA benchmark (see the module docstring for the settings and averages).

    Args:
        q_emb: ``[Nq, D]`` query embeddings, row-aligned with ``bench.queries``.
        c_emb: ``[Nc, D]`` candidate embeddings, row-aligned with ``bench.candidates`` (same device).
        bench: the benchmark.
        map_k: cut-off of AP@k (``map_at{k}_*``).
        share_k: cut-off of the language share (``lang_share_at{k}``).
        query_chunk: queries scored at once; peak memory is about ``query_chunk * Nc`` float32 scores
            plus two int64 tensors of that size (the sort of the multilingual setting).

    Returns:
        a :class:`LareqaResult`.
    """
    _check_inputs(q_emb, c_emb, bench, map_k, share_k)
    if query_chunk < 1:
        raise ValueError(f"query_chunk must be >= 1, got {query_chunk}")
    langs = list(bench.languages)
    n_lang = len(langs)
    q_lang, c_lang, relevant = _language_ids(bench)
    pair_ranks, multi_ranks, share = _rank_all(
        q_emb.float(), c_emb.float(), q_lang, c_lang, relevant, share_k, query_chunk
    )
    has_pair = relevant >= 0
    n_rel = has_pair.sum(1)
    in_multi = n_rel > 0
    flat = pair_ranks.reshape(-1, 1)
    pair_ap = average_precision(flat, 1).reshape(pair_ranks.shape)
    pair_ap_k = average_precision(flat, 1, map_k).reshape(pair_ranks.shape)
    multi_ap = average_precision(multi_ranks, n_rel)
    multi_ap_k = average_precision(multi_ranks, n_rel, map_k)
    distance = bias.rank_distance(multi_ranks)

    def mean_where(values: Tensor, mask: Tensor) -> float | None:
        return float(values[mask].mean()) if bool(mask.any()) else None

    pair_map: list[list[float | None]] = []
    pair_map_at_k: list[list[float | None]] = []
    pair_count: list[list[int]] = []
    multi_map: dict[str, float] = {}
    multi_map_at_k: dict[str, float] = {}
    multi_count: dict[str, int] = {}
    rd_map: dict[str, float] = {}
    rd_count: dict[str, int] = {}
    lang_share: dict[str, float] = {}
    for x, lang in enumerate(langs):
        of_x = q_lang == x
        masks = [of_x & has_pair[:, y] for y in range(n_lang)]
        pair_map.append([mean_where(pair_ap[:, y], m) for y, m in enumerate(masks)])
        pair_map_at_k.append([mean_where(pair_ap_k[:, y], m) for y, m in enumerate(masks)])
        pair_count.append([int(m.sum()) for m in masks])
        multi_x = of_x & in_multi
        if bool(multi_x.any()):
            multi_map[lang] = float(multi_ap[multi_x].mean())
            multi_map_at_k[lang] = float(multi_ap_k[multi_x].mean())
            multi_count[lang] = int(multi_x.sum())
            lang_share[lang] = float(share[multi_x].mean())
        rd_x = of_x & ~distance.isnan()
        if bool(rd_x.any()):
            rd_map[lang] = float(distance[rd_x].mean())
            rd_count[lang] = int(rd_x.sum())
    pool = bias.pool_share(c_lang, n_lang).tolist()
    return LareqaResult(
        name=bench.name,
        languages=langs,
        map_k=map_k,
        share_k=share_k,
        n_queries=len(bench.queries),
        pair_map=pair_map,
        pair_map_at_k=pair_map_at_k,
        pair_count=pair_count,
        multi_map=multi_map,
        multi_map_at_k=multi_map_at_k,
        multi_count=multi_count,
        rank_distance=rd_map,
        rank_distance_count=rd_count,
        lang_share=lang_share,
        pool_share=dict(zip(langs, pool, strict=True)),
        per_query=_per_query_records(
            bench, langs, q_lang, has_pair, pair_ap, pair_ap_k, multi_ap, multi_ap_k, distance
        ),
    )


def _per_query_records(
    bench: RetrievalBenchmark,
    langs: list[str],
    q_lang: Tensor,
    has_pair: Tensor,
    pair_ap: Tensor,
    pair_ap_k: Tensor,
    multi_ap: Tensor,
    multi_ap_k: Tensor,
    distance: Tensor,
) -> list[QueryResult]:
    """Records in query order; per query: its mono/cross pairs in language order, then multi."""
    q_lang_l, has_l = q_lang.tolist(), has_pair.tolist()
    ap_l, ap_k_l = pair_ap.tolist(), pair_ap_k.tolist()
    m_ap_l, m_ap_k_l, dist_l = multi_ap.tolist(), multi_ap_k.tolist(), distance.tolist()
    records: list[QueryResult] = []
    for i, query in enumerate(bench.queries):
        present = [y for y, has in enumerate(has_l[i]) if has]
        for y in present:
            setting = "mono" if y == q_lang_l[i] else "cross"
            records.append(QueryResult(query.qid, query.lang, setting, langs[y], ap_l[i][y], ap_k_l[i][y]))
        if present:
            rd = None if math.isnan(dist_l[i]) else dist_l[i]
            records.append(QueryResult(query.qid, query.lang, "multi", MULTI, m_ap_l[i], m_ap_k_l[i], rd))
    return records
