"""Collect the runs of a multirun into one table (CSV + Markdown), a bar chart, and paired significance tests.

``python report.py multirun/train/<date>/ [--dataset mlqa-r] [--out <dir>] [--x sampler.alpha]``
(or ``make report ARGS=...``).

Each job directory holds ``metrics.json`` (one record per evaluation: ``pretrained``, ``epoch0``, ...),
``per_query/<dataset>__<tag>.csv.gz`` and ``.hydra/overrides.yaml``. Jobs are grouped by the overrides that differ
between them, without ``seed``; the table gives mean ± std over seeds of the last evaluation, plus the pretrained
model as its own row (from an ``evaluate.py`` run passed as a root, else the mean ± std over the distinct
``pretrained`` records of the jobs); ``evaluate.py`` runs with different overrides (two models, two text lengths)
are separate rows, ``pretrained (<the overrides that differ>)``. Where jobs have a ``pretrained`` record, a
second table gives the change of each job from its **own** pretrained evaluation (mean ± std over seeds), so a
sweep whose jobs start from different models (``model=`` sweeps, seeds of a random initialisation) shows no false
training effect.
Significance: for each pair of groups and each metric, per-query values are averaged over the seeds of a group and
compared query by query (paired randomisation test and bootstrap CI of the mean difference, Holm-adjusted): that
covers query-level variation only. Where the groups have several seeds, the runs' mean metrics are also compared
across seeds (Welch's t-test over runs), which covers training-seed variation; ``report.md`` says which
test covers what (:func:`significance_rows`). Job directories without ``metrics.json`` are skipped with a warning
naming each and why.
``--x KEY`` treats the runs as a sweep over the numeric setting ``KEY`` (e.g. the α grid of
``sampler.alpha=0,0.25,0.5,0.75,1``, or ``seed``; a run without the override takes ``KEY`` from its resolved config,
so ``sampler=mono`` / ``sampler=cross`` runs are α = 1 / 0): rows in the order of ``KEY``, ``report_<KEY>.png``
(each metric against it) and ``report_<KEY>_tradeoff.png`` (monolingual mAP against rank distance and against
cross-lingual mAP, one point per value with its seed spread, the pretrained model starred or, far off, named).
``--each-eval`` reports every evaluation of a run, not only its last (a run evaluated after
each epoch gives one row per epoch, ``<group> @ <tag>``, compared query by query like any other row).

See docs/usage.md (the report) and docs/results.md.
"""

from __future__ import annotations

import csv
import io
import itertools
import json
import logging
import math
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from hybrid_ir.analysis.jobs import PRETRAINED, Job, find_jobs, sweep_value
from hybrid_ir.analysis.significance import (
    holm_bonferroni,
    paired_bootstrap,
    paired_randomization_test,
    welch_t_test,
)
from hybrid_ir.evaluation.outputs import LAREQA_COLUMNS as METRICS
from hybrid_ir.evaluation.outputs import per_query_path, read_per_query
from hybrid_ir.evaluation.plots import TradeoffPoint, plot_grouped_bars, plot_sweep, plot_tradeoff
from hybrid_ir.utils.io import atomic_write_text

log = logging.getLogger(__name__)

# metric -> (per-query setting, per-query column); rank distance is lower-is-better.
PER_QUERY = {
    "map_mono": ("mono", "ap"),
    "map_cross": ("cross", "ap"),
    "map_multi": ("multi", "ap"),
    "rank_distance": ("multi", "rank_distance"),
}


def scalar(record: dict, dataset: str, metric: str) -> float:
    value = record["datasets"][dataset]["scalars"].get(metric)
    return math.nan if value is None else float(value)


def _mean_std(values: Sequence[float]) -> tuple[float, float]:
    """Mean and sample standard deviation (0 for a single value)."""
    vals = np.array(values, dtype=float)
    return float(vals.mean()), float(vals.std(ddof=1)) if len(vals) > 1 else 0.0


def _groups(jobs: list[Job]) -> list[tuple[str, list[Job]]]:
    """The jobs by group, groups in sorted order."""
    ordered = sorted(jobs, key=lambda j: j.group)
    return [(group, list(members)) for group, members in itertools.groupby(ordered, key=lambda j: j.group)]


