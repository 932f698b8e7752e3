"""Collect the runs of a multirun into one table (CSV + Markdown), a bar chart, and paired significance tests.

``python -m hybrid_ir.report multirun/train/<date>/ [--dataset mlqa-r] [--out <dir>] [--x sampler.alpha]``
(or ``make report ARGS=...``).

Each job directory holds ``metrics.json`` (one record per evaluation: ``pretrained``, ``epoch0``, ...),
``per_query/<dataset>__<tag>.json`` and ``.hydra/overrides.yaml``. Jobs are grouped by the overrides that differ
between them, without ``seed``; the table gives mean ± std over seeds of the last evaluation, plus the pretrained
model as its own row (from the jobs' ``pretrained`` records, or from an ``evaluate.py`` run passed as a root).
Significance: for each pair of groups and each metric, per-query values are averaged over the seeds of a group and
compared query by query (paired randomisation test and bootstrap CI of the mean difference, Holm-adjusted).
``--x KEY`` treats the runs as a sweep over the numeric override ``KEY`` (e.g. the α grid of
``sampler.alpha=0,0.25,0.5,0.75,1``): rows in the order of ``KEY`` and ``report_<KEY>.png``, each metric against it.
"""

from __future__ import annotations

import argparse
import csv
import io
import itertools
import json
import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import yaml

from hybrid_ir.evaluation.plots import plot_grouped_bars, plot_sweep
from hybrid_ir.evaluation.significance import holm_bonferroni, paired_bootstrap, paired_randomization_test
from hybrid_ir.utils.errors import DataError
from hybrid_ir.utils.io import atomic_write_text

METRICS = ("map_mono", "map_cross", "map_multi", "rank_distance")
PRETRAINED = "pretrained"
# metric -> (per-query setting, per-query column); rank distance is lower-is-better.
PER_QUERY = {
    "map_mono": ("mono", "ap"),
    "map_cross": ("cross", "ap"),
    "map_multi": ("multi", "ap"),
    "rank_distance": ("multi", "rank_distance"),
}


@dataclass
class Job:
    """One run of a sweep: its group label, seed, directory and final evaluation record."""

    group: str
    seed: str
    path: Path
    records: list[dict]
    overrides: tuple[str, ...] = ()

    def record(self, tag: str | None = None) -> dict:
        """The evaluation record with ``tag`` (default: the last one)."""
        if tag is None:
            return self.records[-1]
        for rec in self.records:
            if rec["tag"] == tag:
                return rec
        raise KeyError(tag)


def read_job(path: Path) -> Job:
    """Read a job directory (``metrics.json`` and the Hydra overrides)."""
    metrics_file = path / "metrics.json"
    try:
        metrics = json.loads(metrics_file.read_text(encoding="utf-8"))
    except json.JSONDecodeError as err:
        raise DataError(metrics_file, f"line {err.lineno}", f"invalid JSON ({err.msg})") from err
    records = metrics["records"] if isinstance(metrics, dict) else metrics
    if not records:
        raise DataError(metrics_file, "records", "no evaluation recorded")
    overrides_file = path / ".hydra" / "overrides.yaml"
    overrides = yaml.safe_load(overrides_file.read_text()) if overrides_file.exists() else []
    seed = next((o.split("=", 1)[1] for o in overrides if o.startswith("seed=")), "0")
    kept = tuple(o for o in overrides if not o.startswith(("seed=", "hydra", "experiment=")))
    group = ",".join(kept) or "default"
    config_file = path / ".hydra" / "config.yaml"
    if (
        config_file.exists()
        and (yaml.safe_load(config_file.read_text()) or {}).get("task_name") == "evaluate"
    ):
        group = PRETRAINED  # an evaluate.py run of the pretrained model
    return Job(group=group, seed=seed, path=path, records=records, overrides=kept)


def find_jobs(roots: Sequence[Path]) -> list[Job]:
    """All job directories (those with a ``metrics.json``) under ``roots``, sorted by path."""
    paths = sorted({p.parent for root in roots for p in Path(root).rglob("metrics.json")})
    if not paths:
        raise FileNotFoundError(f"no metrics.json under {', '.join(map(str, roots))}")
    jobs = [read_job(p) for p in paths]
    trained = [j for j in jobs if j.group != PRETRAINED]
    if len(trained) > 1:  # label runs by what varies between them (a sweep's shared overrides say nothing)
        common = set.intersection(*(set(j.overrides) for j in trained))
        for job in trained:
            job.group = ",".join(o for o in job.overrides if o not in common) or job.group
    return jobs


def scalar(record: dict, dataset: str, metric: str) -> float:
    value = record["datasets"][dataset]["scalars"].get(metric)
    return math.nan if value is None else float(value)


def sweep_value(job: Job, key: str) -> float:
    """The numeric value of the override ``key`` of a trained job (``--x``)."""
    where = job.path / ".hydra" / "overrides.yaml"
    for override in job.overrides:
        name, _, value = override.partition("=")
        if name == key:
            try:
                return float(value)
            except ValueError:
                raise DataError(where, key, f"expected a number for --x, got {value!r}") from None
    raise DataError(where, key, f"no override {key}=...; with --x {key} every trained run needs one")


