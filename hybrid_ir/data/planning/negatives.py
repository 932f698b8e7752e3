"""Hard negatives from the data: for every pair of a global batch, ``k`` negative passages in the pair's passage
language (``data.negatives_per_query``).

The choice is a pure function of the corpus, the global batch and ``(seed, epoch, batch index)``, so it is the same
on every rank (each rank keeps its slice of pairs with their negatives) and after a resume. For a pair
``(parallel_id, q_lang, p_lang)`` the negatives are, in this order of preference:

1. ids listed in ``negative_ids`` of ``parallel_id`` (its list in ``p_lang``, then in ``q_lang``) that exist in
``p_lang``
   and whose answer group is none of the batch's positives' groups (so a negative never is, or translates, the
   positive of any pair of the global batch), drawn at random among them;
2. if fewer than ``k`` remain: the record's ``negatives`` texts in ``p_lang`` (none equal to a positive passage of
   the batch), drawn by text and carried as their position in the list;
3. if still fewer: random ids of the corpus in ``p_lang`` outside the batch's groups (counted as ``random`` in
   :func:`negative_stats`).

See docs/negatives.md.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, NamedTuple

import numpy as np

from hybrid_ir.data.corpus import ParallelCorpus
from hybrid_ir.data.planning.plan import EpochPlan, PairRef

# Salt of the negatives' random stream, so it differs from the planner's stream of the same (seed, epoch).
_SALT = 0x4E4547
SOURCES = ("listed", "text", "random")
# Batches of an epoch whose negatives :func:`negative_stats` counts by default (a dry run, the start of training).
STATS_BATCHES = 64


class NegativeRef(NamedTuple):
    """One hard negative in language ``lang``: the passage of record ``parallel_id``, or (``parallel_id`` is ``None``)
    the text at ``position`` of the pair's own ``negatives`` list in ``lang`` (the token store holds its token ids,
    so a batch carries a number, not the text). ``source`` is one of :data:`SOURCES`."""

    parallel_id: str | None
    lang: str
    position: int | None
    source: str


def choose_negatives(
    corpus: ParallelCorpus, refs: Sequence[PairRef], k: int, seed: int, epoch: int, batch: int
) -> list[tuple[NegativeRef, ...]]:
    """``k`` negatives for each pair of the global batch ``refs`` (all of ``corpus``), in the pair's ``p_lang``
    (see the module docstring for the rule).

    Raises:
        ValueError: the corpus has fewer than ``k`` ids in a pair's passage language outside the batch's groups.
    """
    rng = np.random.default_rng([seed, epoch, batch, _SALT])
    excluded = {corpus.group[ref.parallel_id] for ref in refs}
    positives = {(ref.p_lang, corpus.pairs[ref.p_lang][ref.parallel_id].passage) for ref in refs}
    eligible: dict[str, np.ndarray] = {}
    out = []
    for ref in refs:
        lang = ref.p_lang
        listed = dict.fromkeys(
            [
                *corpus.negative_ids.get(lang, {}).get(ref.parallel_id, ()),
                *corpus.negative_ids.get(ref.q_lang, {}).get(ref.parallel_id, ()),
            ]
        )
        valid = [n for n in listed if n in corpus.pairs[lang] and corpus.group[n] not in excluded]
        chosen = [NegativeRef(valid[i], lang, None, "listed") for i in rng.permutation(len(valid))[:k]]
        if len(chosen) < k:
            first: dict[str, int] = {}  # each distinct listed text, at its first position
            for position, text in enumerate(corpus.negatives.get(lang, {}).get(ref.parallel_id, ())):
                first.setdefault(text, position)
            texts = [position for text, position in first.items() if (lang, text) not in positives]
            need = k - len(chosen)
            chosen += [NegativeRef(None, lang, texts[i], "text") for i in rng.permutation(len(texts))[:need]]
        if len(chosen) < k:
            if lang not in eligible:
                arrays = corpus.arrays
                mask = arrays.has_lang[:, corpus.languages.index(lang)].copy()
                mask[arrays.members(np.fromiter(excluded, dtype=np.int64))] = False
                eligible[lang] = np.flatnonzero(mask)
            taken = [corpus.index_of[n.parallel_id] for n in chosen if n.parallel_id is not None]
            pool = eligible[lang]  # ascending, and holds every id in ``taken``
            if taken:
                pool = np.delete(pool, np.searchsorted(pool, taken))
            need = k - len(chosen)
            if len(pool) < need:
                raise ValueError(
                    f"data.negatives_per_query={k}: dataset {corpus.name!r} has only {len(pool)} ids in "
                    f"{lang!r} outside the answer groups of a batch, too few to add {need} random negatives; "
                    "lower data.negatives_per_query or data.batch_size"
                )
            picks = rng.choice(pool, size=need, replace=False)
            chosen += [NegativeRef(corpus.parallel_ids[i], lang, None, "random") for i in picks.tolist()]
        out.append(tuple(chosen))
    return out


def with_negatives(
    corpora: Sequence[ParallelCorpus], refs: list[PairRef], k: int, seed: int, epoch: int, batch: int
) -> list[PairRef]:
    """The global batch ``refs`` with ``k`` negatives attached to each pair (``refs`` unchanged when ``k`` is 0)."""
    if k == 0 or not refs:
        return refs
    chosen = choose_negatives(corpora[refs[0].dataset], refs, k, seed, epoch, batch)
    return [ref._replace(negatives=negs) for ref, negs in zip(refs, chosen, strict=True)]


def negative_stats(
    plan: EpochPlan,
    corpora: Sequence[ParallelCorpus],
    k: int,
    seed: int,
    epoch: int,
    sample: int | None = STATS_BATCHES,
) -> dict[str, Any]:
    """The negatives of ``sample`` batches of ``plan`` spread evenly over the epoch (:func:`spread`; every batch
    when ``sample`` is ``None``): ``{per_query, batches, batches_sampled, count, in_passage_lang_share,
    group_clashes, sources}``. ``count``, ``in_passage_lang_share``, ``group_clashes`` (negatives of a group, or a
    text, of any positive of their batch) and ``sources`` (each of :data:`SOURCES`) are over the sampled batches.

    The choice reads each pair's listed ids and texts, so it is Python work per pair: an epoch of millions of pairs
    is summarised on a sample. Every batch that :func:`short_batches` finds on the arrays is chosen as well (and not
    counted unless sampled), so the error of :func:`choose_negatives` is raised for any batch of the epoch.

    Raises:
        ValueError: as :func:`choose_negatives`, for the first batch whose pairs cannot get ``k`` negatives.
    """
    sampled = set(spread(len(plan), sample).tolist())
    checked = sorted(sampled.union(short_batches(plan, corpora, k).tolist()))
    count = in_lang = clashes = 0
    sources = dict.fromkeys(SOURCES, 0)
    for index in checked:
        refs = with_negatives(corpora, plan.pairs(index), k, seed, epoch, index)
        if index not in sampled:
            continue
        corpus = corpora[refs[0].dataset]
        groups = {corpus.group[ref.parallel_id] for ref in refs}
        texts = {corpus.pairs[ref.p_lang][ref.parallel_id].passage for ref in refs}
        for ref in refs:
            for neg in ref.negatives:
                count += 1
                in_lang += int(neg.lang == ref.p_lang)
                sources[neg.source] += 1
                clashes += int(
                    corpus.group[neg.parallel_id] in groups
                    if neg.parallel_id is not None
                    else corpus.negatives[neg.lang][ref.parallel_id][neg.position] in texts
                )
    return {
        "per_query": k,
        "batches": len(plan),
        "batches_sampled": len(sampled),
        "count": count,
        "in_passage_lang_share": in_lang / count if count else None,
        "group_clashes": clashes,
        "sources": sources,
    }


def spread(n: int, sample: int | None) -> np.ndarray:
    """``sample`` indices of ``range(n)`` spread evenly from the first to the last (all of them when ``sample`` is
    ``None`` or at least ``n``)."""
    if sample is None or sample >= n:
        return np.arange(n)
    if sample < 1:
        raise ValueError(f"sample must be a positive number of batches or None, got {sample!r}")
    return np.unique(np.linspace(0, n - 1, sample).round().astype(np.int64))


def short_batches(plan: EpochPlan, corpora: Sequence[ParallelCorpus], k: int) -> np.ndarray:
    """The batches of ``plan`` (ascending) in which some pair's passage language has fewer than ``k`` ids outside
    the batch's answer groups: only there can :func:`choose_negatives` run out of random negatives (it needs at
    most ``k`` of them, and a listed negative it took is one of these ids). Counted on the corpora's integer arrays:
    the ids of a language minus those of the batch's distinct groups."""
    short = [np.empty(0, dtype=np.int64)]
    for d, corpus in enumerate(corpora):
        rows = np.flatnonzero(plan.dataset == d)
        if not rows.size:
            continue
        arrays = corpus.arrays
        values, group = np.unique(arrays.group, return_inverse=True)
        batch_groups = np.sort(group[plan.parallel_id[rows]], axis=1)
        first = np.ones(batch_groups.shape, dtype=bool)
        first[:, 1:] = batch_groups[:, 1:] != batch_groups[:, :-1]
        p_lang = plan.p_lang[rows]
        for col in np.flatnonzero(np.bincount(p_lang.ravel(), minlength=len(corpus.languages))).tolist():
            per_group = np.bincount(group[arrays.has_lang[:, col]], minlength=len(values))
            outside = per_group.sum() - (per_group[batch_groups] * first).sum(axis=1)
            short.append(rows[(p_lang == col).any(axis=1) & (outside < k)])
    return np.unique(np.concatenate(short))
