"""Batch composition for hybrid (monolingual / cross-lingual) contrastive training.

Follows the hybrid batching of arXiv 2408.10536 (with the LAReQA X-X-mono and X-Y baselines):

* ``mono`` (X-X-mono): every pair of a batch has query and passage in one language X; X is drawn
  uniformly among the dataset's training languages in which a full batch can still be formed.
* ``cross`` (X-Y): every pair has query language != passage language; each pair draws its ordered
  language pair uniformly among the ``k(k-1)`` ordered pairs of the ``k >= 2`` languages of its pid.
* ``hybrid``: each batch is mono with probability ``alpha``, else cross. The kind is drawn from the
  same uniform number ``u`` in every mode (mono iff ``u < alpha``), so ``hybrid`` with ``alpha = 1``
  gives exactly the ``mono`` plan and ``alpha = 0`` exactly the ``cross`` plan.

With several datasets each batch comes from one dataset ``d``, drawn with probability
``p(d) = n_d**T / sum_e n_e**T`` among the datasets that can still fill a batch (``n_d`` = number of
pids, ``T`` = temperature). An epoch is one pass without replacement over the pids of every
dataset. A batch never holds a pid twice nor two pids of one ``group``; pids passed over for a
group clash are deferred to later batches, and pids lacking the batch's language wait for a batch
that can use them. When no further full batch can be formed, the rest is dropped (``EpochPlan.dropped``, with
the reasons in ``EpochPlan.drop_reasons``: see :data:`DROP_REASONS`).
Everything is drawn from one ``numpy.random.Generator`` seeded with ``(seed, epoch)``.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator, Mapping, Sequence
from typing import Any, Literal, NamedTuple

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


class EpochPlan(list):
    """The batches of one epoch (a list of :data:`Batch`); ``dropped[d]`` = unused pids of dataset ``d`` and
    ``drop_reasons[d]`` = ``{reason: count}`` over :data:`DROP_REASONS` (the counts sum to ``dropped[d]``)."""

    def __init__(
        self,
        batches: Sequence[Batch],
        dropped: Sequence[int],
        drop_reasons: Sequence[Mapping[str, int]] | None = None,
    ) -> None:
        super().__init__(batches)
        self.dropped = list(dropped)
        self.drop_reasons = [dict(r) for r in drop_reasons] if drop_reasons is not None else None

    def batches_per_dataset(self, n_datasets: int) -> list[int]:
        """Number of batches drawn from each of the ``n_datasets`` datasets."""
        counts = [0] * n_datasets
        for info, _ in self:
            counts[info.dataset] += 1
        return counts


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
    if kind == "cross":
        return len({corpus.group[pid] for pid in corpus.pids if len(corpus.langs_of(pid)) >= 2})
    return max(
        (len({corpus.group[pid] for pid in corpus.pairs[lang]}) for lang in corpus.languages), default=0
    )


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


def check_sampler_args(mode: str, batch_size: int, alpha: float, temperature: float, seed: int) -> None:
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


class _Pool:
    """Unused pids of one dataset for one epoch, with one queue per batch key.

    Key ``lang`` serves mono batches in ``lang``; key ``None`` serves cross batches (pids with >= 2
    languages). Queues list positions in the epoch's random order; a pointer per queue marks how far
    it has been read. Positions passed over for a group clash go to ``deferred`` and are offered first
    to later batches, so every unused pid of a key is in ``deferred`` or after that key's pointer.
    """

    def __init__(self, index: int, corpus: ParallelCorpus, rng: np.random.Generator) -> None:
        self.index = index
        order = rng.permutation(len(corpus.pids)).tolist()
        self.pids = [corpus.pids[i] for i in order]
        langs_of: dict[str, list[str]] = {pid: [] for pid in self.pids}
        for lang in corpus.languages:
            for pid in corpus.pairs[lang]:
                langs_of[pid].append(lang)
        self.langs = [langs_of[pid] for pid in self.pids]
        self.lang_sets = [frozenset(langs) for langs in self.langs]
        self.group = []
        for pid in self.pids:
            if pid not in corpus.group:
                raise ValueError(f"dataset {index} ({corpus.name}): pid {pid!r} has no entry in corpus.group")
            self.group.append(corpus.group[pid])
        self.queues: dict[str | None, list[int]] = {
            lang: [i for i, s in enumerate(self.lang_sets) if lang in s] for lang in corpus.languages
        }
        self.queues[None] = [i for i, langs in enumerate(self.langs) if len(langs) >= 2]
        self.pointer = dict.fromkeys(self.queues, 0)
        self.dead: set[str | None] = set()
        self.used = [False] * len(self.pids)
        self.deferred: list[int] = []
        self.mono_langs = list(corpus.languages)

    def _fits(self, i: int, key: str | None) -> bool:
        """Whether position ``i`` can serve batch key ``key``."""
        return len(self.langs[i]) >= 2 if key is None else key in self.lang_sets[i]

    def take(self, key: str | None, size: int) -> list[int] | None:
        """Remove and return ``size`` positions usable under ``key`` with distinct groups, or ``None``
        (and mark ``key`` dead) when fewer exist. Greedy in priority order picks one pid per group, so
        a failure means the unused pids of ``key`` span fewer than ``size`` groups; as pids are only
        ever removed, ``key`` stays infeasible for the rest of the epoch."""
        if key in self.dead:
            return None
        picked: list[int] = []
        groups: set[int] = set()
        for i in self.deferred:
            if len(picked) == size:
                break
            if not self.used[i] and self._fits(i, key) and self.group[i] not in groups:
                picked.append(i)
                groups.add(self.group[i])
        waiting = set(self.deferred)
        queue, j, skipped = self.queues[key], self.pointer[key], []
        while len(picked) < size and j < len(queue):
            i = queue[j]
            j += 1
            if self.used[i] or i in waiting:
                continue
            if self.group[i] in groups:
                skipped.append(i)
                continue
            picked.append(i)
            groups.add(self.group[i])
        if len(picked) < size:
            self.dead.add(key)
            return None
        for i in picked:
            self.used[i] = True
        self.pointer[key] = j
        self.deferred = [i for i in self.deferred if not self.used[i]] + skipped
        return picked

    def live_mono_langs(self) -> list[str]:
        """Languages that may still fill a mono batch (not yet found infeasible)."""
        return [lang for lang in self.mono_langs if lang not in self.dead]

    def n_unused(self) -> int:
        """Number of pids not placed in any batch so far."""
        return self.used.count(False)

    def drop_reasons(self, kinds: Sequence[BatchKind]) -> dict[str, int]:
        """Why each unused pid was left out (see :data:`DROP_REASONS`), for the batch ``kinds`` in play."""
        reasons = dict.fromkeys(DROP_REASONS, 0)
        groups: set[int] = set()
        for i, used in enumerate(self.used):
            if used:
                continue
            if "mono" not in kinds and len(self.langs[i]) < 2:
                reasons["one_language"] += 1
            elif self.group[i] in groups:
                reasons["group_clash"] += 1
            else:
                groups.add(self.group[i])
                reasons["partial_batch"] += 1
        return reasons


def _mono_batch(pool: _Pool, size: int, rng: np.random.Generator) -> Batch | None:
    """A mono batch in a language drawn uniformly among the pool's languages that can still fill one."""
    while langs := pool.live_mono_langs():
        lang = langs[int(rng.integers(len(langs)))]
        picked = pool.take(lang, size)
        if picked is not None:
            pairs = [PairRef(pool.index, pool.pids[i], lang, lang) for i in picked]
            return BatchInfo("mono", pool.index, lang), pairs
    return None


