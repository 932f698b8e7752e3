"""The runs a report is made of: each job directory's evaluation records, seed and overrides (:class:`Job`), found
under the roots given, grouped by the overrides that differ between jobs, with the value of a swept setting read from
the override or, without one, from the run's resolved config. Used by :mod:`hybrid_ir.analysis.report`.

See docs/usage.md (the report) and docs/results.md."""

from __future__ import annotations

import json
import logging
from collections.abc import Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import yaml

from hybrid_ir.evaluation.outputs import METRICS_FILE
from hybrid_ir.utils.errors import ConfigError, DataError

log = logging.getLogger(__name__)


PRETRAINED = "pretrained"


@dataclass
class Job:
    """One run of a sweep: its group label, seed, directory, evaluation records, the overrides that name its
    group (``overrides``), all its overrides (``all_overrides``, with ``seed``) and whether it is an ``evaluate.py``
    run (``evaluated``: a model evaluated without training, a pretrained row)."""

    group: str
    seed: str
    path: Path
    records: list[dict]
    overrides: tuple[str, ...] = ()
    all_overrides: tuple[str, ...] = ()
    evaluated: bool = False

    def record(self, tag: str | None = None) -> dict:
        """The evaluation record with ``tag`` (default: the last one)."""
        if tag is None:
            return self.records[-1]
        for rec in self.records:
            if rec["tag"] == tag:
                return rec
        raise KeyError(tag)

    def has(self, tag: str) -> bool:
        """Whether the job has an evaluation record with ``tag``."""
        return any(rec["tag"] == tag for rec in self.records)


def override_key(override: str) -> str:
    """The key of a Hydra override (``+seed=1`` -> ``seed``)."""
    return override.partition("=")[0].lstrip("+~")


def read_job(path: Path, keep_seed: bool = False) -> Job:
    """Read a job directory (``metrics.json`` and the Hydra overrides); ``keep_seed``: the seed override names
    the group too (for a sweep over seeds)."""
    metrics_file = path / METRICS_FILE
    try:
        metrics = json.loads(metrics_file.read_text(encoding="utf-8"))
    except json.JSONDecodeError as err:
        raise DataError(metrics_file, f"line {err.lineno}", f"invalid JSON ({err.msg})") from err
    records = metrics["records"] if isinstance(metrics, dict) else metrics
    if not records:
        raise DataError(metrics_file, "records", "no evaluation recorded")
    overrides_file = path / ".hydra" / "overrides.yaml"
    overrides = (
        [str(o) for o in yaml.safe_load(overrides_file.read_text()) or []] if overrides_file.exists() else []
    )
    seed = next((o.split("=", 1)[1] for o in overrides if override_key(o) == "seed"), "0")
    dropped = set() if keep_seed else {"seed"}
    kept = tuple(
        o for o in overrides if override_key(o) not in dropped and not override_key(o).startswith("hydra")
    )
    group = ",".join(kept) or "default"
    config_file = path / ".hydra" / "config.yaml"
    evaluated = (
        config_file.exists()
        and (yaml.safe_load(config_file.read_text()) or {}).get("task_name") == "evaluate"
    )
    if evaluated:
        group = PRETRAINED  # an evaluate.py run of the pretrained model
    return Job(
        group=group,
        seed=seed,
        path=path,
        records=records,
        overrides=kept,
        all_overrides=tuple(overrides),
        evaluated=evaluated,
    )