def pretrained_row(jobs: list[Job], dataset: str) -> dict | None:
    """The pretrained row from the jobs' own ``pretrained`` records: mean ± std over the distinct ones (``n``:
    how many differ; one when every job starts from the same model); ``None`` when no job has one."""
    distinct: dict[str, tuple[float, ...]] = {}  # keyed by repr, so that equal NaNs count once
    for job in jobs:
        if not job.evaluated and job.has(PRETRAINED):
            values = tuple(scalar(job.record(PRETRAINED), dataset, m) for m in METRICS)
            distinct.setdefault(repr(values), values)
    if not distinct:
        return None
    columns = list(zip(*distinct.values(), strict=True))
    return {
        "group": PRETRAINED,
        "n": len(distinct),
        **{m: _mean_std(c) for m, c in zip(METRICS, columns, strict=True)},
    }


def delta(job: Job, dataset: str, metric: str) -> float:
    """The job's last evaluation minus its own ``pretrained`` evaluation, for ``metric``."""
    return scalar(job.record(), dataset, metric) - scalar(job.record(PRETRAINED), dataset, metric)


def summary_rows(jobs: list[Job], dataset: str, x: str | None = None) -> list[dict]:
    """Rows of the table: the pretrained model, then one per group (mean, std and n over seeds); a group whose
    jobs all have a ``pretrained`` record also holds ``delta``: per metric, mean and std over its seeds of each
    job's change from its own pretrained evaluation. With ``x`` (an override name) each trained row also holds
    ``x`` (its value) and the rows follow it."""
    rows = []
    if not any(j.evaluated for j in jobs):
        row = pretrained_row(jobs, dataset)
        if row is not None:
            rows.append(row)
    for group, members in _groups(jobs):
        row: dict = {"group": group, "n": len(members)}
        for m in METRICS:
            row[m] = _mean_std([scalar(j.record(), dataset, m) for j in members])
        trained = not members[0].evaluated
        if trained and all(j.has(PRETRAINED) for j in members):
            row["delta"] = {m: _mean_std([delta(j, dataset, m) for j in members]) for m in METRICS}
        if x is not None and trained:
            row["x"] = sweep_value(members[0], x)
        rows.append(row)
    if x is not None:
        rows.sort(key=lambda r: ("x" in r, r.get("x", -math.inf)))
    return rows


def per_query_values(job: Job, dataset: str, metric: str) -> dict[tuple, float]:
    """``{(qid, lang, target): value}`` of the job's last evaluation for ``metric``."""
    data = read_per_query(per_query_path(job.path, dataset, job.record()["tag"]))
    setting, column = PER_QUERY[metric]
    out = {}
    for i, s in enumerate(data["setting"]):
        value = data[column][i]
        if s == setting and value is not None:
            out[(data["qid"][i], data["lang"][i], data["target"][i])] = float(value)
    return out


def group_runs(jobs: list[Job], dataset: str, metric: str) -> dict[str, list[dict[tuple, float]]]:
    """Per group: the per-query values of each of its runs (seeds)."""
    return {
        group: [per_query_values(j, dataset, metric) for j in members] for group, members in _groups(jobs)
    }


def seed_means(runs: Sequence[dict[tuple, float]]) -> dict[tuple, float]:
    """Per-query values averaged over a group's runs (queries present in every run)."""
    keys = set.intersection(*(set(r) for r in runs))
    return {k: float(np.mean([r[k] for r in runs])) for k in keys}


