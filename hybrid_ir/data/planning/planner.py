"""The epoch planner: batch composition for hybrid (monolingual / cross-lingual) contrastive training.

Follows the hybrid batching of arXiv 2408.10536 (with the LAReQA X-X-mono and X-Y baselines):

* ``mono`` (X-X-mono): every pair of a batch has query and passage in one language X; X is drawn
  uniformly among the dataset's training languages in which a full batch can still be formed.
* ``cross`` (X-Y): every pair has query language != passage language; each pair draws its ordered
  language pair uniformly among the ``k(k-1)`` ordered pairs of the ``k >= 2`` languages of its parallel_id.
* ``hybrid``: each batch is mono with probability ``alpha``, else cross. The kind is drawn from the
  same uniform number ``u`` in every mode (mono iff ``u < alpha``), so ``hybrid`` with ``alpha = 1``
  gives exactly the ``mono`` plan and ``alpha = 0`` exactly the ``cross`` plan. ``alpha`` is thus the
  mono probability of a batch of a dataset that can fill both kinds. When the drawn kind cannot be
  filled, the other kind is used: a dataset of one language (or whose ids all exist in one language)
  gives mono batches only, and so does a dataset whose cross batches ran out near the end of its pass.
  The realised share of mono batches (:meth:`EpochPlan.mono_share`, per dataset
  :meth:`EpochPlan.mono_batches_per_dataset`) is therefore above ``alpha`` when such a dataset is mixed
  in; the DataModule logs it every epoch.

With several datasets each batch comes from one dataset ``d``, drawn with probability ``p(d) = n_d**T / sum_e
n_e**T`` among the datasets that can still fill a batch (``n_d`` = number of parallel_ids, ``T`` = temperature). By
default an epoch is one pass without replacement over the parallel_ids of every dataset, so each dataset's share of
the epoch is ∝ its size whatever ``T`` (``T`` only orders the batches); with ``epoch_steps = N`` an epoch is
``N`` batches, the shares follow ``n_d**T``, and a dataset whose pass cannot fill another batch starts a new
pass (small datasets repeat, large ones are partly used; :data:`STEPS_DROP_REASONS`). A batch never holds a
parallel_id twice nor two parallel_ids of one ``group``; parallel_ids passed over for a group clash are deferred to
later batches, and parallel_ids lacking the batch's language wait for a batch that can use them. When no further full
batch can be formed, the rest is dropped (``EpochPlan.dropped``, with the reasons in ``EpochPlan.drop_reasons``: see
:data:`DROP_REASONS`).
Everything is drawn from one ``numpy.random.Generator`` seeded with ``(seed, epoch)``.

The planner works on each corpus's integer view (:attr:`~hybrid_ir.data.corpus.ParallelCorpus.arrays`: group
number and language mask per parallel_id index, built once per corpus) and keeps no Python object per parallel_id: per
dataset and epoch it holds a permutation, the permuted view and two flags per parallel_id (used, deferred), and it
reads each batch key's queue in windows with array operations. An :class:`EpochPlan` stores the batches as arrays
(parallel_id index, query and passage language index per pair) and builds :class:`PairRef` lists only for the batch
asked for, so a plan takes a few bytes per pair. The arrays planner makes the same draws in the same order as the
earlier per-parallel_id planner, so a seed gives the same plans as before.

See docs/method.md (the samplers).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import NamedTuple

import numpy as np

from hybrid_ir.data.corpus import ParallelCorpus
from hybrid_ir.data.planning.plan import BatchKind, EpochPlan, batch_kinds, capacity_note, check_sampler_args


def _first_of_group(groups: np.ndarray) -> np.ndarray:
    """Boolean mask of the first occurrence of each value of ``groups`` (a stable sort, as ``np.unique``'s
    ``return_index`` does, without its overhead: this runs a few times per batch)."""
    first = np.zeros(len(groups), dtype=bool)
    if len(groups) < 2:
        first[:] = True
        return first
    order = np.argsort(groups, kind="stable")
    ordered = groups[order]
    starts = np.empty(len(groups), dtype=bool)
    starts[0] = True
    np.not_equal(ordered[1:], ordered[:-1], out=starts[1:])
    first[order[starts]] = True
    return first


# Below this many comparisons, membership is tested by broadcasting (cheaper than ``np.isin``'s sort for the
# few dozen groups of one batch).
_BROADCAST_ISIN = 1 << 14


def _isin(values: np.ndarray, among: np.ndarray) -> np.ndarray:
    """``np.isin(values, among)``."""
    if values.size * among.size <= _BROADCAST_ISIN:
        return (values[:, None] == among[None, :]).any(axis=1)
    return np.isin(values, among)


class _Remaining:
    """Unused parallel_ids of one dataset for one epoch, as arrays over the epoch's random order of its parallel_ids.

    A *position* ``s`` is the ``s``-th parallel_id of that order (``order[s]`` = its parallel_id index). A batch key
    ``l`` (a language index) serves mono batches in language ``l``; key ``None`` serves cross batches (parallel_ids
    with >= 2 languages). The queue of a key is the positions usable under it, in order; ``pointer[key]`` marks how far
    it has been read. Positions passed over for a group clash are deferred (``deferred``, in order, and flagged
    in ``waiting``) and offered first to later batches, so every unused position of a key is deferred or at or
    after that key's pointer.
    """

    def __init__(self, index: int, corpus: ParallelCorpus, rng: np.random.Generator) -> None:
        arrays = corpus.arrays
        self.index = index
        self.order = rng.permutation(len(corpus.parallel_ids))
        self.group = arrays.group[self.order]
        self.has_lang = arrays.has_lang[self.order]
        self.multi = arrays.n_langs[self.order] >= 2
        self.used = np.zeros(len(self.order), dtype=bool)
        self.waiting = np.zeros(len(self.order), dtype=bool)
        self.deferred = np.empty(0, dtype=np.int64)
        self.mono_langs = list(range(len(corpus.languages)))
        self.pointer: dict[int | None, int] = dict.fromkeys([*self.mono_langs, None], 0)
        self.dead: set[int | None] = set()

    def _fits(self, key: int | None, positions: np.ndarray | slice) -> np.ndarray:
        """Which of ``positions`` can serve batch key ``key``."""
        return self.multi[positions] if key is None else self.has_lang[positions, key]

    def take(self, key: int | None, size: int) -> np.ndarray | None:
        """Remove and return ``size`` positions usable under ``key`` with distinct groups, or ``None``
        (and mark ``key`` dead) when fewer exist. Greedy in priority order (deferred positions, then the queue)
        picks one parallel_id per group, so a failure means the unused parallel_ids of ``key`` span fewer than ``size``
        groups; as parallel_ids are only ever removed, ``key`` stays infeasible for the rest of the epoch. The queue is
        read in windows of growing length, each handled with array operations."""
        if key in self.dead:
            return None
        if self.deferred.size:
            ready = self.deferred[self._fits(key, self.deferred)]
            picked = [ready[_first_of_group(self.group[ready])][:size]]
        else:
            picked = [self.deferred]
        taken_groups = self.group[picked[0]]
        need = size - len(picked[0])
        skipped: list[np.ndarray] = []
        j, n, window = self.pointer[key], len(self.order), 2 * size + 64
        while need > 0 and j < n:
            hi = min(n, j + window)
            free = self._fits(key, slice(j, hi)) & ~self.used[j:hi] & ~self.waiting[j:hi]
            candidates = j + np.flatnonzero(free)
            groups = self.group[candidates]
            pick = _first_of_group(groups) & ~_isin(groups, taken_groups)
            hits = np.flatnonzero(pick)
            if hits.size >= need:
                cut = int(hits[need - 1]) + 1
                candidates, pick, j = candidates[:cut], pick[:cut], int(candidates[cut - 1]) + 1
            else:
                j = hi
            picked.append(candidates[pick])
            skipped.append(candidates[~pick])
            taken_groups = np.concatenate([taken_groups, groups[: len(pick)][pick]])
            need -= int(pick.sum())
            window *= 2
        if need > 0:
            self.dead.add(key)
            return None
        positions = np.concatenate(picked)
        self.used[positions] = True
        self.waiting[positions] = False
        self.pointer[key] = j
        passed = np.concatenate(skipped) if skipped else self.deferred[:0]
        self.waiting[passed] = True
        if self.deferred.size:
            self.deferred = np.concatenate([self.deferred[~self.used[self.deferred]], passed])
        else:
            self.deferred = passed
        return positions

    def live_mono_langs(self) -> list[int]:
        """Language indices that may still fill a mono batch (not yet found infeasible)."""
        return [lang for lang in self.mono_langs if lang not in self.dead]

    def drop_reasons(self, kinds: Sequence[BatchKind]) -> dict[str, int]:
        """Why each unused parallel_id was left out (see :data:`DROP_REASONS`), for the batch ``kinds`` in play:
        single-language parallel_ids when only cross batches are drawn, then one ``partial_batch`` per distinct
        left-over group and ``group_clash`` for the others."""
        unused = np.flatnonzero(~self.used)
        single = np.zeros(len(unused), dtype=bool) if "mono" in kinds else ~self.multi[unused]
        usable = unused[~single]
        partial = len(np.unique(self.group[usable]))
        return {
            "one_language": int(single.sum()),
            "group_clash": len(usable) - partial,
            "partial_batch": partial,
        }


class _Drawn(NamedTuple):
    """One planned batch as arrays: kind (0 mono, 1 cross), mono language index (-1 cross), parallel_id indices and
    the query and passage language indices of its pairs."""

    kind: int
    lang: int
    parallel_id: np.ndarray
    q_lang: np.ndarray
    p_lang: np.ndarray


def _mono_batch(pool: _Remaining, size: int, rng: np.random.Generator) -> _Drawn | None:
    """A mono batch in a language drawn uniformly among the pool's languages that can still fill one."""
    while langs := pool.live_mono_langs():
        lang = langs[int(rng.integers(len(langs)))]
        picked = pool.take(lang, size)
        if picked is not None:
            same = np.full(size, lang, dtype=np.int8)
            return _Drawn(0, lang, pool.order[picked], same, same)
    return None