def find_jobs(roots: Sequence[Path], x: str | None = None, each_eval: bool = False) -> list[Job]:
    """All job directories (those with a ``metrics.json``) under ``roots``, sorted by path; with ``x="seed"``
    (a sweep over seeds) each seed is its own group. With ``each_eval`` a trained job becomes one job per
    evaluation after training, grouped as ``<group> @ <tag>`` (see :func:`each_evaluation`)."""
    missing = [str(root) for root in roots if not Path(root).is_dir()]
    if missing:
        raise ConfigError(
            f"no such directory: {', '.join(missing)}; give run or multirun directories of train.py / evaluate.py "
            "(e.g. multirun/train/<date>/)"
        )
    paths = sorted({p.parent for root in roots for p in Path(root).rglob(METRICS_FILE)})
    for path, why in skipped_jobs(roots, paths):
        log.warning("skipped %s: %s", path, why)
    if not paths:
        raise ConfigError(f"no {METRICS_FILE} under {', '.join(map(str, roots))}: no evaluated run to report")
    jobs = [read_job(p, keep_seed=x == "seed") for p in paths]
    trained = [j for j in jobs if not j.evaluated]
    if len(trained) > 1:  # label runs by what varies between them (a sweep's shared overrides say nothing)
        for job, differ in zip(trained, _differing(trained), strict=True):
            job.group = differ or job.group
    evaluated = [j for j in jobs if j.evaluated]
    if len({j.overrides for j in evaluated}) > 1:  # e.g. two models: one pretrained row each, not their mean
        for job, differ in zip(evaluated, _differing(evaluated), strict=True):
            job.group = f"{PRETRAINED} ({differ})" if differ else PRETRAINED
    if each_eval:
        jobs = [part for job in jobs for part in each_evaluation(job)]
    return jobs


def skipped_jobs(roots: Sequence[Path], reported: Sequence[Path]) -> list[tuple[Path, str]]:
    """The Hydra job directories (those with a ``.hydra`` folder) under ``roots`` that are not in ``reported``
    (they have no ``metrics.json``), each with why: a dry run, a ``mine.py`` run, or a run that failed or
    was stopped before its first evaluation."""
    jobs = sorted({p.parent for root in roots for p in Path(root).rglob(".hydra") if p.is_dir()})
    out = []
    for job in jobs:
        if job in reported:
            continue
        if (job / "batch_stats.json").is_file():
            why = "a dry run (dry_run=true): batch_stats.json, no evaluation"
        elif (job / "mine_stats.json").is_file():
            why = "a mine.py run: mine_stats.json, no evaluation"
        else:
            why = (
                f"no {METRICS_FILE}: the run failed or was stopped before its first evaluation, or evaluated "
                "nothing (callbacks without zero_shot_eval)"
            )
            if (job / "checkpoints" / "last.ckpt").is_file():
                why += f"; it has checkpoints/last.ckpt (resume it with hydra.run.dir={job} ckpt_path=last)"
        out.append((job, why))
    return out


def _differing(jobs: Sequence[Job]) -> list[str]:
    """Per job, its overrides that not every one of ``jobs`` has, joined by commas ("" when it has none)."""
    common = set.intersection(*(set(j.overrides) for j in jobs))
    return [",".join(o for o in j.overrides if o not in common) for j in jobs]


def each_evaluation(job: Job) -> list[Job]:
    """A trained job as one job per evaluation after training (its ``pretrained`` record kept in each, so each
    is compared with its own start); a ``pretrained`` job, or one evaluated once, is returned as it is."""
    before = [rec for rec in job.records if rec["tag"] == PRETRAINED]
    after = [rec for rec in job.records if rec["tag"] != PRETRAINED]
    if job.evaluated or len(after) < 2:
        return [job]
    return [replace(job, group=f"{job.group} @ {rec['tag']}", records=[*before, rec]) for rec in after]


def sweep_value(job: Job, key: str) -> float:
    """The numeric value of ``key`` in a trained job (``--x``): its override ``key=...``, else the value of ``key``
    in its resolved config (``.hydra/config.yaml``), so runs that set it through a config group count too (e.g.
    ``sampler=mono`` is ``sampler.alpha=1.0``, ``sampler=cross`` is ``0.0``, next to ``sampler.alpha=0.25``)."""
    where = job.path / ".hydra" / "overrides.yaml"
    for override in job.all_overrides:
        value = override.partition("=")[2]
        if override_key(override) == key:
            return _number(value, where, key)
    config_file = job.path / ".hydra" / "config.yaml"
    if config_file.exists():
        value: Any = yaml.safe_load(config_file.read_text(encoding="utf-8")) or {}
        for part in key.split("."):
            value = value.get(part) if isinstance(value, dict) else None
        if value is not None:
            return _number(value, config_file, key)
    raise DataError(
        where, key, f"no override {key}=... and no {key} in its config; with --x every trained run needs one"
    )


def _number(value: Any, where: Path, key: str) -> float:
    try:
        return float(value)
    except (TypeError, ValueError):
        raise DataError(where, key, f"expected a number for --x, got {value!r}") from None