def significance_rows(jobs: list[Job], dataset: str, n_resamples: int = 10000, seed: int = 0) -> list[dict]:
    """For every pair of groups and metric, two tests of ``a − b``, p-values Holm-adjusted within each metric:

    * over queries (``p_randomization``, ``p_holm``, the bootstrap CI): each group's per-query values averaged
      over its seeds, compared query by query (paired randomisation test). It takes the trained models as
      fixed: query-level variation only.
    * over seeds (``p_seeds``, ``p_seeds_holm``): each run's mean over the same queries is one value, and
      Welch's t-test (:func:`~hybrid_ir.analysis.significance.welch_t_test`) compares the runs of ``a`` with
      those of ``b``; this covers training-seed variation (the queries taken as fixed), assuming run means vary
      normally from seed to seed. An ``evaluate.py`` group (a pretrained model) has no seed variation: it is one
      fixed value, and the other group's runs are tested against it (one-sample t-test). Only where each trained
      group has at least two runs; else ``None`` (a single seed says nothing about seed-to-seed variation).

    Pooling seeds per query alone would ignore seed-to-seed variation: two runs differing only by their seed
    differ consistently over thousands of queries, which the query-level test calls significant."""
    fixed = {group for group, members in _groups(jobs) if members[0].evaluated}
    rows = []
    for metric in METRICS:
        runs = group_runs(jobs, dataset, metric)
        means = {group: seed_means(r) for group, r in runs.items()}
        block = []
        for a, b in itertools.combinations(sorted(means), 2):
            keys = sorted(set(means[a]) & set(means[b]))
            if len(keys) < 2:
                continue
            x = np.array([means[a][k] for k in keys])
            y = np.array([means[b][k] for k in keys])
            rand = paired_randomization_test(x, y, n_resamples=n_resamples, seed=seed)
            boot = paired_bootstrap(x, y, n_resamples=n_resamples, seed=seed)
            run_a, run_b = (run_means(runs[g], keys, g in fixed) for g in (a, b))
            block.append(
                {
                    "metric": metric,
                    "a": a,
                    "b": b,
                    "n_queries": len(keys),
                    "mean_diff": rand.mean_diff,
                    "ci_low": boot.ci_low,
                    "ci_high": boot.ci_high,
                    "p_randomization": rand.p_value,
                    "p_bootstrap": boot.p_value,
                    "seeds_a": len(runs[a]),
                    "seeds_b": len(runs[b]),
                    "p_seeds": seed_level_p(run_a, run_b, a in fixed, b in fixed),
                }
            )
        if block:
            for key, adjusted_key in (("p_randomization", "p_holm"), ("p_seeds", "p_seeds_holm")):
                tested = [r for r in block if r[key] is not None]
                adjusted = holm_bonferroni([r[key] for r in tested]) if tested else []
                for r in block:
                    r[adjusted_key] = None
                for r, p in zip(tested, adjusted, strict=True):
                    r[adjusted_key] = float(p)
        rows.extend(block)
    return rows


def run_means(runs: Sequence[dict[tuple, float]], keys: Sequence[tuple], fixed: bool) -> list[float]:
    """Each run's mean over ``keys``; a ``fixed`` group (a pretrained model, no seeds) as one value."""
    values = [float(np.mean([r[k] for k in keys])) for r in runs]
    return [float(np.mean(values))] if fixed else values


def seed_level_p(a: Sequence[float], b: Sequence[float], a_fixed: bool, b_fixed: bool) -> float | None:
    """The over-seeds p-value of :func:`significance_rows` for the run means ``a`` and ``b`` (``None``: not
    tested: a trained group with one run, or two fixed models)."""
    if a_fixed and b_fixed:
        return None
    if a_fixed:
        a, b = b, a
    if len(a) < 2 or (len(b) < 2 and not (a_fixed or b_fixed)):
        return None
    return welch_t_test(a, b)


def to_markdown(rows: list[dict], sig: list[dict], dataset: str) -> str:
    lines = [
        f"### {dataset}: mean ± std over seeds (last evaluation)",
        "",
        "| run | n | " + " | ".join(METRICS) + " |",
        "|---|---:|" + "---:|" * len(METRICS),
    ]
    for r in rows:
        cells = [f"{r[m][0]:.4f} ± {r[m][1]:.4f}" if r["n"] > 1 else f"{r[m][0]:.4f}" for m in METRICS]
        lines.append(f"| {r['group']} | {r['n']} | " + " | ".join(cells) + " |")
    deltas = [r for r in rows if "delta" in r]
    if deltas:
        lines += [
            "",
            f"### {dataset}: change from each job's own pretrained evaluation (last − pretrained; mean ± std)",
            "",
            "| run | n | " + " | ".join(METRICS) + " |",
            "|---|---:|" + "---:|" * len(METRICS),
        ]
        for r in deltas:
            d = r["delta"]
            cells = [f"{d[m][0]:+.4f} ± {d[m][1]:.4f}" if r["n"] > 1 else f"{d[m][0]:+.4f}" for m in METRICS]
            lines.append(f"| {r['group']} | {r['n']} | " + " | ".join(cells) + " |")
    if sig:
        over_seeds = any(s["p_seeds"] is not None for s in sig)
        lines += [
            "",
            "### Paired significance over queries "
            + ("and over seeds " if over_seeds else "")
            + "(a − b; randomisation test, Holm-adjusted; 95% bootstrap CI)",
            "",
            *coverage_note(over_seeds),
            "",
            "| metric | a | b | queries | mean diff | 95% CI | p | p (Holm) |"
            + (" seeds | p seeds | p seeds (Holm) |" if over_seeds else ""),
            "|---|---|---|---:|---:|---|---:|---:|" + ("---:|---:|---:|" if over_seeds else ""),
        ]
        for s in sig:
            line = (
                f"| {s['metric']} | {s['a']} | {s['b']} | {s['n_queries']} | {s['mean_diff']:+.4f} | "
                f"[{s['ci_low']:+.4f}, {s['ci_high']:+.4f}] | {s['p_randomization']:.4f} | {s['p_holm']:.4f} |"
            )
            if over_seeds:
                tested = s["p_seeds"] is not None
                line += f" {s['seeds_a']} vs {s['seeds_b']} | " + (
                    f"{s['p_seeds']:.4f} | {s['p_seeds_holm']:.4f} |" if tested else "— | — |"
                )
            lines.append(line)
    return "\n".join(lines) + "\n"


