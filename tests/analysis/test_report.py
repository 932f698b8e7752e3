"""The multirun report: grouping by overrides, mean ± std over seeds, paired tests over queries."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import yaml
from scipy import stats

from hybrid_ir.analysis.jobs import find_jobs
from hybrid_ir.analysis.report import significance_rows, summary_rows, write_report
from hybrid_ir.evaluation.outputs import per_query_path, write_per_query
from hybrid_ir.tasks.report import main
from hybrid_ir.utils.errors import ConfigError, DataError

QIDS = [f"q{i}" for i in range(12)]


def make_job(
    root: Path,
    name: str,
    overrides: list[str],
    maps: dict[str, float],
    ap: list[float],
    pretrained: dict[str, float] | None = None,
) -> None:
    """A job directory; its ``pretrained`` record has ``maps`` but map_multi 0.1, or ``pretrained`` if given."""
    job = root / name
    (job / ".hydra").mkdir(parents=True)
    (job / ".hydra" / "overrides.yaml").write_text(yaml.safe_dump(overrides))
    scalars = {**maps, "rank_distance": 3.0}
    before = {**scalars, "map_multi": 0.1} if pretrained is None else {**pretrained, "rank_distance": 3.0}
    records = [
        {"tag": "pretrained", "step": 0, "datasets": {"ds": {"scalars": before}}},
        {"tag": "epoch0", "step": 5, "datasets": {"ds": {"scalars": scalars}}},
    ]
    (job / "metrics.json").write_text(json.dumps(records))
    write_multi_per_query(job, "epoch0", ap)


def write_multi_per_query(job: Path, tag: str, ap: list[float]) -> None:
    """The job's per-query file of evaluation ``tag``: multilingual rows of QIDS with average precisions ``ap``."""
    columns = {
        "qid": QIDS,
        "lang": ["en"] * 12,
        "setting": ["multi"] * 12,
        "target": ["multi"] * 12,
        "ap": ap,
        "ap_at_k": ap,
        "rank_distance": [1.0] * 12,
    }
    write_per_query(per_query_path(job, "ds", tag), columns)


@pytest.fixture
def sweep(tmp_path: Path) -> Path:
    rng = np.random.default_rng(0)
    base = rng.uniform(0.2, 0.6, size=12)
    make_job(
        tmp_path,
        "0",
        ["sampler=hybrid", "seed=0"],
        {"map_mono": 0.5, "map_cross": 0.4, "map_multi": 0.30},
        list(base + 0.2),
    )
    make_job(
        tmp_path,
        "1",
        ["sampler=hybrid", "seed=1"],
        {"map_mono": 0.7, "map_cross": 0.4, "map_multi": 0.40},
        list(base + 0.2),
    )
    make_job(
        tmp_path,
        "2",
        ["sampler=mono", "seed=0"],
        {"map_mono": 0.6, "map_cross": 0.3, "map_multi": 0.20},
        list(base),
    )
    return tmp_path


def test_summary_mean_and_sample_std(sweep: Path) -> None:
    rows = {r["group"]: r for r in summary_rows(find_jobs([sweep]), "ds")}
    assert list(rows) == ["pretrained", "sampler=hybrid", "sampler=mono"]
    mean, std = rows["sampler=hybrid"]["map_mono"]
    assert mean == pytest.approx(0.6)
    assert std == pytest.approx(np.sqrt(((0.5 - 0.6) ** 2 + (0.7 - 0.6) ** 2) / 1))  # ddof = 1
    assert rows["sampler=hybrid"]["n"] == 2 and rows["sampler=mono"]["n"] == 1
    assert rows["pretrained"]["map_multi"][0] == pytest.approx(0.1)


