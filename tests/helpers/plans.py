"""Checks of epoch plans that must hold for every batch, written independently of the planner and of
:func:`~hybrid_ir.data.planning.stats.batch_stats`, and a binomial tolerance for the planner's random shares."""

from __future__ import annotations

import math
from collections import Counter

from hybrid_ir.data.corpus import ParallelCorpus
from hybrid_ir.data.planning.plan import BatchInfo, EpochPlan, PairRef
from tests.helpers.corpora import langs_of


def binomial_ok(successes: int, trials: int, p: float, z: float = 4.5) -> bool:
    """``|successes / trials - p| <= z * sqrt(p (1 - p) / trials)``."""
    return abs(successes / trials - p) <= z * math.sqrt(p * (1 - p) / trials)


def check_batch(info: BatchInfo, batch: list[PairRef], corpora: list[ParallelCorpus], size: int) -> None:
    """Assert the invariants of one batch: ``size`` pairs of one dataset, distinct ids of distinct answer groups,
    languages the id exists in, one language (``info.lang``) in a mono batch and two in each pair of a cross one."""
    assert len(batch) == size
    corpus = corpora[info.dataset]
    assert all(ref.dataset == info.dataset for ref in batch)
    assert len({ref.parallel_id for ref in batch}) == size, "a parallel_id twice in one batch"
    assert len({corpus.group[ref.parallel_id] for ref in batch}) == size, (
        "two parallel_ids of one group in one batch"
    )
    for ref in batch:
        langs = langs_of(corpus, ref.parallel_id)
        assert ref.q_lang in langs and ref.p_lang in langs
        if info.kind == "mono":
            assert ref.q_lang == ref.p_lang == info.lang
        else:
            assert info.lang is None and ref.q_lang != ref.p_lang


def check_plan(plan: EpochPlan, corpora: list[ParallelCorpus], size: int) -> None:
    """Every batch valid (:func:`check_batch`), every parallel_id at most once, used + dropped = all parallel_ids
    (an exhaustive epoch: one pass over each dataset)."""
    used: Counter[tuple[int, str]] = Counter()
    for info, batch in plan:
        check_batch(info, batch, corpora, size)
        used.update((ref.dataset, ref.parallel_id) for ref in batch)
    assert max(used.values()) == 1
    for d, corpus in enumerate(corpora):
        n_used = sum(1 for key in used if key[0] == d)
        assert n_used + plan.dropped[d] == len(corpus)
