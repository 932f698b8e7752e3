"""Batch composition for hybrid (monolingual / cross-lingual) contrastive training.

Follows the hybrid batching of arXiv 2408.10536 (with the LAReQA X-X-mono and X-Y baselines):

* ``mono`` (X-X-mono): every pair of a batch has query and passage in one language X; X is drawn
  uniformly among the dataset's training languages in which a full batch can still be formed.
* ``cross`` (X-Y): every pair has query language != passage language; each pair draws its ordered
  language pair uniformly among the ``k(k-1)`` ordered pairs of the ``k >= 2`` languages of its pid.
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
n_e**T`` among the datasets that can still fill a batch (``n_d`` = number of pids, ``T`` = temperature). By
default an epoch is one pass without replacement over the pids of every dataset, so each dataset's share of
the epoch is ∝ its size whatever ``T`` (``T`` only orders the batches); with ``epoch_steps = N`` an epoch is
``N`` batches, the shares follow ``n_d**T``, and a dataset whose pass cannot fill another batch starts a new
pass (small datasets repeat, large ones are partly used; :data:`STEPS_DROP_REASONS`). A batch never holds a
pid twice nor two pids of one ``group``; pids passed over for a group clash are deferred to later batches, and
pids lacking the batch's language wait for a batch that can use them. When no further full batch can be
formed, the rest is dropped (``EpochPlan.dropped``, with the reasons in ``EpochPlan.drop_reasons``: see
:data:`DROP_REASONS`).
Everything is drawn from one ``numpy.random.Generator`` seeded with ``(seed, epoch)``.

The planner works on each corpus's integer view (:attr:`~hybrid_ir.data.corpus.ParallelCorpus.arrays`: group
number and language mask per pid index, built once per corpus) and keeps no Python object per pid: per dataset
and epoch it holds a permutation, the permuted view and two flags per pid (used, deferred), and it reads each
batch key's queue in windows with array operations. An :class:`EpochPlan` stores the batches as arrays (pid
index, query and passage language index per pair) and builds :class:`PairRef` lists only for the batch asked
for, so a plan takes a few bytes per pair. The arrays planner makes the same draws in the same order as the
earlier per-pid planner, so a seed gives the same plans as before.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator, Mapping, Sequence
from typing import Any, Literal, NamedTuple, overload

import numpy as np
from torch.utils.data import Sampler

from hybrid_ir.data.corpus import ParallelCorpus
from hybrid_ir.utils.errors import ConfigError

MODES = ("mono", "cross", "hybrid")
BatchKind = Literal["mono", "cross"]
# Why an id of a dataset was left out of an epoch's batches.
DROP_REASONS = {
    "one_language": "exists in one language only (a cross-lingual batch needs two)",
    "group_clash": "shares its answer group with another left-over id (a batch holds one id per group)",
    "partial_batch": "left over when fewer distinct answer groups than one batch remained",
}
# Why an id was left out of an epoch of a fixed number of batches (``epoch_steps``).
STEPS_DROP_REASONS = {
    "one_language": DROP_REASONS["one_language"],
    "not_drawn": "in no batch of this epoch (an epoch of sampler.epoch_steps batches uses part of a large dataset)",
}


class PairRef(NamedTuple):
    """One training pair: question of ``pid`` in ``q_lang`` against its passage in ``p_lang``."""

    dataset: int
    pid: str
    q_lang: str
    p_lang: str


class BatchInfo(NamedTuple):
    """Metadata of a batch: its kind, its dataset and (mono only) its language."""

    kind: BatchKind
    dataset: int
    lang: str | None


Batch = tuple[BatchInfo, list[PairRef]]


class EpochPlan(Sequence[Batch]):
    """The batches of one epoch, stored as integer arrays and read as a sequence of :data:`Batch`.

    ``plan[i]`` builds batch ``i``'s :class:`BatchInfo` and :class:`PairRef` list on demand (a slice gives a list of
    batches); :meth:`pairs` builds only part of a batch (a rank's slice). ``dropped[d]`` = unused pids of dataset
    ``d``; ``drop_reasons[d]`` = ``{reason: count}`` over :data:`DROP_REASONS` (over :data:`STEPS_DROP_REASONS` for
    an epoch of ``epoch_steps``; the counts sum to ``dropped[d]``); ``passes[d]`` = passes over dataset ``d`` begun
    in the epoch (1 unless the epoch is a number of steps). Arrays, one row per batch: ``kind`` (0 mono, 1 cross),
    ``dataset``, ``lang`` (mono language's index in the dataset's ``languages``, -1 for cross); one row per batch
    and one column per pair: ``pid`` (index into the dataset's ``pids``), ``q_lang`` and ``p_lang`` (indices into
    its ``languages``).
    Two plans are equal when they hold the same batches.
    """

    def __init__(
        self,
        corpora: Sequence[ParallelCorpus],
        kind: np.ndarray,
        dataset: np.ndarray,
        lang: np.ndarray,
        pid: np.ndarray,
        q_lang: np.ndarray,
        p_lang: np.ndarray,
        dropped: Sequence[int],
        drop_reasons: Sequence[Mapping[str, int]],
        passes: Sequence[int] | None = None,
    ) -> None:
        self.corpora = list(corpora)
        self.kind, self.dataset, self.lang = kind, dataset, lang
        self.pid, self.q_lang, self.p_lang = pid, q_lang, p_lang
        self.dropped = [int(n) for n in dropped]
        self.drop_reasons = [dict(r) for r in drop_reasons]
        self.passes = list(passes) if passes is not None else [1] * len(self.corpora)

    def __len__(self) -> int:
        return len(self.kind)

    @overload
    def __getitem__(self, index: int) -> Batch: ...

    @overload
    def __getitem__(self, index: slice) -> list[Batch]: ...

    def __getitem__(self, index: int | slice) -> Batch | list[Batch]:
        if isinstance(index, slice):
            return [self[i] for i in range(*index.indices(len(self)))]
        return self.info(index), self.pairs(index)

    def info(self, index: int) -> BatchInfo:
        """The :class:`BatchInfo` of batch ``index``."""
        d = int(self.dataset[index])
        if self.kind[index] == 0:
            return BatchInfo("mono", d, self.corpora[d].languages[int(self.lang[index])])
        return BatchInfo("cross", d, None)

    def pairs(self, index: int, lo: int = 0, hi: int | None = None) -> list[PairRef]:
        """Pairs ``lo:hi`` of batch ``index``."""
        d = int(self.dataset[index])
        pids, langs = self.corpora[d].pids, self.corpora[d].languages
        rows = zip(
            self.pid[index, lo:hi].tolist(),
            self.q_lang[index, lo:hi].tolist(),
            self.p_lang[index, lo:hi].tolist(),
            strict=True,
        )
        return [PairRef(d, pids[i], langs[q], langs[p]) for i, q, p in rows]

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Sequence) or isinstance(other, str):
            return NotImplemented
        return len(self) == len(other) and all(self[i] == other[i] for i in range(len(self)))

    __hash__ = None  # type: ignore[assignment]

    def batches_per_dataset(self, n_datasets: int) -> list[int]:
        """Number of batches drawn from each of the ``n_datasets`` datasets."""
        return np.bincount(self.dataset, minlength=n_datasets).tolist()

    def mono_batches_per_dataset(self, n_datasets: int) -> list[int]:
        """Number of mono batches drawn from each of the ``n_datasets`` datasets."""
        return np.bincount(self.dataset[self.kind == 0], minlength=n_datasets).tolist()

    def mono_share(self) -> float:
        """The realised share of mono batches in the plan (0.0 for an empty plan)."""
        return float(np.mean(self.kind == 0)) if len(self) else 0.0


def concat_plans(plans: Sequence[EpochPlan]) -> EpochPlan:
    """The batches of ``plans`` (of one set of corpora and one batch size) one after the other; ``dropped[d]``
    counts the ids of dataset ``d`` that no plan uses (no ``drop_reasons``), ``passes`` sums the plans'."""
    first = plans[0]
    n = len(first.corpora)
    joined = {k: np.concatenate([getattr(p, k) for p in plans]) for k in ("kind", "dataset", "lang")}
    pid, q_lang, p_lang = (
        np.concatenate([getattr(p, k) for p in plans]) for k in ("pid", "q_lang", "p_lang")
    )
    used = [np.unique(pid[joined["dataset"] == d]).size for d in range(n)]
    return EpochPlan(
        first.corpora,
        joined["kind"],
        joined["dataset"],
        joined["lang"],
        pid,
        q_lang,
        p_lang,
        [len(c) - u for c, u in zip(first.corpora, used, strict=True)],
        [{} for _ in range(n)],
        [sum(p.passes[d] for p in plans) for d in range(n)],
    )


def batch_kinds(mode: str, alpha: float) -> list[BatchKind]:
    """The batch kinds ``mode`` can draw (hybrid: both unless ``alpha`` is 0 or 1)."""
    if mode == "mono" or (mode == "hybrid" and alpha >= 1.0):
        return ["mono"]
    if mode == "cross" or (mode == "hybrid" and alpha <= 0.0):
        return ["cross"]
    return ["mono", "cross"]


def batch_capacity(corpus: ParallelCorpus, kind: BatchKind) -> int:
    """The largest batch of ``kind`` that ``corpus`` can fill: the number of distinct answer groups among its
    ids in the best language (mono) or among its ids in >= 2 languages (cross). Ids whose answers coincide
    form one group, so this can be far below the number of ids."""
    arrays = corpus.arrays
    if kind == "cross":
        return len(np.unique(arrays.group[arrays.n_langs >= 2]))
    return max((len(np.unique(arrays.group[has])) for has in arrays.has_lang.T), default=0)


def check_global_batch_size(batch_size: object, world_size: int, key: str = "data.batch_size") -> None:
    """The training batch rule: ``data.batch_size`` (the global batch) is an integer >= 2 (InfoNCE needs at
    least one in-batch negative per query) and a multiple of the number of ranks ``world_size``, so that every
    rank gets the same number of pairs. Raises ConfigError naming ``key`` and saying which part fails."""
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
        raise ConfigError(
            f"{key}={batch_size!r} is the global batch: it must be a positive multiple of the number "
            f"of ranks (devices × num_nodes = {world_size})"
        )
    if batch_size < 2:
        raise ConfigError(
            f"{key}={batch_size} is the global batch: it needs at least 2 pairs, because InfoNCE "
            "contrasts each query with the other pairs' passages (with 1 pair there is no negative and the loss "
            "is exactly 0)"
        )
    if batch_size < world_size or batch_size % world_size:
        raise ConfigError(
            f"{key}={batch_size} is the global batch: it must be a multiple of the number of ranks "
            f"(devices × num_nodes = {world_size}) and at least that, so that every rank gets the same number "
            "of pairs"
        )


def check_sampler_args(
    mode: str, batch_size: int, alpha: float, temperature: float, seed: int, epoch_steps: int | None = None
) -> None:
    """Raise ValueError naming the allowed values when any argument is out of range."""
    if mode not in MODES:
        raise ValueError(f"mode must be one of {MODES}, got {mode!r}")
    if not isinstance(batch_size, int) or batch_size < 1:
        raise ValueError(f"batch size must be a positive integer, got {batch_size!r}")
    if not 0.0 <= alpha <= 1.0:
        raise ValueError(f"alpha (probability of a monolingual batch) must be in [0, 1], got {alpha!r}")
    if not (math.isfinite(temperature) and temperature >= 0.0):
        raise ValueError(f"temperature must be a finite number >= 0, got {temperature!r}")
    if not isinstance(seed, int) or seed < 0:
        raise ValueError(f"seed must be a non-negative integer, got {seed!r}")
    if epoch_steps is not None and (
        isinstance(epoch_steps, bool) or not isinstance(epoch_steps, int) or epoch_steps < 1
    ):
        raise ValueError(
            f"epoch_steps (sampler.epoch_steps) must be a positive number of batches, or null for one pass over "
            f"every dataset, got {epoch_steps!r}"
        )


def _first_of_group(groups: np.ndarray) -> np.ndarray:
    """Boolean mask of the first occurrence of each value of ``groups``."""
    first = np.zeros(len(groups), dtype=bool)
    first[np.unique(groups, return_index=True)[1]] = True
    return first


class _Pool:
    """Unused pids of one dataset for one epoch, as arrays over the epoch's random order of its pids.

    A *position* ``s`` is the ``s``-th pid of that order (``order[s]`` = its pid index). A batch key ``l``
    (a language index) serves mono batches in language ``l``; key ``None`` serves cross batches (pids with >= 2
    languages). The queue of a key is the positions usable under it, in order; ``pointer[key]`` marks how far
    it has been read. Positions passed over for a group clash are deferred (``deferred``, in order, and flagged
    in ``waiting``) and offered first to later batches, so every unused position of a key is deferred or at or
    after that key's pointer.
    """

    def __init__(self, index: int, corpus: ParallelCorpus, rng: np.random.Generator) -> None:
        arrays = corpus.arrays
        self.index = index
        self.order = rng.permutation(len(corpus.pids))
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
        picks one pid per group, so a failure means the unused pids of ``key`` span fewer than ``size`` groups;
        as pids are only ever removed, ``key`` stays infeasible for the rest of the epoch. The queue is read in
        windows of growing length, each handled with array operations."""
        if key in self.dead:
            return None
        ready = self.deferred[self._fits(key, self.deferred)]
        picked = [ready[_first_of_group(self.group[ready])][:size]]
        taken_groups = self.group[picked[0]]
        need = size - len(picked[0])
        skipped: list[np.ndarray] = []
        j, n, window = self.pointer[key], len(self.order), 2 * size + 64
        while need > 0 and j < n:
            hi = min(n, j + window)
            free = self._fits(key, slice(j, hi)) & ~self.used[j:hi] & ~self.waiting[j:hi]
            candidates = j + np.flatnonzero(free)
            groups = self.group[candidates]
            pick = _first_of_group(groups) & ~np.isin(groups, taken_groups)
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
        self.deferred = np.concatenate([self.deferred[~self.used[self.deferred]], passed])
        return positions

    def live_mono_langs(self) -> list[int]:
        """Language indices that may still fill a mono batch (not yet found infeasible)."""
        return [lang for lang in self.mono_langs if lang not in self.dead]

    def n_unused(self) -> int:
        """Number of pids not placed in any batch so far."""
        return int(len(self.used) - np.count_nonzero(self.used))

    def drop_reasons(self, kinds: Sequence[BatchKind]) -> dict[str, int]:
        """Why each unused pid was left out (see :data:`DROP_REASONS`), for the batch ``kinds`` in play:
        single-language pids when only cross batches are drawn, then one ``partial_batch`` per distinct
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
    """One planned batch as arrays: kind (0 mono, 1 cross), mono language index (-1 cross), pid indices and
    the query and passage language indices of its pairs."""

    kind: int
    lang: int
    pid: np.ndarray
    q_lang: np.ndarray
    p_lang: np.ndarray


def _mono_batch(pool: _Pool, size: int, rng: np.random.Generator) -> _Drawn | None:
    """A mono batch in a language drawn uniformly among the pool's languages that can still fill one."""
    while langs := pool.live_mono_langs():
        lang = langs[int(rng.integers(len(langs)))]
        picked = pool.take(lang, size)
        if picked is not None:
            same = np.full(size, lang, dtype=np.int8)
            return _Drawn(0, lang, pool.order[picked], same, same)
    return None


def _cross_batch(pool: _Pool, size: int, rng: np.random.Generator) -> _Drawn | None:
    """A cross batch: per pid with languages L (k >= 2), q = L[a], p = (L without q)[b], a, b uniform."""
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


def _next_batch(pool: _Pool, mode: str, alpha: float, size: int, rng: np.random.Generator) -> _Drawn | None:
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
    pools = [_Pool(d, corpus, rng) for d, corpus in enumerate(corpora)]
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
            pools[d], fresh[d] = _Pool(d, corpora[d], rng), True
            passes[d] += 1
        elif batch is None:
            weights[d] = 0.0
        else:
            drawn.append(batch)
            datasets.append(d)
            seen[d][batch.pid] = True
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
        pid=np.stack([b.pid for b in drawn]).astype(np.int32 if max(map(len, corpora)) < 2**31 else np.int64),
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


def capacity_note(corpus: ParallelCorpus, kinds: Sequence[BatchKind]) -> str:
    """``"<name>: N ids, at most C pairs per mono batch, ..."``: why a dataset cannot fill a larger batch."""
    parts = []
    for kind in kinds:
        cap = batch_capacity(corpus, kind)
        if kind == "mono":
            parts.append(f"at most {cap} pairs per mono batch (distinct answer groups in its best language)")
        else:
            multi = int(np.count_nonzero(corpus.arrays.n_langs >= 2))
            parts.append(
                f"at most {cap} pairs per cross batch (distinct answer groups among its {multi} ids "
                f"in >= 2 of its languages {corpus.languages})"
            )
    return f"{corpus.name}: {len(corpus)} ids, " + ", ".join(parts)


class HybridBatchSampler(Sampler[list[PairRef]]):
    """Distributed batch sampler over :func:`plan_epoch` (use it as a DataLoader ``batch_sampler``).

    Rank ``r`` of ``W`` yields ``batch[r * B / W : (r + 1) * B / W]`` of each global batch of size ``B``,
    so the ranks' slices, concatenated, are the global batch. ``len()`` = number of batches in the
    current epoch. Handing out the last batch of an epoch advances to the next epoch (batch 0), so
    iterating again gives the next epoch, whether the previous iterator was exhausted or dropped right
    after its last batch (as Lightning does, knowing the length). An iterator abandoned mid-epoch
    (``limit_train_batches``, a stop) leaves the position there: call :meth:`set_epoch` with the next
    epoch to start it from its first batch (the DataModule's loader does so before every pass).
    ``state_dict`` / ``load_state_dict`` resume in the middle of an epoch at the next batch (batches
    already handed to a DataLoader's prefetch queue count as yielded). The sampler does its own
    sharding, so with Lightning set ``Trainer(use_distributed_sampler=False)``.
    ``epoch_steps``: see :func:`plan_epoch` (``None``: one pass over every dataset per epoch).
    ``on_plan(epoch, plan)``, when given, is called once for every epoch plan the sampler computes (e.g. to
    log what the epoch uses and drops).
    """

    def __init__(
        self,
        corpora: Sequence[ParallelCorpus],
        mode: str,
        global_batch_size: int,
        alpha: float = 0.5,
        seed: int = 0,
        temperature: float = 1.0,
        rank: int = 0,
        world_size: int = 1,
        on_plan: Callable[[int, EpochPlan], None] | None = None,
        epoch_steps: int | None = None,
    ) -> None:
        check_sampler_args(mode, global_batch_size, alpha, temperature, seed, epoch_steps)
        if not isinstance(world_size, int) or world_size < 1:
            raise ValueError(f"world_size must be a positive integer, got {world_size!r}")
        check_global_batch_size(global_batch_size, world_size)
        if not isinstance(rank, int) or not 0 <= rank < world_size:
            raise ValueError(f"rank must be in [0, {world_size}), got {rank!r}")
        if not corpora:
            raise ValueError("no training datasets given")
        super().__init__()
        self.corpora = list(corpora)
        self.mode = mode
        self.global_batch_size = global_batch_size
        self.alpha = alpha
        self.seed = seed
        self.temperature = temperature
        self.epoch_steps = epoch_steps
        self.rank = rank
        self.world_size = world_size
        self.on_plan = on_plan
        self.epoch = 0
        self.batches_yielded = 0
        self._plans: dict[tuple[int, int], EpochPlan] = {}

    def plan(self, epoch: int | None = None) -> EpochPlan:
        """The global plan of ``epoch`` (default: the current one); the last two plans are cached."""
        epoch = self.epoch if epoch is None else epoch
        key = (self.seed, epoch)
        if key not in self._plans:
            plan = plan_epoch(
                self.corpora,
                self.mode,
                self.global_batch_size,
                self.alpha,
                self.seed,
                epoch,
                self.temperature,
                self.epoch_steps,
            )
            while len(self._plans) >= 2:
                del self._plans[next(iter(self._plans))]
            self._plans[key] = plan
            if self.on_plan is not None:
                self.on_plan(epoch, plan)
        return self._plans[key]

    def __len__(self) -> int:
        return len(self.plan())

    def set_epoch(self, epoch: int) -> None:
        """Select the epoch; a different epoch than the current one restarts at its first batch."""
        if epoch != self.epoch:
            self.epoch = epoch
            self.batches_yielded = 0

    def __iter__(self) -> Iterator[list[PairRef]]:
        epoch, plan = self.epoch, self.plan()
        per_rank = self.global_batch_size // self.world_size
        lo, hi = self.rank * per_rank, (self.rank + 1) * per_rank
        for index in range(self.batches_yielded, len(plan)):
            # Advance before handing out the last batch: a consumer that stops after it (without asking
            # for one more) must still find the sampler at the start of the next epoch.
            if index + 1 == len(plan):
                self.epoch, self.batches_yielded = epoch + 1, 0
            else:
                self.batches_yielded = index + 1
            yield plan.pairs(index, lo, hi)

    def state_dict(self) -> dict[str, int]:
        """``{"epoch", "batches_yielded", "seed"}``: enough to continue at the next batch."""
        return {"epoch": self.epoch, "batches_yielded": self.batches_yielded, "seed": self.seed}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        """Restore :meth:`state_dict` output (its seed replaces the constructor's, for an exact resume)."""
        missing = {"epoch", "batches_yielded", "seed"} - set(state)
        if missing:
            raise ValueError(
                f"sampler state lacks {sorted(missing)}; expected keys epoch, batches_yielded, seed"
            )
        self.seed, self.epoch = int(state["seed"]), int(state["epoch"])
        done = int(state["batches_yielded"])
        if not 0 <= done <= len(self.plan()):
            raise ValueError(
                f"batches_yielded={done} is outside [0, {len(self.plan())}] for epoch {self.epoch}"
            )
        self.batches_yielded = done
        if done == len(self.plan()):
            self.epoch, self.batches_yielded = self.epoch + 1, 0


def dataset_usage(plan: EpochPlan, corpora: Sequence[ParallelCorpus]) -> list[dict[str, Any]]:
    """Per dataset of ``plan``: ``{name, ids, used_ids, dropped_ids, drop_reasons, batches, mono_batches, passes}``
    (JSON-serialisable; ``passes``: passes over the dataset begun in the epoch)."""
    batches = plan.batches_per_dataset(len(corpora))
    mono = plan.mono_batches_per_dataset(len(corpora))
    reasons = plan.drop_reasons or [{} for _ in corpora]
    return [
        {
            "name": corpus.name,
            "ids": len(corpus),
            "used_ids": len(corpus) - plan.dropped[d],
            "dropped_ids": plan.dropped[d],
            "drop_reasons": reasons[d],
            "batches": batches[d],
            "mono_batches": mono[d],
            "passes": plan.passes[d],
        }
        for d, corpus in enumerate(corpora)
    ]


def batch_stats(
    plan: Sequence[Batch], languages: Sequence[str], corpora: Sequence[ParallelCorpus] | None = None
) -> dict[str, Any]:
    """Summary of a plan, JSON-serialisable.

    Keys: ``batches``, ``pairs``, ``kinds`` ({mono, cross} -> batches), ``mono_share`` (realised share of mono
    batches), ``batches_per_dataset``,
    ``mono_batches_per_lang``, ``languages`` and ``lang_pairs`` (``lang_pairs[i][j]`` = pairs with
    query language ``languages[i]`` and passage language ``languages[j]``), ``impure_pairs`` (pairs
    whose languages contradict their batch kind), ``duplicate_pids`` (repeats of a pid inside a batch),
    ``reused_pids`` (pids in more than one batch), ``group_clashes`` (repeats of a group inside a
    batch; ``None`` without ``corpora``), ``dropped_pids`` (``None`` unless ``plan`` is an EpochPlan),
    ``dataset_usage`` (:func:`dataset_usage`; ``None`` unless ``plan`` is an EpochPlan and ``corpora`` given).
    """
    index = {lang: i for i, lang in enumerate(languages)}
    matrix = np.zeros((len(languages), len(languages)), dtype=np.int64)
    kinds = {"mono": 0, "cross": 0}
    per_dataset = {str(d): 0 for d in sorted({info.dataset for info, _ in plan})}
    per_lang = dict.fromkeys(languages, 0)
    impure = duplicates = clashes = pairs = 0
    batches_of: dict[tuple[int, str], int] = {}
    for info, batch in plan:
        kinds[info.kind] += 1
        per_dataset[str(info.dataset)] += 1
        if info.kind == "mono":
            per_lang[info.lang] = per_lang.get(info.lang, 0) + 1
        seen = {(ref.dataset, ref.pid) for ref in batch}
        duplicates += len(batch) - len(seen)
        for key in seen:
            batches_of[key] = batches_of.get(key, 0) + 1
        if corpora is not None:
            groups = [corpora[ref.dataset].group[ref.pid] for ref in batch]
            clashes += len(groups) - len(set(groups))
        for ref in batch:
            if ref.q_lang not in index or ref.p_lang not in index:
                raise ValueError(f"pair {ref} uses a language outside {list(languages)}")
            matrix[index[ref.q_lang], index[ref.p_lang]] += 1
            mono_ok = ref.q_lang == ref.p_lang == info.lang
            impure += int(not mono_ok if info.kind == "mono" else ref.q_lang == ref.p_lang)
        pairs += len(batch)
    dropped = getattr(plan, "dropped", None)
    return {
        "batches": len(plan),
        "pairs": pairs,
        "kinds": kinds,
        "mono_share": kinds["mono"] / len(plan) if len(plan) else 0.0,
        "batches_per_dataset": per_dataset,
        "mono_batches_per_lang": per_lang,
        "languages": list(languages),
        "lang_pairs": matrix.tolist(),
        "impure_pairs": impure,
        "duplicate_pids": duplicates,
        "reused_pids": sum(1 for n in batches_of.values() if n > 1),
        "group_clashes": clashes if corpora is not None else None,
        "dropped_pids": sum(dropped) if dropped is not None else None,
        "dataset_usage": (
            dataset_usage(plan, corpora) if isinstance(plan, EpochPlan) and corpora is not None else None
        ),
    }