def summary_rows(jobs: list[Job], dataset: str, x: str | None = None) -> list[dict]:
    """Rows of the table: the pretrained model, then one per group (mean, std and n over seeds); with ``x``
    (an override name) each trained row also holds ``x`` (its value) and the rows follow it."""
    rows = []
    first = jobs[0]
    has_group = any(j.group == PRETRAINED for j in jobs)
    if not has_group and any(r["tag"] == PRETRAINED for r in first.records):
        rec = first.record(PRETRAINED)
        rows.append({"group": PRETRAINED, "n": 1, **{m: (scalar(rec, dataset, m), 0.0) for m in METRICS}})
    for group, members in itertools.groupby(sorted(jobs, key=lambda j: j.group), key=lambda j: j.group):
        members = list(members)
        row: dict = {"group": group, "n": len(members)}
        for m in METRICS:
            vals = np.array([scalar(j.record(), dataset, m) for j in members])
            row[m] = (float(vals.mean()), float(vals.std(ddof=1)) if len(vals) > 1 else 0.0)
        if x is not None and group != PRETRAINED:
            row["x"] = sweep_value(members[0], x)
        rows.append(row)
    if x is not None:
        rows.sort(key=lambda r: (r["group"] != PRETRAINED, r.get("x", -math.inf)))
    return rows


def per_query_values(job: Job, dataset: str, metric: str) -> dict[tuple, float]:
    """``{(qid, lang, target): value}`` of the job's last evaluation for ``metric``."""
    tag = job.record()["tag"]
    data = json.loads((job.path / "per_query" / f"{dataset}__{tag}.json").read_text(encoding="utf-8"))
    setting, column = PER_QUERY[metric]
    out = {}
    for i, s in enumerate(data["setting"]):
        value = data[column][i]
        if s == setting and value is not None:
            out[(data["qid"][i], data["lang"][i], data["target"][i])] = float(value)
    return out


def group_means(jobs: list[Job], dataset: str, metric: str) -> dict[str, dict[tuple, float]]:
    """Per group: per-query values averaged over its seeds (queries present in every seed)."""
    out = {}
    for group, members in itertools.groupby(sorted(jobs, key=lambda j: j.group), key=lambda j: j.group):
        runs = [per_query_values(j, dataset, metric) for j in members]
        keys = set.intersection(*(set(r) for r in runs))
        out[group] = {k: float(np.mean([r[k] for r in runs])) for k in keys}
    return out


def significance_rows(jobs: list[Job], dataset: str, n_resamples: int = 10000, seed: int = 0) -> list[dict]:
    """Paired tests for every pair of groups and metric; p-values Holm-adjusted within each metric."""
    rows = []
    for metric in METRICS:
        means = group_means(jobs, dataset, metric)
        block = []
        for a, b in itertools.combinations(sorted(means), 2):
            keys = sorted(set(means[a]) & set(means[b]))
            if len(keys) < 2:
                continue
            x = np.array([means[a][k] for k in keys])
            y = np.array([means[b][k] for k in keys])
            rand = paired_randomization_test(x, y, n_resamples=n_resamples, seed=seed)
            boot = paired_bootstrap(x, y, n_resamples=n_resamples, seed=seed)
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
                }
            )
        if block:
            adjusted = holm_bonferroni([r["p_randomization"] for r in block])
            for r, p in zip(block, adjusted, strict=True):
                r["p_holm"] = float(p)
        rows.extend(block)
    return rows


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
    if sig:
        lines += [
            "",
            "### Paired significance over queries "
            "(a − b; randomisation test, Holm-adjusted; 95% bootstrap CI)",
            "",
            "| metric | a | b | queries | mean diff | 95% CI | p | p (Holm) |",
            "|---|---|---|---:|---:|---|---:|---:|",
        ]
        for s in sig:
            lines.append(
                f"| {s['metric']} | {s['a']} | {s['b']} | {s['n_queries']} | {s['mean_diff']:+.4f} | "
                f"[{s['ci_low']:+.4f}, {s['ci_high']:+.4f}] | {s['p_randomization']:.4f} | {s['p_holm']:.4f} |"
            )
    return "\n".join(lines) + "\n"


def to_csv(rows: list[dict]) -> str:
    buf = io.StringIO()
    writer = csv.writer(buf)
    writer.writerow(["run", "n", *[f"{m}_{s}" for m in METRICS for s in ("mean", "std")]])
    for r in rows:
        writer.writerow([r["group"], r["n"], *[f"{v:.6f}" for m in METRICS for v in r[m]]])
    return buf.getvalue()


def write_report(
    roots: Sequence[Path], dataset: str | None, out: Path, n_resamples: int = 10000, x: str | None = None
) -> dict:
    """Write ``report.csv``, ``report.md``, ``significance.json`` and ``report.png`` into ``out`` (and
    ``report_<x>.png`` for a sweep over the override ``x``)."""
    jobs = find_jobs(roots)
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
    return {"rows": rows, "significance": sig, "markdown": markdown, "dataset": dataset}


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("roots", nargs="+", type=Path, help="multirun directories (searched recursively)")
    parser.add_argument("--dataset", default=None, help="evaluation dataset (default: the first one)")
    parser.add_argument("--out", type=Path, default=None, help="output folder (default: the first root)")
    parser.add_argument("--n-resamples", type=int, default=10000)
    parser.add_argument(
        "--x", default=None, metavar="KEY", help="a numeric override the runs sweep, e.g. sampler.alpha"
    )
    args = parser.parse_args(argv)
    result = write_report(args.roots, args.dataset, args.out or args.roots[0], args.n_resamples, args.x)
    print(result["markdown"])


if __name__ == "__main__":
    main()
