"""Summaries of an epoch plan: per-dataset use and drops, batch kinds and language pairs (dry runs, logs)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from hybrid_ir.data.corpus import ParallelCorpus
from hybrid_ir.data.plan import DROP_REASONS, STEPS_DROP_REASONS, Batch, EpochPlan


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