def _cross_batch(pool: _Pool, size: int, rng: np.random.Generator) -> Batch | None:
    """A cross batch: per pid with languages L (k >= 2), q = L[a], p = (L without q)[b], a, b uniform."""
    picked = pool.take(None, size)
    if picked is None:
        return None
    u = rng.random((len(picked), 2)).tolist()
    pairs = []
    for i, (ua, ub) in zip(picked, u, strict=True):
        langs = pool.langs[i]
        q = langs[int(ua * len(langs))]
        others = [lang for lang in langs if lang != q]
        pairs.append(PairRef(pool.index, pool.pids[i], q, others[int(ub * len(others))]))
    return BatchInfo("cross", pool.index, None), pairs


def _next_batch(pool: _Pool, mode: str, alpha: float, size: int, rng: np.random.Generator) -> Batch | None:
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
) -> EpochPlan:
    """All global batches of one epoch, deterministic in ``(seed, epoch)`` (see the module docstring).

    Returns an :class:`EpochPlan`: a list of ``(BatchInfo, [PairRef] * batch_size)`` with the unused ids of
    each dataset and why they were left out. A dataset may contribute no batch (see
    :meth:`EpochPlan.batches_per_dataset`); the caller decides whether that is an error.
    Raises ValueError for invalid arguments or when not a single full batch can be formed (naming each
    dataset's :func:`batch_capacity`).
    """
    check_sampler_args(mode, batch_size, alpha, temperature, seed)
    if not corpora:
        raise ValueError("no training datasets given")
    if not isinstance(epoch, int) or epoch < 0:
        raise ValueError(f"epoch must be a non-negative integer, got {epoch!r}")
    rng = np.random.default_rng([seed, epoch])
    pools = [_Pool(d, corpus, rng) for d, corpus in enumerate(corpora)]
    weights = np.array([float(len(c)) ** temperature if len(c) else 0.0 for c in corpora])
    batches: list[Batch] = []
    while (live := np.flatnonzero(weights)).size:
        cdf = np.cumsum(weights[live])
        pick = min(int(np.searchsorted(cdf, rng.random() * cdf[-1], side="right")), live.size - 1)
        pool = pools[int(live[pick])]
        batch = _next_batch(pool, mode, alpha, batch_size, rng)
        if batch is None:
            weights[pool.index] = 0.0
        else:
            batches.append(batch)
    kinds = batch_kinds(mode, alpha)
    if not batches:
        raise ValueError(
            f"no full batch of {batch_size} {mode} pairs can be formed: "
            + "; ".join(capacity_note(c, kinds) for c in corpora)
            + ". Lower data.batch_size to at most the largest of these, or check the languages"
        )
    return EpochPlan(
        batches, [pool.n_unused() for pool in pools], [pool.drop_reasons(kinds) for pool in pools]
    )


