"""Compare the plan a checkpoint was trained on with the plan a resume would make: the DataModule stores its plan
settings and a hash of each dataset in the checkpoint (``ParallelQADataModule.plan_fingerprint``), and a resume
refuses a changed one, naming each change (``resume_allow_plan_change=true`` warns instead). See
``docs/reliability.md``."""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from typing import Any

from hybrid_ir.data.corpus import ParallelCorpus
from hybrid_ir.utils.errors import ConfigError

log = logging.getLogger(__name__)


def plan_changes(old: Mapping[str, Any], new: Mapping[str, Any]) -> list[str]:
    """``"<key>: <old> -> <new>"`` for every key of two :func:`fingerprint` that differs
    (a dataset by its hash, shown by its summary; a key only one has shows as ``(none)``)."""
    changes = []
    for key in [*old, *(k for k in new if k not in old)]:
        was, now = old.get(key), new.get(key)
        if isinstance(was, Mapping) or isinstance(now, Mapping):
            if (was or {}).get("key") != (now or {}).get("key"):
                before = was["summary"] if was else "(none)"
                after = now["summary"] if now else "(none)"
                changes.append(f"{key}: {before} -> {after} (its ids, languages or answer groups differ)")
        elif was != now:
            changes.append(f"{key}: {was!r} -> {now!r}")
    return changes


def fingerprint(settings: Mapping[str, Any], corpora: Sequence[ParallelCorpus]) -> dict[str, Any]:
    """What the batch plan of every epoch depends on, by the config key that sets it: ``settings`` (the global batch
    size, the sampler's settings, the seed, the hard negatives per pair, the held-out validation split) and per
    training dataset (``data.train.<i>``) a hash of its ids, their languages and answer groups
    (:meth:`~hybrid_ir.data.corpus.ParallelCorpus.plan_key`, so a moved or re-exported file with the same records is
    the same data) with a summary for messages. The number of ranks is not part of it: every rank plays its slice of
    the same global plan. (The hard negatives' texts are not either: they do not move the plan's position.)"""
    out = dict(settings)
    for i, corpus in enumerate(corpora):
        source = f" ({corpus.source})" if corpus.source else ""
        out[f"data.train.{i}"] = {
            "key": corpus.plan_key(),
            "summary": f"{corpus.name}{source}: {len(corpus)} ids in {', '.join(corpus.languages)}",
        }
    return out


def check_resume(saved: Mapping[str, Any] | None, current: Mapping[str, Any], allow_change: bool) -> bool:
    """Compare the fingerprint ``saved`` in a checkpoint with the ``current`` one before resuming: the run continues
    at the checkpoint's position (epoch, batch), which in a different plan skips or repeats ids. Returns whether the
    plan changed (only with ``allow_change``); a checkpoint written before the plan was saved (``saved`` is
    ``None``) gets a warning that it cannot be checked.

    Raises:
        ConfigError: a setting differs (each named with its old and new value), unless ``allow_change``, which
            logs the same list as a warning."""
    if saved is None:
        log.warning(
            "the checkpoint does not record the data settings of its batch plan (written by an older version): "
            "whether data.batch_size, the sampler, the seed and the training data are the ones it was trained "
            "with cannot be checked; if one changed, the run continues at its position of a different plan"
        )
        return False
    changes = plan_changes(saved, current)
    if not changes:
        return False
    listed = "; ".join(changes)
    if not allow_change:
        raise ConfigError(
            "resuming with data settings that differ from the checkpoint's would continue at its position of a "
            f"different batch plan (ids skipped or repeated): {listed}. Restore the checkpoint's setting to "
            "resume, or start a new run (a new hydra.run.dir, without ckpt_path); resume_allow_plan_change=true "
            "continues anyway"
        )
    log.warning(
        "resume_allow_plan_change=true: resuming with data settings that differ from the checkpoint's (%s); the "
        "run continues at the checkpoint's epoch and batch of the NEW batch plan, so ids of the current epoch "
        "are skipped or repeated",
        listed,
    )
    return True
