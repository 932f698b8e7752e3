"""Hold out a validation part of a parallel training corpus.

:func:`hold_out` splits by *parallel id* and by *answer group*: a held-out id is held out in every language (no
translation of a validation question is trained on), and the ids of one group (ids whose answer passages
coincide in some language, see :class:`~hybrid_ir.data.corpus.ParallelCorpus`) all go to the same side (no
validation passage is a training positive). The split is a pure function of the corpus's ids and groups and the
seed: every DDP rank computes the same one, whatever the order in which the data was read.

See docs/usage.md (validation and early stopping).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import numpy as np

from hybrid_ir.data.corpus import ParallelCorpus
from hybrid_ir.data.planning.plan import EpochPlan, check_sampler_args, concat_plans
from hybrid_ir.data.planning.planner import plan_epoch
from hybrid_ir.utils.errors import ConfigError
from hybrid_ir.utils.settings import check_int

VAL_SUFFIX = "-val"


def hold_out(corpus: ParallelCorpus, fraction: float, seed: int) -> tuple[ParallelCorpus, ParallelCorpus]:
    """Split ``corpus`` into ``(train, val)``, holding out about ``fraction`` of its ids as whole answer groups.

    The groups (ordered by their smallest id) are shuffled with ``numpy.random.default_rng(seed)`` and taken in
    that order until at least ``ceil(fraction · ids)`` ids are held out, so ``val`` exceeds that target by less than
    the largest group. ``val`` is named ``<name>-val``. Works on the corpus's integer view (its ids are sorted, so
    the smallest id of a group is its first position).

    Both parts keep their ids' hard negatives (:meth:`~hybrid_ir.data.corpus.ParallelCorpus.subset`): the
    ``negatives`` texts, and the ``negative_ids`` that stay on the same side, so no held-out passage is a training
    negative. ``val``'s are never used (validation batches carry no negatives); its token store holds their texts.

    Raises:
        ValueError: ``fraction`` is not in (0, 1), or the split leaves either side without an id.
    """
    if not 0.0 < fraction < 1.0:
        raise ValueError(f"the validation fraction must be in (0, 1), got {fraction!r}")
    group = corpus.arrays.group
    numbers, first, number_of = np.unique(group, return_index=True, return_inverse=True)
    rank = np.empty(len(numbers), dtype=np.int64)
    rank[np.argsort(first, kind="stable")] = np.arange(len(numbers))  # groups ordered by their smallest id
    group_rank = rank[number_of.reshape(-1)]
    sizes = np.bincount(group_rank, minlength=len(numbers))
    target = math.ceil(fraction * len(corpus))
    order = np.random.default_rng(seed).permutation(len(numbers))
    taken = int(np.searchsorted(np.cumsum(sizes[order]), target)) + 1
    held = np.isin(group_rank, order[:taken])
    if held.all():
        raise ValueError(
            f"{corpus.name}: holding out {fraction} of its {len(corpus)} ids as whole answer groups leaves no id "
            f"to train on ({len(numbers)} groups)"
        )
    return (
        corpus.subset(np.flatnonzero(~held), corpus.name),
        corpus.subset(np.flatnonzero(held), corpus.name + VAL_SUFFIX),
    )


def held_out_note(fraction: float, train: Sequence[ParallelCorpus], val: Sequence[ParallelCorpus]) -> str:
    """What ``data.val.fraction`` left on each side, to begin a message about batches that cannot be filled:
    ``data.val.fraction=0.99 holds out 1182 of the 1190 ids of xquad-r (8 left for training)``."""
    parts = [
        f"{len(v)} of the {len(t) + len(v)} ids of {t.name} ({len(t)} left for training)"
        for t, v in zip(train, val, strict=True)
    ]
    return f"data.val.fraction={fraction} holds out " + "; ".join(parts)


VAL_KEYS = ("fraction", "datasets", "seed", "batch_size", "mode", "alpha", "passes")


def check_val_config(
    val: Mapping[str, Any] | None, batch_size: int, train_specs: Sequence[Mapping[str, Any]] = ()
) -> dict[str, Any] | None:
    """The validation settings ``data.val`` with defaults filled in, or ``None`` when validation is off (no
    ``fraction`` and no ``datasets``).

    Raises:
        ConfigError: an unknown key; both a fraction and datasets; a fraction outside (0, 1); a dataset without
            a name, or one that is a training dataset (same name and path: its questions, or their
            translations, are trained on); an invalid mode, alpha, seed or batch size.
    """
    if val is None:
        return None
    unknown = sorted(set(val) - set(VAL_KEYS))
    if unknown:
        raise ConfigError(
            f"data.val.{unknown[0]} is not a validation setting; the keys are {', '.join(VAL_KEYS)}"
        )
    fraction = val.get("fraction") or 0.0
    datasets = [dict(spec) for spec in val.get("datasets") or []]
    if not fraction and not datasets:
        return None
    if fraction and datasets:
        raise ConfigError(
            "data.val sets both fraction and datasets: hold out part of the training data (data.val.fraction) "
            "or validate on separate datasets (data.val.datasets), not both"
        )
    if fraction and not 0.0 < float(fraction) < 1.0:
        raise ConfigError(
            f"data.val.fraction={fraction!r} must be in (0, 1): the share of each training dataset's ids held "
            "out for validation (0 or null: none)"
        )
    for i, spec in enumerate(datasets):
        if not spec.get("name"):
            raise ConfigError(f"data.val.datasets.{i} has no name; give it the keys of a data.train entry")
        for j, train in enumerate(train_specs):
            if spec.get("name") == train.get("name") and spec.get("path") == train.get("path"):
                raise ConfigError(
                    f"data.val.datasets.{i} ({spec['name']!r}) is the training dataset data.train.{j}: its "
                    "questions or their translations are trained on; use data.val.fraction to hold out part of it"
                )
    out = {
        "fraction": float(fraction),
        "datasets": datasets,
        "seed": val.get("seed", 0),
        "batch_size": val.get("batch_size") or batch_size,
        "mode": val.get("mode", "hybrid"),
        "alpha": val.get("alpha", 0.5),
        "passes": val.get("passes", 1),
    }
    check_int(
        out["passes"],
        "data.val.passes",
        hint="the sampler epochs over the validation ids that make up the validation batches",
    )
    try:
        check_sampler_args(out["mode"], out["batch_size"], out["alpha"], 1.0, out["seed"])
    except ValueError as err:
        raise ConfigError(f"data.val: {err}") from err
    return out


def split_validation(
    corpora: Sequence[ParallelCorpus],
    val: Mapping[str, Any] | None,
    load: Callable[[Mapping[str, Any]], ParallelCorpus],
) -> tuple[list[ParallelCorpus], list[ParallelCorpus]]:
    """``(training corpora, validation corpora)`` for the checked ``data.val`` settings ``val``
    (:func:`check_val_config`): a ``fraction`` holds out ids of every training corpus (:func:`hold_out`, seeded by
    ``val["seed"]``), ``datasets`` are read with ``load``; ``None``: no validation corpora.

    Raises:
        ConfigError: the fraction leaves a corpus without training or validation ids, naming ``data.val.fraction``.
    """
    if val is None:
        return list(corpora), []
    if not val["fraction"]:
        return list(corpora), [load(spec) for spec in val["datasets"]]
    try:
        splits = [hold_out(corpus, val["fraction"], val["seed"]) for corpus in corpora]
    except ValueError as err:
        raise ConfigError(f"data.val.fraction={val['fraction']}: {err}") from err
    return [train for train, _ in splits], [held for _, held in splits]


def validation_plan(corpora: Sequence[ParallelCorpus], val: Mapping[str, Any], note: str = "") -> EpochPlan:
    """The validation batches, the same at every validation: the sampler's epochs ``0 … passes - 1`` (of
    ``data.val.seed``) over the validation ``corpora``, one after the other, with the settings of ``val`` (see
    :func:`check_val_config`). One pass uses each id once, in one language pair; more passes use the ids in more
    language pairs. With several passes, ``dropped`` counts the ids no pass uses (no ``drop_reasons``).

    Raises:
        ConfigError: the validation set cannot fill one batch (``note`` first)."""
    try:
        plans = [
            plan_epoch(corpora, val["mode"], val["batch_size"], val["alpha"], val["seed"], epoch)
            for epoch in range(val["passes"])
        ]
    except ValueError as err:
        raise ConfigError(
            note + f"the validation set cannot fill a batch of data.val.batch_size={val['batch_size']} "
            f"{val['mode']} pairs ({err}); lower data.val.batch_size, or hold out more ids (data.val.fraction)"
        ) from err
    return plans[0] if len(plans) == 1 else concat_plans(plans)