def capacity_note(corpus: ParallelCorpus, kinds: Sequence[BatchKind]) -> str:
    """``"<name>: N ids, at most C pairs per mono batch, ..."``: why a dataset cannot fill a larger batch."""
    parts = []
    for kind in kinds:
        cap = batch_capacity(corpus, kind)
        if kind == "mono":
            parts.append(f"at most {cap} pairs per mono batch (distinct answer groups in its best language)")
        else:
            multi = sum(1 for pid in corpus.pids if len(corpus.langs_of(pid)) >= 2)
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
    ) -> None:
        check_sampler_args(mode, global_batch_size, alpha, temperature, seed)
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
            yield plan[index][1][lo:hi]

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
    """Per dataset of ``plan``: ``{name, ids, used_ids, dropped_ids, drop_reasons, batches}`` (JSON-serialisable)."""
    batches = plan.batches_per_dataset(len(corpora))
    reasons = plan.drop_reasons or [{} for _ in corpora]
    return [
        {
            "name": corpus.name,
            "ids": len(corpus),
            "used_ids": len(corpus) - plan.dropped[d],
            "dropped_ids": plan.dropped[d],
            "drop_reasons": reasons[d],
            "batches": batches[d],
        }
        for d, corpus in enumerate(corpora)
    ]


def batch_stats(
    plan: Sequence[Batch], languages: Sequence[str], corpora: Sequence[ParallelCorpus] | None = None
) -> dict[str, Any]:
    """Summary of a plan, JSON-serialisable.

    Keys: ``batches``, ``pairs``, ``kinds`` ({mono, cross} -> batches), ``batches_per_dataset``,
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
