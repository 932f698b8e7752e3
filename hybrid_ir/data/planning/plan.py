"""What an epoch plan is and the rules it keeps: batch kinds and pair references, the array-backed
:class:`EpochPlan`, drop reasons, batch capacities and the checks of the sampler settings (the planner that fills
plans is :mod:`hybrid_ir.data.planning.planner`).

See docs/method.md (the samplers)."""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from typing import Literal, NamedTuple, overload

import numpy as np

from hybrid_ir.data.corpus import ParallelCorpus
from hybrid_ir.utils.errors import ConfigError
from hybrid_ir.utils.settings import check_int

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
    """One training pair: question of ``parallel_id`` in ``q_lang`` against its passage in ``p_lang``; ``negatives``:
    its
    hard negatives (:class:`~hybrid_ir.data.planning.negatives.NegativeRef`, none unless ``data.negatives_per_query`` >
    0)."""

    dataset: int
    parallel_id: str
    q_lang: str
    p_lang: str
    negatives: tuple = ()


class BatchInfo(NamedTuple):
    """Metadata of a batch: its kind, its dataset and (mono only) its language."""

    kind: BatchKind
    dataset: int
    lang: str | None


Batch = tuple[BatchInfo, list[PairRef]]


class EpochPlan(Sequence[Batch]):
    """The batches of one epoch, stored as integer arrays and read as a sequence of :data:`Batch`.

    ``plan[i]`` builds batch ``i``'s :class:`BatchInfo` and :class:`PairRef` list on demand (a slice gives a list of
    batches); :meth:`pairs` builds only part of a batch (a rank's slice). ``dropped[d]`` = unused parallel_ids of
    dataset ``d``; ``drop_reasons[d]`` = ``{reason: count}`` over :data:`DROP_REASONS` (over :data:`STEPS_DROP_REASONS`
    for an epoch of ``epoch_steps``; the counts sum to ``dropped[d]``); ``passes[d]`` = passes over dataset ``d`` begun
    in the epoch (1 unless the epoch is a number of steps). Arrays, one row per batch: ``kind`` (0 mono, 1 cross),
    ``dataset``, ``lang`` (mono language's index in the dataset's ``languages``, -1 for cross); one row per batch
    and one column per pair: ``parallel_id`` (index into the dataset's ``parallel_ids``), ``q_lang`` and ``p_lang``
    (indices into its ``languages``).
    Two plans are equal when they hold the same batches.
    """

    def __init__(
        self,
        corpora: Sequence[ParallelCorpus],
        kind: np.ndarray,
        dataset: np.ndarray,
        lang: np.ndarray,
        parallel_id: np.ndarray,
        q_lang: np.ndarray,
        p_lang: np.ndarray,
        dropped: Sequence[int],
        drop_reasons: Sequence[Mapping[str, int]],
        passes: Sequence[int] | None = None,
    ) -> None:
        self.corpora = list(corpora)
        self.kind, self.dataset, self.lang = kind, dataset, lang
        self.parallel_id, self.q_lang, self.p_lang = parallel_id, q_lang, p_lang
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
        parallel_ids, langs = self.corpora[d].parallel_ids, self.corpora[d].languages
        rows = zip(
            self.parallel_id[index, lo:hi].tolist(),
            self.q_lang[index, lo:hi].tolist(),
            self.p_lang[index, lo:hi].tolist(),
            strict=True,
        )
        return [PairRef(d, parallel_ids[i], langs[q], langs[p]) for i, q, p in rows]

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
    parallel_id, q_lang, p_lang = (
        np.concatenate([getattr(p, k) for p in plans]) for k in ("parallel_id", "q_lang", "p_lang")
    )
    used = [np.unique(parallel_id[joined["dataset"] == d]).size for d in range(n)]
    return EpochPlan(
        first.corpora,
        joined["kind"],
        joined["dataset"],
        joined["lang"],
        parallel_id,
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
    check_int(
        batch_size,
        key,
        hint=f"the global batch, a positive multiple of the number of ranks (devices × num_nodes = {world_size})",
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


def check_training_length(max_epochs: int | None, max_steps: int | None) -> None:
    """A run has an end the learning-rate schedule is laid out over: ``trainer.max_epochs`` of ``-1`` or
    ``null`` (no epoch limit) needs a finite ``trainer.max_steps``. Raises ConfigError naming both keys."""
    if (max_epochs is None or max_epochs < 0) and (max_steps is None or max_steps < 0):
        raise ConfigError(
            f"trainer.max_epochs={'null' if max_epochs is None else max_epochs} (train without an epoch limit) "
            "needs a finite trainer.max_steps (e.g. trainer.max_steps=10000): the learning-rate schedule is "
            "laid out over the total number of steps"
        )


def count_planned_steps(
    epoch_batches: Callable[[int], int],
    max_epochs: int | None,
    max_steps: int = -1,
    limit_batches: int | float = 1.0,
) -> int:
    """Training steps a run will take: the batches of epochs ``0 .. max_epochs - 1`` (``epoch_batches(epoch)``:
    each epoch's own plan, at most ``limit_batches`` of them: a count, or a fraction as Lightning's
    ``limit_train_batches``), capped at ``max_steps`` (``-1``: no cap). ``max_epochs`` of ``None`` or ``-1`` needs a
    ``max_steps`` (:func:`check_training_length`)."""
    check_training_length(max_epochs, max_steps)
    if max_epochs is None or max_epochs < 0:
        return max_steps
    total = 0
    for epoch in range(max_epochs):
        if 0 <= max_steps <= total:
            break
        batches = epoch_batches(epoch)
        total += min(
            batches, limit_batches if isinstance(limit_batches, int) else int(batches * limit_batches)
        )
    return total if max_steps < 0 else min(total, max_steps)


def check_sampler_args(
    mode: str,
    batch_size: int,
    alpha: float,
    temperature: float,
    seed: int,
    epoch_steps: int | None = None,
    negatives_per_query: int = 0,
) -> None:
    """Raise ConfigError naming the argument and the allowed values when any argument is out of range."""
    if mode not in MODES:
        raise ConfigError(f"mode {mode!r} is not valid; choose one of {', '.join(MODES)}")
    check_int(batch_size, "batch_size")
    if not 0.0 <= alpha <= 1.0:
        raise ConfigError(f"alpha (probability of a monolingual batch) must be in [0, 1], got {alpha!r}")
    if not (math.isfinite(temperature) and temperature >= 0.0):
        raise ConfigError(f"temperature must be a finite number >= 0, got {temperature!r}")
    check_int(seed, "seed", 0)
    check_int(
        epoch_steps,
        "sampler.epoch_steps",
        null=True,
        hint="batches per epoch; null: one pass over every dataset",
    )
    check_int(
        negatives_per_query,
        "data.negatives_per_query",
        0,
        hint="hard negatives per training pair; 0: in-batch negatives only",
    )


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


def check_every_dataset_used(
    plan: EpochPlan,
    corpora: Sequence[ParallelCorpus],
    mode: str,
    alpha: float,
    batch_size: int,
    epoch_steps: int | None,
    note: str = "",
) -> None:
    """Raise a ConfigError (``note`` first) when a training dataset contributes no batch to ``plan``, naming the
    dataset and the largest batch it can fill. An epoch of ``epoch_steps`` batches may skip a small dataset by
    chance; only one that cannot fill a batch is an error."""
    kinds = batch_kinds(mode, alpha)
    for d, n in enumerate(plan.batches_per_dataset(len(corpora))):
        fits = epoch_steps is not None and any(
            batch_capacity(corpora[d], kind) >= batch_size for kind in kinds
        )
        if n == 0 and not fits:
            raise ConfigError(
                note + f"training dataset {corpora[d].name!r} (data.train.{d}) contributes no batch of "
                f"data.batch_size={batch_size} {mode} pairs: {capacity_note(corpora[d], kinds)}. "
                "Lower data.batch_size or remove the dataset from data.train"
            )
