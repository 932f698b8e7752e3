"""Summaries of an epoch plan: per-dataset use and drops, batch kinds and language pairs (dry runs, logs).
See docs/method.md (the samplers)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from hybrid_ir.data.corpus import ParallelCorpus
from hybrid_ir.data.planning.plan import DROP_REASONS, STEPS_DROP_REASONS, EpochPlan


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
    plan: EpochPlan, languages: Sequence[str], corpora: Sequence[ParallelCorpus] | None = None
) -> dict[str, Any]:
    """Summary of a plan, JSON-serialisable, computed on the plan's integer arrays (no object per pair).

    Keys: ``batches``, ``pairs``, ``kinds`` ({mono, cross} -> batches), ``mono_share`` (realised share of mono
    batches), ``batches_per_dataset``,
    ``mono_batches_per_lang``, ``languages`` and ``lang_pairs`` (``lang_pairs[i][j]`` = pairs with
    query language ``languages[i]`` and passage language ``languages[j]``), ``impure_pairs`` (pairs
    whose languages contradict their batch kind), ``duplicate_ids`` (repeats of a parallel_id inside a batch),
    ``reused_ids`` (parallel_ids in more than one batch), ``group_clashes`` (repeats of a group inside a
    batch, from the corpora's :class:`~hybrid_ir.data.corpus.CorpusArrays`; ``None`` without ``corpora``),
    ``dropped_ids``, ``dataset_usage`` (:func:`dataset_usage`; ``None`` without ``corpora``).

    Raises:
        ValueError: a pair of the plan uses a language outside ``languages``.
    """
    kind, dataset, lang = plan.kind, plan.dataset, plan.lang
    matrix = np.zeros((len(languages), len(languages)), dtype=np.int64)
    per_lang = dict.fromkeys(languages, 0)
    for d, columns in enumerate(_language_columns(plan.corpora, languages)):
        rows = dataset == d
        if not rows.any():
            continue
        names = plan.corpora[d].languages
        local = np.bincount(
            (plan.q_lang[rows].astype(np.int64) * len(names) + plan.p_lang[rows]).ravel(),
            minlength=len(names) ** 2,
        ).reshape(len(names), len(names))
        outside = columns < 0
        if local[outside].any() or local[:, outside].any():
            _raise_outside(plan, languages, d, columns)
        matrix[np.ix_(columns, columns)] += local
        for col, n in enumerate(np.bincount(lang[rows & (kind == 0)], minlength=len(names)).tolist()):
            if n:
                per_lang[names[col]] = per_lang.get(names[col], 0) + n
    same = plan.q_lang == plan.p_lang
    mono_ok = same & (plan.q_lang == lang[:, None])
    impure = int(np.count_nonzero(np.where((kind == 0)[:, None], ~mono_ok, same)))
    parallel_id = np.sort(plan.parallel_id, axis=1)
    repeat = parallel_id[:, 1:] == parallel_id[:, :-1]
    sizes = [len(c) for c in plan.corpora]
    offsets = np.concatenate([[0], np.cumsum(sizes)]).astype(np.int64)
    first = np.concatenate([np.ones((len(plan), 1), dtype=bool), ~repeat], axis=1)
    keys = (offsets[dataset][:, None] + parallel_id)[first]
    used, counts = np.unique(dataset, return_counts=True)
    return {
        "batches": len(plan),
        "pairs": int(plan.parallel_id.size),
        "kinds": {"mono": int(np.count_nonzero(kind == 0)), "cross": int(np.count_nonzero(kind != 0))},
        "mono_share": plan.mono_share(),
        "batches_per_dataset": {str(d): n for d, n in zip(used.tolist(), counts.tolist(), strict=True)},
        "mono_batches_per_lang": per_lang,
        "languages": list(languages),
        "lang_pairs": matrix.tolist(),
        "impure_pairs": impure,
        "duplicate_ids": int(np.count_nonzero(repeat)),
        "reused_ids": int(np.count_nonzero(np.bincount(keys, minlength=offsets[-1]) > 1)),
        "group_clashes": _group_clashes(plan, corpora) if corpora is not None else None,
        "dropped_ids": sum(plan.dropped),
        "dataset_usage": dataset_usage(plan, corpora) if corpora is not None else None,
    }


def validation_stats(
    plan: EpochPlan, corpora: Sequence[ParallelCorpus], val: Mapping[str, Any]
) -> dict[str, Any]:
    """:func:`batch_stats` of the validation batches ``plan`` over the validation ``corpora``, with the checked
    ``data.val`` settings ``val`` (less its dataset specs) and the datasets' names."""
    languages = sorted({lang for corpus in corpora for lang in corpus.languages})
    stats = batch_stats(plan, languages, corpora)
    stats.update({k: v for k, v in val.items() if k != "datasets"}, datasets=[c.name for c in corpora])
    return stats


def _language_columns(corpora: Sequence[ParallelCorpus], languages: Sequence[str]) -> list[np.ndarray]:
    """Per corpus: the position in ``languages`` of each of its languages (-1 for one outside ``languages``)."""
    index = {name: i for i, name in enumerate(languages)}
    return [np.array([index.get(name, -1) for name in c.languages], dtype=np.int64) for c in corpora]


def _raise_outside(plan: EpochPlan, languages: Sequence[str], d: int, columns: np.ndarray) -> None:
    """Raise the ValueError naming the first pair of dataset ``d`` whose language maps to -1 in ``columns``."""
    rows = np.flatnonzero(plan.dataset == d)
    bad = (columns[plan.q_lang[rows]] < 0) | (columns[plan.p_lang[rows]] < 0)
    row, pair = np.argwhere(bad)[0].tolist()
    ref = plan.pairs(int(rows[row]), pair, pair + 1)[0]
    raise ValueError(f"pair {ref} uses a language outside {list(languages)}")


def _group_clashes(plan: EpochPlan, corpora: Sequence[ParallelCorpus]) -> int:
    """Repeats of an answer group inside a batch, summed over the batches of ``plan``."""
    clashes = 0
    for d, corpus in enumerate(corpora):
        rows = plan.dataset == d
        if rows.any():
            groups = np.sort(corpus.arrays.group[plan.parallel_id[rows]], axis=1)
            clashes += int(np.count_nonzero(groups[:, 1:] == groups[:, :-1]))
    return clashes


def plan_summary(plan: EpochPlan, corpora: Sequence[ParallelCorpus]) -> str:
    """One line per plan: batches, then per dataset the ids used and dropped with the reasons, e.g.
    ``37 batches; xquad-r: 1184 of 1190 ids used in 37 batches, 6 dropped (partial_batch: 6, <what it means>)``."""
    parts = []
    for usage in dataset_usage(plan, corpora):
        text = (
            f"{usage['name']}: {usage['used_ids']} of {usage['ids']} ids used in {usage['batches']} batches"
        )
        if usage["dropped_ids"]:
            texts = {**DROP_REASONS, **STEPS_DROP_REASONS}
            why = "; ".join(f"{k}: {n}, {texts[k]}" for k, n in usage["drop_reasons"].items() if n)
            text += f", {usage['dropped_ids']} dropped ({why})"
        parts.append(text)
    return f"{len(plan)} batches; " + "; ".join(parts)


def mono_share_summary(plan: EpochPlan, corpora: Sequence[ParallelCorpus], alpha: float) -> str:
    """The realised share of mono batches of a plan, overall and per dataset, against ``alpha``, e.g.
    ``mono share 0.62 of 40 batches (sampler.alpha=0.5); xquad-r 0.51 of 30; en-only 1.00 of 10 (one language)``.
    A dataset of one language gives mono batches only, so the overall share exceeds ``alpha`` when one is mixed in.
    """
    parts = [f"mono share {plan.mono_share():.2f} of {len(plan)} batches (sampler.alpha={alpha})"]
    for usage, corpus in zip(dataset_usage(plan, corpora), corpora, strict=True):
        if usage["batches"]:
            note = " (one language)" if len(corpus.languages) < 2 else ""
            parts.append(
                f"{usage['name']} {usage['mono_batches'] / usage['batches']:.2f} of {usage['batches']}{note}"
            )
    return "; ".join(parts)
