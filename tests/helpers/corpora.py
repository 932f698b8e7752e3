"""In-memory parallel corpora for the planner, sampler, split and statistics tests, and the views of a corpus that
only tests need (the languages of one id, the ids of each answer group)."""

from __future__ import annotations

from collections import defaultdict

import numpy as np

from hybrid_ir.data.corpus import ParallelCorpus, QAPair

MIXED_LANGS = ["de", "en", "es", "zh"]


def make_corpus(
    n: int,
    langs: list[str],
    name: str = "gen",
    group_sizes: list[int] | None = None,
    subsets: bool = False,
    seed: int = 0,
) -> ParallelCorpus:
    """``n`` parallel_ids ``<name>-000000`` … in all of ``langs`` (or, with ``subsets``, in a random non-empty subset
    of them, drawn with ``seed``). ``group_sizes`` cycles through the sizes of consecutive groups (default: every
    parallel_id alone). Question and passage of id ``i`` in ``lang`` are ``q <id> <lang>`` and ``p <id> <lang>``."""
    rng = np.random.default_rng(seed)
    pairs: dict[str, dict[str, QAPair]] = {lang: {} for lang in langs}
    group: dict[str, int] = {}
    sizes = group_sizes or [1]
    g, left, k = 0, sizes[0], 0
    for i in range(n):
        parallel_id = f"{name}-{i:06d}"
        present = langs
        if subsets:
            present = [lang for lang in langs if rng.random() < 0.5] or [langs[int(rng.integers(len(langs)))]]
        for lang in present:
            pairs[lang][parallel_id] = QAPair(
                parallel_id, lang, f"q {parallel_id} {lang}", f"p {parallel_id} {lang}"
            )
        if left == 0:
            g, k = g + 1, k + 1
            left = sizes[k % len(sizes)]
        group[parallel_id] = g
        left -= 1
    return ParallelCorpus(name=name, languages=sorted(langs), pairs=pairs, group=group)


def mixed_corpus(n: int = 400, order_seed: int | None = None) -> ParallelCorpus:
    """``n`` ids in 1-4 languages each, in answer groups of 1-5 ids. The content depends on ``n`` only;
    ``order_seed`` shuffles the order in which ids and languages are inserted and renumbers the groups (as
    another reader of the same data might)."""
    rng = np.random.default_rng(7)
    parallel_ids = [f"q{i:05d}" for i in range(n)]
    langs = {
        parallel_id: sorted(rng.choice(MIXED_LANGS, size=int(rng.integers(1, 5)), replace=False))
        for parallel_id in parallel_ids
    }
    group, g, i = {}, 0, 0
    while i < n:
        size = int(rng.integers(1, 6))
        for parallel_id in parallel_ids[i : i + size]:
            group[parallel_id] = g
        g, i = g + 1, i + size
    order, lang_order = list(parallel_ids), list(MIXED_LANGS)
    if order_seed is not None:
        shuffle = np.random.default_rng(order_seed)
        order = [parallel_ids[k] for k in shuffle.permutation(n)]
        lang_order = [MIXED_LANGS[k] for k in shuffle.permutation(len(MIXED_LANGS))]
        relabel = {old: int(new) for old, new in enumerate(shuffle.permutation(g))}
        group = {parallel_id: relabel[group[parallel_id]] for parallel_id in order}
    pairs: dict[str, dict[str, QAPair]] = {lang: {} for lang in lang_order}
    for parallel_id in order:
        for lang in langs[parallel_id]:
            pairs[lang][parallel_id] = QAPair(
                parallel_id, lang, f"question {parallel_id} {lang}", f"passage {parallel_id} {lang}"
            )
    return ParallelCorpus(name="toy", languages=sorted(MIXED_LANGS), pairs=pairs, group=group)


def langs_of(corpus: ParallelCorpus, parallel_id: str) -> list[str]:
    """The languages (sorted) in which ``parallel_id`` exists in ``corpus``."""
    return [lang for lang in corpus.languages if parallel_id in corpus.pairs.get(lang, {})]


def group_members(corpus: ParallelCorpus) -> list[list[str]]:
    """The ids of each answer group of ``corpus``, each list sorted, the groups ordered by their smallest id."""
    members: dict[int, list[str]] = defaultdict(list)
    for parallel_id in corpus.parallel_ids:
        members[corpus.group[parallel_id]].append(parallel_id)
    return sorted((sorted(ids) for ids in members.values()), key=lambda ids: ids[0])