def _cross_batch(pool: _Remaining, size: int, rng: np.random.Generator) -> _Drawn | None:
    """A cross batch: per parallel_id with languages L (k >= 2), q = L[a], p = (L without q)[b], a, b uniform."""
    picked = pool.take(None, size)
    if picked is None:
        return None
    u = rng.random((len(picked), 2))
    has = pool.has_lang[picked]
    k = has.sum(axis=1)
    rows = np.arange(len(picked))
    q = np.argmax(np.cumsum(has, axis=1) > (u[:, 0] * k).astype(np.int64)[:, None], axis=1)
    has[rows, q] = False
    p = np.argmax(np.cumsum(has, axis=1) > (u[:, 1] * (k - 1)).astype(np.int64)[:, None], axis=1)
    return _Drawn(1, -1, pool.order[picked], q.astype(np.int8), p.astype(np.int8))


def _next_batch(
    pool: _Remaining, mode: str, alpha: float, size: int, rng: np.random.Generator
) -> _Drawn | None:
    """Draw the kind (mono iff ``u < alpha`` in hybrid mode) and build the batch; in hybrid mode fall
    back to the other kind when the drawn one cannot be filled (only the kinds with nonzero probability)."""
    u = rng.random()
    kinds = batch_kinds(mode, alpha)
    if len(kinds) == 2 and u >= alpha:
        kinds = ["cross", "mono"]
    for kind in kinds:
        batch = _mono_batch(pool, size, rng) if kind == "mono" else _cross_batch(pool, size, rng)
        if batch is not None:
            return batch
    return None


