"""A smaller, self-consistent LAReQA benchmark for quick evaluations (e.g. during training).

:func:`subset_pool` keeps a seeded random set of parallel question ids, their queries, and the whole
paragraphs (in every language) that hold their answer sentences, so each kept question still competes
against the other sentences of its own paragraphs and against every other kept paragraph.

See docs/method.md (metrics and language bias).
"""

from __future__ import annotations

import numpy as np

from hybrid_ir.data.corpus import RetrievalBenchmark


def choose_ids(ids: list[str], limit: int, seed: int) -> set[str]:
    """The first ``limit`` ids of a permutation (seeded by ``seed``) of the sorted distinct ``ids``."""
    ordered = sorted(set(ids))
    perm = np.random.default_rng(seed).permutation(len(ordered))
    return {ordered[i] for i in perm[:limit]}


def subset_pool(bench: RetrievalBenchmark, max_qids: int, seed: int = 0) -> RetrievalBenchmark:
    """Restrict ``bench`` to ``max_qids`` parallel question ids and the paragraphs of their answers.

    * kept ids: the first ``max_qids`` of a permutation (seeded by ``seed``) of the sorted ids of
      ``bench.relevant``;
    * candidates: every candidate whose paragraph ``(lang, context)`` holds the answer sentence of a
      kept id in that language, in the original order (so all sentences of those paragraphs stay as
      distractors, and the pool keeps every language in which a kept id exists);
    * queries: those of the kept ids, in the original order;
    * ``relevant``: the kept ids, remapped to the new candidate indices.

    Deterministic for a given ``(bench, max_qids, seed)``. ``bench`` itself is returned when
    ``max_qids`` is at least the number of ids.

    Args:
        bench: a LAReQA benchmark whose candidates carry their paragraph in ``Candidate.context``.
        max_qids: number of question ids to keep, >= 1.
        seed: seed of the permutation.

    Returns:
        the smaller :class:`RetrievalBenchmark` (same name and language list).
    """
    if max_qids < 1:
        raise ValueError(f"max_qids must be >= 1, got {max_qids}")
    if max_qids >= len(bench.relevant):
        return bench
    kept = choose_ids(list(bench.relevant), max_qids, seed)
    paragraphs = {
        (bench.candidates[index].lang, bench.candidates[index].context)
        for qid in kept
        for index in bench.relevant[qid].values()
    }
    old_indices = [i for i, c in enumerate(bench.candidates) if (c.lang, c.context) in paragraphs]
    new_index = {old: new for new, old in enumerate(old_indices)}
    relevant = {
        qid: {lang: new_index[index] for lang, index in per_lang.items()}
        for qid, per_lang in bench.relevant.items()
        if qid in kept
    }
    return RetrievalBenchmark(
        name=bench.name,
        languages=list(bench.languages),
        queries=[q for q in bench.queries if q.qid in kept],
        candidates=[bench.candidates[i] for i in old_indices],
        relevant=relevant,
    )