def test_significance_detects_a_constant_shift(sweep: Path) -> None:
    sig = [
        s for s in significance_rows(find_jobs([sweep]), "ds", n_resamples=2000) if s["metric"] == "map_multi"
    ]
    assert len(sig) == 1
    s = sig[0]
    assert (s["a"], s["b"]) == ("sampler=hybrid", "sampler=mono")
    assert s["mean_diff"] == pytest.approx(0.2)
    assert s["ci_low"] == pytest.approx(0.2) and s["ci_high"] == pytest.approx(0.2)
    # only the all-plus and all-minus sign patterns (2 of 2**12) reach |0.2|: p ≈ (1 + 2000 * 2 / 4096) / 2001
    assert s["p_randomization"] < 0.005
    assert s["n_queries"] == 12


def test_write_report_files_and_cli(sweep: Path, tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    out = tmp_path / "out"
    result = write_report([sweep], "ds", out, n_resamples=200)
    csv_lines = (out / "report.csv").read_text().splitlines()
    assert csv_lines[0].startswith("run,n,map_mono_mean,map_mono_std")
    assert len(csv_lines) == 4
    assert "| sampler=hybrid | 2 | 0.6000 ± 0.1414" in result["markdown"]
    assert (out / "report.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    main([str(sweep), "--dataset", "ds", "--out", str(tmp_path / "cli"), "--n-resamples", "100"])
    assert "sampler=mono" in capsys.readouterr().out


def test_no_runs_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"no metrics\.json"):
        find_jobs([tmp_path])


def test_an_evaluate_run_is_the_pretrained_row(sweep: Path) -> None:
    make_job(
        sweep, "pre", ["data=mlqa-r"], {"map_mono": 0.55, "map_cross": 0.35, "map_multi": 0.25}, [0.3] * 12
    )
    (sweep / "pre" / ".hydra" / "config.yaml").write_text(yaml.safe_dump({"task_name": "evaluate"}))
    rows = summary_rows(find_jobs([sweep]), "ds")
    pretrained = [r for r in rows if r["group"] == "pretrained"]
    assert len(pretrained) == 1  # the evaluate run, not the jobs' own pretrained records
    assert pretrained[0]["map_mono"][0] == pytest.approx(0.55)


def test_evaluate_runs_of_different_settings_are_separate_pretrained_rows(sweep: Path) -> None:
    """Two models (or text lengths) evaluated without training are two rows, not the mean of both; repeated
    evaluations of one setting stay one row."""
    settings = [("a", ["data=mlqa-r", "model.max_length=64"], 0.55), ("b", ["data=mlqa-r"], 0.65)]
    settings.append(("c", ["data=mlqa-r"], 0.75))
    for name, overrides, mono in settings:
        make_job(sweep, name, overrides, {"map_mono": mono, "map_cross": 0.35, "map_multi": 0.25}, [0.3] * 12)
        (sweep / name / ".hydra" / "config.yaml").write_text(yaml.safe_dump({"task_name": "evaluate"}))
    rows = {r["group"]: r for r in summary_rows(find_jobs([sweep]), "ds")}
    assert rows["pretrained (model.max_length=64)"]["map_mono"][0] == pytest.approx(0.55)
    assert rows["pretrained"]["n"] == 2 and rows["pretrained"]["map_mono"][0] == pytest.approx(0.70)
    assert "delta" not in rows["pretrained (model.max_length=64)"]
    assert {"sampler=hybrid", "sampler=mono"} <= set(rows)  # the trained runs keep their names


def test_groups_are_named_by_what_varies(tmp_path: Path) -> None:
    for i, (sampler, seed) in enumerate([("hybrid", 0), ("mono", 0), ("hybrid", 1)]):
        make_job(
            tmp_path,
            str(i),
            [f"sampler={sampler}", "trainer.max_steps=2", f"seed={seed}"],
            {"map_mono": 0.5, "map_cross": 0.4, "map_multi": 0.3},
            [0.5] * 12,
        )
    assert sorted({j.group for j in find_jobs([tmp_path])}) == ["sampler=hybrid", "sampler=mono"]


def test_runs_of_different_experiments_are_named_by_their_experiment(tmp_path: Path) -> None:
    # an experiment shared by every run names nothing; experiments that differ name the groups
    maps = {"map_mono": 0.5, "map_cross": 0.4, "map_multi": 0.3}
    for i, (experiment, seed) in enumerate(
        [("replication", 0), ("replication_negatives", 0), ("replication", 1)]
    ):
        make_job(
            tmp_path, str(i), [f"experiment={experiment}", "sampler=hybrid", f"seed={seed}"], maps, [0.5] * 12
        )
    groups = sorted({j.group for j in find_jobs([tmp_path])})
    assert groups == ["experiment=replication", "experiment=replication_negatives"]


def _alpha_sweep(root: Path, alphas: list[str]) -> None:
    for i, alpha in enumerate(alphas):
        mono = 0.5 + float(alpha) / 10 if alpha != "high" else 0.5
        maps = {"map_mono": mono, "map_cross": 0.4, "map_multi": 0.3}
        make_job(root, str(i), ["sampler=hybrid", f"sampler.alpha={alpha}", "seed=0"], maps, [0.5] * 12)


def test_sweep_rows_follow_the_swept_value_and_are_plotted(tmp_path: Path) -> None:
    _alpha_sweep(tmp_path / "runs", ["0.5", "1", "0", "0.25"])  # job order differs from value order
    result = write_report([tmp_path / "runs"], "ds", tmp_path / "out", n_resamples=50, x="sampler.alpha")
    rows = result["rows"]
    assert rows[0]["group"] == "pretrained" and "x" not in rows[0]
    assert [r["x"] for r in rows[1:]] == [0.0, 0.25, 0.5, 1.0]
    assert [r["map_mono"][0] for r in rows[1:]] == pytest.approx([0.5, 0.525, 0.55, 0.6])
    assert (tmp_path / "out" / "report_sampler.alpha.png").read_bytes()[:4] == b"\x89PNG"


@pytest.mark.parametrize(
    ("alphas", "message"),
    [(["0", "high"], "expected a number for --x, got 'high'"), (["0"], "no override sampler.beta=")],
)
def test_sweep_key_must_be_a_number_in_every_run(tmp_path: Path, alphas: list[str], message: str) -> None:
    _alpha_sweep(tmp_path, alphas)
    key = "sampler.beta" if len(alphas) == 1 else "sampler.alpha"
    with pytest.raises(DataError, match=message):
        write_report([tmp_path], "ds", tmp_path / "out", n_resamples=50, x=key)


def test_each_job_is_compared_with_its_own_pretrained_record(tmp_path: Path) -> None:
    """Jobs that start from different models and end equal show a different change, not a training effect
    measured against the first job's starting point."""
    final = {"map_mono": 0.6, "map_cross": 0.5, "map_multi": 0.4}
    starts = {"a": 0.2, "b": 0.4}
    for i, (model, seed) in enumerate([("a", 0), ("a", 1), ("b", 0), ("b", 1)]):
        before = {"map_mono": starts[model], "map_cross": starts[model] + 0.01 * seed, "map_multi": 0.3}
        make_job(tmp_path, str(i), [f"model={model}", f"seed={seed}"], final, [0.5] * 12, pretrained=before)
    rows = {r["group"]: r for r in summary_rows(find_jobs([tmp_path]), "ds")}
    assert rows["model=a"]["delta"]["map_mono"] == pytest.approx((0.4, 0.0))
    assert rows["model=b"]["delta"]["map_mono"] == pytest.approx((0.2, 0.0))
    mean, std = rows["model=a"]["delta"]["map_cross"]
    assert mean == pytest.approx(0.295) and std == pytest.approx(np.std([0.3, 0.29], ddof=1))
    # the pretrained row summarises the four distinct starting points, not the first job's
    assert rows["pretrained"]["n"] == 4
    assert rows["pretrained"]["map_mono"][0] == pytest.approx(0.3)
    result = write_report([tmp_path], "ds", tmp_path / "out", n_resamples=50)
    assert "change from each job's own pretrained evaluation" in result["markdown"]
    assert "| model=a | 2 | +0.4000 ± 0.0000 |" in result["markdown"]
    header = (tmp_path / "out" / "report.csv").read_text().splitlines()[0]
    assert header.endswith("rank_distance_delta_mean,rank_distance_delta_std")


def test_identical_pretrained_records_give_one_pretrained_row(sweep: Path) -> None:
    for job in ("0", "1", "2"):
        records = json.loads((sweep / job / "metrics.json").read_text())
        records[0]["datasets"]["ds"]["scalars"] = {"map_mono": 0.5, "map_cross": 0.3, "map_multi": 0.1}
        (sweep / job / "metrics.json").write_text(json.dumps(records))
    rows = summary_rows(find_jobs([sweep]), "ds")
    assert rows[0]["group"] == "pretrained" and rows[0]["n"] == 1
    assert rows[0]["map_cross"] == pytest.approx((0.3, 0.0))


@pytest.mark.parametrize("seed_override", ["seed={}", "+seed={}", "++seed={}"])
def test_sweep_over_seeds(tmp_path: Path, seed_override: str) -> None:
    for seed in (2, 0, 1):
        maps = {"map_mono": 0.5 + seed / 10, "map_cross": 0.4, "map_multi": 0.3}
        make_job(tmp_path, str(seed), ["sampler=hybrid", seed_override.format(seed)], maps, [0.5] * 12)
    result = write_report([tmp_path], "ds", tmp_path / "out", n_resamples=50, x="seed")
    trained = [r for r in result["rows"] if "x" in r]
    assert [(r["x"], r["n"]) for r in trained] == [(0.0, 1), (1.0, 1), (2.0, 1)]
    assert [r["map_mono"][0] for r in trained] == pytest.approx([0.5, 0.6, 0.7])
    assert (tmp_path / "out" / "report_seed.png").read_bytes()[:4] == b"\x89PNG"


def test_each_eval_gives_a_row_per_evaluation_compared_query_by_query(tmp_path: Path) -> None:
    # one run evaluated after epochs 0 and 1: by default only its last evaluation is reported; with each_eval
    # both, each with its own per-query values and its change from the run's own pretrained record
    make_job(
        tmp_path,
        "0",
        ["trainer.max_epochs=2", "seed=0"],
        {"map_mono": 0.5, "map_cross": 0.4, "map_multi": 0.3},
        [0.5] * 12,
    )
    job = tmp_path / "0"
    records = json.loads((job / "metrics.json").read_text())
    later = {**records[1]["datasets"]["ds"]["scalars"], "map_multi": 0.45}
    records.append({"tag": "epoch1", "step": 10, "datasets": {"ds": {"scalars": later}}})
    (job / "metrics.json").write_text(json.dumps(records))
    write_multi_per_query(job, "epoch1", [0.9] * 12)
    assert [r["group"] for r in summary_rows(find_jobs([tmp_path]), "ds")] == [
        "pretrained",
        "trainer.max_epochs=2",
    ]
    jobs = find_jobs([tmp_path], each_eval=True)
    rows = {r["group"]: r for r in summary_rows(jobs, "ds")}
    assert rows["trainer.max_epochs=2 @ epoch0"]["map_multi"][0] == pytest.approx(0.3)
    assert rows["trainer.max_epochs=2 @ epoch1"]["map_multi"][0] == pytest.approx(0.45)
    assert rows["trainer.max_epochs=2 @ epoch1"]["delta"]["map_multi"][0] == pytest.approx(0.45 - 0.1)
    sig = [r for r in significance_rows(jobs, "ds", n_resamples=200) if r["metric"] == "map_multi"]
    assert len(sig) == 1 and sig[0]["mean_diff"] == pytest.approx(0.5 - 0.9)


def test_a_missing_directory_is_one_clean_error(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    with pytest.raises(SystemExit) as info:
        main([str(tmp_path / "no-such-dir"), "--out", str(tmp_path / "out")])
    assert info.value.code == 1
    assert capsys.readouterr().err == (
        f"Error: no such directory: {tmp_path / 'no-such-dir'}; give run or multirun directories of train.py / "
        "evaluate.py (e.g. multirun/train/<date>/)\n"
    )


def test_job_directories_without_metrics_are_named_with_why(
    sweep: Path, caplog: pytest.LogCaptureFixture
) -> None:
    killed = sweep / "3"
    (killed / ".hydra").mkdir(parents=True)
    (killed / "checkpoints").mkdir()
    (killed / "checkpoints" / "last.ckpt").write_bytes(b"")
    dry = sweep / "4"
    (dry / ".hydra").mkdir(parents=True)
    (dry / "batch_stats.json").write_text("{}")
    with caplog.at_level("WARNING", logger="hybrid_ir.analysis.report"):
        jobs = find_jobs([sweep])
    assert sorted(j.path.name for j in jobs) == ["0", "1", "2"]
    warnings = [r.getMessage() for r in caplog.records if r.levelname == "WARNING"]
    assert len(warnings) == 2
    assert warnings[0].startswith(f"skipped {killed}: no metrics.json: the run failed or was stopped")
    assert f"resume it with hydra.run.dir={killed} ckpt_path=last" in warnings[0]
    assert warnings[1] == f"skipped {dry}: a dry run (dry_run=true): batch_stats.json, no evaluation"


def _seed_runs(root: Path, group: str, offsets: list[float], base: np.ndarray) -> None:
    """One job per seed of ``group``; seed ``s`` scores ``base + offsets[s]`` on every query."""
    for seed, offset in enumerate(offsets):
        ap = list(base + offset)
        maps = {"map_mono": 0.5, "map_cross": 0.4, "map_multi": float(np.mean(ap))}
        make_job(root, f"{group}{seed}", [f"sampler={group}", f"seed={seed}"], maps, ap)


def test_seed_to_seed_variation_is_tested_across_seeds(tmp_path: Path) -> None:
    # Two samplers whose seeds scatter by ±0.05 on every query, 0.01 apart on average: pooled per query the
    # 0.01 is consistent over all 12 queries (query-level p tiny), but across seeds it is noise.
    base = np.random.default_rng(0).uniform(0.3, 0.6, size=12)
    _seed_runs(tmp_path, "hybrid", [0.06, -0.04, 0.01], base)
    _seed_runs(tmp_path, "mono", [-0.05, 0.05, 0.0], base)
    (s,) = [
        r
        for r in significance_rows(find_jobs([tmp_path]), "ds", n_resamples=2000)
        if r["metric"] == "map_multi"
    ]
    assert s["mean_diff"] == pytest.approx(0.01)
    assert s["p_randomization"] < 0.01  # the query-level test alone calls it significant
    assert (s["seeds_a"], s["seeds_b"]) == (3, 3)
    # Welch's t-test on the runs' means, whose differences are the seeds' offsets
    welch = stats.ttest_ind([0.06, -0.04, 0.01], [-0.05, 0.05, 0.0], equal_var=False)
    assert s["p_seeds"] == pytest.approx(welch.pvalue) and s["p_seeds"] > 0.5
    assert s["p_seeds_holm"] == pytest.approx(s["p_seeds"])


def test_a_consistent_gain_over_seeds_is_small_across_seeds_too(tmp_path: Path) -> None:
    base = np.random.default_rng(0).uniform(0.3, 0.6, size=12)
    _seed_runs(tmp_path, "hybrid", [0.10, 0.11, 0.09], base)
    _seed_runs(tmp_path, "mono", [0.0, 0.01, -0.01], base)
    (s,) = [
        r
        for r in significance_rows(find_jobs([tmp_path]), "ds", n_resamples=200)
        if r["metric"] == "map_multi"
    ]
    assert s["p_seeds"] < 0.001


def test_a_pretrained_model_is_one_fixed_value_against_the_seeds(sweep: Path) -> None:
    make_job(
        sweep, "pre", ["data=mlqa-r"], {"map_mono": 0.55, "map_cross": 0.35, "map_multi": 0.25}, [0.3] * 12
    )
    (sweep / "pre" / ".hydra" / "config.yaml").write_text(yaml.safe_dump({"task_name": "evaluate"}))
    rows = significance_rows(find_jobs([sweep]), "ds", n_resamples=200)
    sig = {(r["a"], r["b"]): r for r in rows if r["metric"] == "map_multi"}
    # sampler=hybrid has two seeds with identical per-query values: no seed variation, a clear difference
    assert sig[("pretrained", "sampler=hybrid")]["p_seeds"] == 0.0
    # sampler=mono has one seed: not tested across seeds
    assert sig[("pretrained", "sampler=mono")]["p_seeds"] is None
    assert sig[("sampler=hybrid", "sampler=mono")]["p_seeds"] is None


def test_the_report_says_what_the_tests_cover(sweep: Path, tmp_path: Path) -> None:
    single = tmp_path / "single"
    for name in ("0", "2"):  # one seed per run
        make_job(
            single,
            name,
            [f"sampler={name}", "seed=0"],
            {"map_mono": 0.5, "map_cross": 0.4, "map_multi": 0.3},
            [0.5] * 12,
        )
    markdown = write_report([single], "ds", tmp_path / "out1", n_resamples=50)["markdown"]
    assert "query-level variation only" in markdown
    assert "Training-seed variation is not tested: no compared run has two or more seeds" in markdown
    assert "p seeds" not in markdown
    _seed_runs(tmp_path / "multi", "hybrid", [0.01, 0.02], np.full(12, 0.4))
    _seed_runs(tmp_path / "multi", "mono", [0.0, 0.01], np.full(12, 0.4))
    markdown = write_report([tmp_path / "multi"], "ds", tmp_path / "out2", n_resamples=50)["markdown"]
    assert "| seeds | p seeds | p seeds (Holm) |" in markdown
    assert "`p seeds`: training-seed variation: Welch's t-test" in markdown
    assert "| 2 vs 2 |" in markdown


def test_runs_of_a_sampler_group_take_the_swept_value_from_their_config(tmp_path: Path) -> None:
    """``sampler=mono`` / ``sampler=cross`` set α through their group (config 1.0 / 0.0): with ``--x sampler.alpha``
    they are the sweep's ends, next to runs that override it; the trade-off picture is drawn from the rows."""
    runs = [("mono", ["sampler=mono"], 1.0, 0.6), ("cross", ["sampler=cross"], 0.0, 0.5)]
    runs += [("a25", ["sampler=hybrid", "sampler.alpha=0.25"], None, 0.52)]
    for name, overrides, alpha, mono in runs:
        for seed in (0, 1):
            maps = {"map_mono": mono + seed / 100, "map_cross": 0.4, "map_multi": 0.3}
            make_job(tmp_path, f"{name}{seed}", [*overrides, f"seed={seed}"], maps, [0.5] * 12)
            config = {"sampler": {"mode": name, "alpha": 0.5 if alpha is None else alpha}}
            (tmp_path / f"{name}{seed}" / ".hydra" / "config.yaml").write_text(yaml.safe_dump(config))
    result = write_report([tmp_path], "ds", tmp_path / "out", n_resamples=50, x="sampler.alpha")
    swept = [r for r in result["rows"] if "x" in r]
    assert [(r["group"], r["x"]) for r in swept] == [
        ("sampler=cross", 0.0),
        ("sampler=hybrid,sampler.alpha=0.25", 0.25),
        ("sampler=mono", 1.0),
    ]
    assert [r["map_mono"][0] for r in swept] == pytest.approx([0.505, 0.525, 0.605])
    assert (tmp_path / "out" / "report_sampler.alpha_tradeoff.png").read_bytes()[:4] == b"\x89PNG"