def coverage_note(over_seeds: bool) -> list[str]:
    """What the significance table's tests cover (see :func:`significance_rows`), as Markdown lines."""
    queries = (
        "`p`: query-level variation only: each run's per-query values averaged over its seeds and compared query "
        "by query, the trained models taken as fixed."
    )
    if not over_seeds:
        return [
            f"{queries} Training-seed variation is not tested: no compared run has two or more seeds "
            "(train each with several, e.g. `seed=0,1,2`, to test it)."
        ]
    return [
        f"{queries} `p seeds`: training-seed variation: Welch's t-test on the runs' mean metrics (one value per "
        "seed, over the same queries; a pretrained model is one fixed value, tested against with a one-sample "
        "t-test), the queries taken as fixed; it assumes normal seed-to-seed variation, and with 2 or 3 seeds per "
        "run (1 or 2 degrees of freedom) only a difference large against the seeds' spread comes out small. A "
        "difference holds over both sources of variation only where both p are small; `—`: a run with one seed, "
        "training-seed variation not tested."
    ]


def to_csv(rows: list[dict]) -> str:
    buf = io.StringIO()
    writer = csv.writer(buf)
    stats = ("mean", "std")
    with_delta = any("delta" in r for r in rows)
    delta_header = [f"{m}_delta_{s}" for m in METRICS for s in stats] if with_delta else []
    writer.writerow(["run", "n", *[f"{m}_{s}" for m in METRICS for s in stats], *delta_header])
    for r in rows:
        cells = [f"{v:.6f}" for m in METRICS for v in r[m]]
        if with_delta:
            cells += (
                [f"{v:.6f}" for m in METRICS for v in r["delta"][m]]
                if "delta" in r
                else [""] * len(delta_header)
            )
        writer.writerow([r["group"], r["n"], *cells])
    return buf.getvalue()


def write_report(
    roots: Sequence[Path],
    dataset: str | None,
    out: Path,
    n_resamples: int = 10000,
    x: str | None = None,
    each_eval: bool = False,
) -> dict:
    """Write ``report.csv``, ``report.md``, ``significance.json`` and ``report.png`` into ``out`` (and
    ``report_<x>.png`` for a sweep over the override ``x``); ``each_eval``: a row per evaluation of a run."""
    jobs = find_jobs(roots, x, each_eval)
    dataset = dataset or next(iter(jobs[0].record()["datasets"]))
    rows = summary_rows(jobs, dataset, x)
    sig = significance_rows(jobs, dataset, n_resamples=n_resamples)
    out.mkdir(parents=True, exist_ok=True)
    atomic_write_text(out / "report.csv", to_csv(rows))
    markdown = to_markdown(rows, sig, dataset)
    atomic_write_text(out / "report.md", markdown)
    atomic_write_text(out / "significance.json", json.dumps(sig, indent=2) + "\n")
    plot_grouped_bars(
        {r["group"]: {m: r[m] for m in METRICS if m.startswith("map")} for r in rows},
        out / "report.png",
        title=f"{dataset}: mAP by run (mean ± std over seeds)",
        ylabel="mAP",
    )
    if x is not None:
        swept = [r for r in rows if "x" in r]
        plot_sweep(
            [r["x"] for r in swept],
            {m: [r[m] for r in swept] for m in METRICS},
            out / f"report_{x}.png",
            title=f"{dataset}: metrics against {x} (mean ± std over seeds)",
            xlabel=x,
        )
        pretrained = [r for r in rows if "x" not in r]
        plot_tradeoff(
            [TradeoffPoint(r["group"], {m: r[m] for m in METRICS}, reference=True) for r in pretrained]
            + [TradeoffPoint(f"{x}={r['x']:g}", {m: r[m] for m in METRICS}) for r in swept],
            out / f"report_{x}_tradeoff.png",
            title=f"{dataset}: the trade-off along {x} (mean ± std over seeds)",
        )
    return {"rows": rows, "significance": sig, "markdown": markdown, "dataset": dataset}