def plan_epoch(
    corpora: Sequence[ParallelCorpus],
    mode: str,
    batch_size: int,
    alpha: float,
    seed: int,
    epoch: int,
    temperature: float = 1.0,
    epoch_steps: int | None = None,
) -> EpochPlan:
    """All global batches of one epoch, deterministic in ``(seed, epoch)`` (see the module docstring).

    ``epoch_steps=None`` (exhaustive): one pass over every dataset. ``epoch_steps=N``: exactly ``N`` batches,
    each from a dataset drawn with probability ∝ size**temperature among those that can fill a batch; a dataset
    whose pass cannot fill another batch starts a new pass (a new random order), so small datasets repeat and
    large ones are partly used. An id is then in at most one batch per pass, never twice in one batch.

    Returns an :class:`EpochPlan`: a sequence of ``(BatchInfo, [PairRef] * batch_size)`` with the unused ids of
    each dataset and why they were left out. A dataset may contribute no batch (see
    :meth:`EpochPlan.batches_per_dataset`); the caller decides whether that is an error.
    Raises ValueError for invalid arguments or when not a single full batch can be formed (naming each
    dataset's :func:`batch_capacity`).
    """
    check_sampler_args(mode, batch_size, alpha, temperature, seed, epoch_steps)
    if not corpora:
        raise ValueError("no training datasets given")
    if not isinstance(epoch, int) or epoch < 0:
        raise ValueError(f"epoch must be a non-negative integer, got {epoch!r}")
    rng = np.random.default_rng([seed, epoch])
    pools = [_Remaining(d, corpus, rng) for d, corpus in enumerate(corpora)]
    weights = np.array([float(len(c)) ** temperature if len(c) else 0.0 for c in corpora])
    passes = [1] * len(corpora)
    fresh = [True] * len(corpora)  # the dataset's current pass has not given a batch yet
    seen = [np.zeros(len(c), dtype=bool) for c in corpora]
    drawn: list[_Drawn] = []
    datasets: list[int] = []
    while (live := np.flatnonzero(weights)).size and (epoch_steps is None or len(drawn) < epoch_steps):
        cdf = np.cumsum(weights[live])
        pick = min(int(np.searchsorted(cdf, rng.random() * cdf[-1], side="right")), live.size - 1)
        d = int(live[pick])
        batch = _next_batch(pools[d], mode, alpha, batch_size, rng)
        if batch is None and epoch_steps is not None and not fresh[d]:
            pools[d], fresh[d] = _Remaining(d, corpora[d], rng), True
            passes[d] += 1
        elif batch is None:
            weights[d] = 0.0
        else:
            drawn.append(batch)
            datasets.append(d)
            seen[d][batch.parallel_id] = True
            fresh[d] = False
    kinds = batch_kinds(mode, alpha)
    if not drawn:
        raise ValueError(
            f"no full batch of {batch_size} {mode} pairs can be formed: "
            + "; ".join(capacity_note(c, kinds) for c in corpora)
            + ". Lower data.batch_size to at most the largest of these, or check the languages"
        )
    return EpochPlan(
        corpora,
        kind=np.array([b.kind for b in drawn], dtype=np.int8),
        dataset=np.array(datasets, dtype=np.int32),
        lang=np.array([b.lang for b in drawn], dtype=np.int16),
        parallel_id=np.stack([b.parallel_id for b in drawn]).astype(
            np.int32 if max(map(len, corpora)) < 2**31 else np.int64
        ),
        q_lang=np.stack([b.q_lang for b in drawn]),
        p_lang=np.stack([b.p_lang for b in drawn]),
        dropped=[len(s) - int(np.count_nonzero(s)) for s in seen],
        drop_reasons=[
            pool.drop_reasons(kinds) if epoch_steps is None else _steps_drop_reasons(c, s, kinds)
            for pool, c, s in zip(pools, corpora, seen, strict=True)
        ],
        passes=passes,
    )


def _steps_drop_reasons(
    corpus: ParallelCorpus, seen: np.ndarray, kinds: Sequence[BatchKind]
) -> dict[str, int]:
    """Why the ids outside ``seen`` were left out of an epoch of ``epoch_steps`` (see :data:`STEPS_DROP_REASONS`)."""
    unseen = ~seen
    single = unseen & (corpus.arrays.n_langs < 2) if "mono" not in kinds else np.zeros_like(unseen)
    n_single = int(np.count_nonzero(single))
    return {"one_language": n_single, "not_drawn": int(np.count_nonzero(unseen)) - n_single}
