"""Hold out a validation part of a parallel training corpus.

:func:`hold_out` splits by *parallel id* and by *answer group*: a held-out id is held out in every language (no
translation of a validation question is trained on), and the ids of one group (ids whose answer passages
coincide in some language, see :class:`~hybrid_ir.data.corpus.ParallelCorpus`) all go to the same side (no
validation passage is a training positive). The split is a pure function of the corpus's ids and groups and the
seed: every DDP rank computes the same one, whatever the order in which the data was read.
"""

from __future__ import annotations

import math
from collections import defaultdict

import numpy as np

from hybrid_ir.data.corpus import ParallelCorpus

VAL_SUFFIX = "-val"


def group_members(corpus: ParallelCorpus) -> list[list[str]]:
    """The ids of each answer group, each list sorted, the groups ordered by their smallest id."""
    members: dict[int, list[str]] = defaultdict(list)
    for pid in corpus.pids:
        members[corpus.group[pid]].append(pid)
    return sorted((sorted(ids) for ids in members.values()), key=lambda ids: ids[0])


def restrict(corpus: ParallelCorpus, pids: set[str], name: str) -> ParallelCorpus:
    """``corpus`` limited to the ids ``pids`` (every language), named ``name``; languages left without an id
    are dropped."""
    pairs = {
        lang: {pid: pair for pid, pair in by_pid.items() if pid in pids}
        for lang, by_pid in corpus.pairs.items()
    }
    pairs = {lang: by_pid for lang, by_pid in pairs.items() if by_pid}
    return ParallelCorpus(
        name=name,
        languages=sorted(pairs),
        pairs=pairs,
        group={pid: g for pid, g in corpus.group.items() if pid in pids},
        source=corpus.source,
    )


def hold_out(corpus: ParallelCorpus, fraction: float, seed: int) -> tuple[ParallelCorpus, ParallelCorpus]:
    """Split ``corpus`` into ``(train, val)``, holding out about ``fraction`` of its ids as whole answer groups.

    The groups (:func:`group_members`) are shuffled with ``numpy.random.default_rng(seed)`` and taken in that
    order until at least ``ceil(fraction · ids)`` ids are held out, so ``val`` exceeds that target by less than
    the largest group. ``val`` is named ``<name>-val``.

    Raises:
        ValueError: ``fraction`` is not in (0, 1), or the split leaves either side without an id.
    """
    if not 0.0 < fraction < 1.0:
        raise ValueError(f"the validation fraction must be in (0, 1), got {fraction!r}")
    groups = group_members(corpus)
    target = math.ceil(fraction * len(corpus))
    held: set[str] = set()
    for index in np.random.default_rng(seed).permutation(len(groups)):
        if len(held) >= target:
            break
        held.update(groups[index])
    if len(held) == len(corpus):
        raise ValueError(
            f"{corpus.name}: holding out {fraction} of its {len(corpus)} ids as whole answer groups leaves no id "
            f"to train on ({len(groups)} groups)"
        )
    kept = set(corpus.pids) - held
    return restrict(corpus, kept, corpus.name), restrict(corpus, held, corpus.name + VAL_SUFFIX)
