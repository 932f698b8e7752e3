"""The benchmarks run end to end in their ``--quick`` configuration (tiny model, 2-3 steps) and the computations
they compare agree; plus the timing arithmetic on hand-made numbers. No timing is asserted."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import pytest

from tests.helpers.repo import REPO

ROOT = REPO


@pytest.fixture(autouse=True)
def _repo_on_path(monkeypatch: pytest.MonkeyPatch) -> None:
    """``benchmarks`` is a top-level folder of the checkout, not part of the installed package."""
    monkeypatch.syspath_prepend(str(ROOT))


def run_quick(name: str, out: Path, *overrides: str) -> dict[str, Any]:
    """``python -m benchmarks.run --only <name> --quick --out <out> [--set OVERRIDES]``, in process; returns the
    written record."""
    from benchmarks.run import main

    records = main(
        ["--only", name, "--quick", "--out", str(out), *(["--set", *overrides] if overrides else [])]
    )
    written = json.loads((out / f"{name}.json").read_text(encoding="utf-8"))
    assert [r["benchmark"] for r in records] == [name] == [written["benchmark"]]
    assert written["quick"] is True
    assert written["machine"]["torch_threads"] >= 1 and written["machine"]["cpu"]
    return written


def test_compare_timings_pairs_rounds_and_skips_warmup() -> None:
    from benchmarks.timing import compare_timings

    # Round 0 is warm-up. Rounds 1-3: bare/ours = 2/1, 3/2, 8/4 -> paired ratios 2, 1.5, 2 (median 2);
    # medians: ours 2, bare 3 -> 1.5; means: ours 7/3, bare 13/3 -> 13/7.
    out = compare_timings(
        {"ours": [100.0, 1.0, 2.0, 4.0], "bare": [0.1, 2.0, 3.0, 8.0]}, warmup=1, items_per_step=32
    )
    assert out["ours"]["n"] == out["bare"]["n"] == 3
    assert out["ratio_bare"] == pytest.approx(2.0)
    assert out["median_ratio_bare"] == pytest.approx(1.5)
    assert out["mean_ratio_bare"] == pytest.approx(13 / 7)
    assert out["ours"]["items_per_s"] == pytest.approx(16.0)


def test_goal_direction() -> None:
    from benchmarks.timing import goal

    assert goal("x", 0.96, 0.95, higher_is_better=True)["met"]
    assert not goal("x", 0.94, 0.95, higher_is_better=True)["met"]
    assert goal("x", 1.05, 1.1, higher_is_better=False)["met"]
    assert not goal("x", 1.2, 1.1, higher_is_better=False)["met"]


def test_loss_agreement_reports_the_largest_gap() -> None:
    from benchmarks.timing import loss_agreement

    out = loss_agreement({"ours": [3.0, 2.0], "bare": [3.0, 2.5], "st": [3.25, 2.0]})
    assert out["first_step"] == {"ours": 3.0, "bare": 3.0, "st": 3.25}
    assert out["max_abs_diff_first"] == pytest.approx(0.25)
    assert out["max_abs_diff_all"] == pytest.approx(0.5)


@pytest.mark.slow
@pytest.mark.usefixtures("shared_e5_tokenizer")
def test_train_throughput_quick(tmp_path: Path) -> None:
    case = run_quick("train_throughput", tmp_path)["cases"][0]
    assert case["batches_match"]
    assert case["timings"]["ours"]["n"] == case["timings"]["bare"]["n"] == case["case"]["steps"]
    assert case["losses"]["max_abs_diff_first"] <= 1e-6
    assert case["losses"]["max_abs_diff_all"] <= 1e-4


@pytest.mark.slow
@pytest.mark.usefixtures("shared_e5_tokenizer")
@pytest.mark.parametrize("precision", ["32-true", "bf16-mixed"])
def test_st_throughput_quick(tmp_path: Path, precision: str) -> None:
    """Both sides run at the pinned precision (either path, whatever this CPU resolves to) and say so."""
    pytest.importorskip("sentence_transformers")
    from benchmarks.st_throughput import LOSS_TOLERANCE

    record = run_quick("st_throughput", tmp_path, f"trainer.precision={precision}")
    case = record["cases"][0]
    assert record["precision"] == case["precision"] == precision
    assert case["tokens_match"] and case["batches_match"]
    assert case["first_loss_within_tolerance"]
    assert case["losses"]["max_abs_diff_first"] <= LOSS_TOLERANCE[precision]
    assert case["timings"]["st"]["n"] == case["case"]["steps"]
    assert len(record["goals"]) == 1


@pytest.mark.slow
@pytest.mark.usefixtures("shared_e5_tokenizer")
def test_eval_overhead_quick(tmp_path: Path) -> None:
    case = run_quick("eval_overhead", tmp_path)["cases"][0]
    assert case["max_abs_embedding_diff"] == 0.0
    timings = case["timings"]
    assert (
        timings["ours"]["n"]
        == timings["ours_no_figures"]["n"]
        == timings["encode_only"]["n"]
        == case["case"]["rounds"]
    )
    assert case["projection_default"]["queries"] >= case["queries"]
    assert case["queries"] > 0 and case["candidates"] >= case["distinct_texts"][1] > 0


@pytest.mark.slow
@pytest.mark.usefixtures("shared_e5_tokenizer")
def test_eval_scaling_quick(tmp_path: Path) -> None:
    sizes = run_quick("eval_scaling", tmp_path)["sizes"]
    assert [s["factor"] for s in sizes] == [1, 2]
    assert sizes[1]["candidates"] == 2 * sizes[0]["candidates"]
    assert sizes[1]["queries"] == sizes[0]["queries"] > 0
    assert sizes[1]["max_ap_error"] < 1e-9
    assert all(s["peak_rss_mb"] >= s["rss_before_mb"] - 1.0 for s in sizes)


@pytest.mark.slow
@pytest.mark.usefixtures("shared_e5_tokenizer")
def test_gradcache_memory_quick(tmp_path: Path) -> None:
    rows = run_quick("gradcache_memory", tmp_path)["rows"]
    assert [r["batch_size"] for r in rows] == [16]
    row = rows[0]
    assert set(row["memory"]) == {"plain", "grad_cache"}
    assert all(m["peak_rss_mb"] >= m["rss_before_mb"] - 1.0 > 0 for m in row["memory"].values())
    assert "1" in row["threads"]
    for speed in row["threads"].values():
        assert speed["losses"]["max_abs_diff_all"] < 1e-5  # GradCache = plain step, at every step
        assert speed["timings"]["plain"]["n"] == speed["timings"]["grad_cache"]["n"] == 2


@pytest.mark.slow
@pytest.mark.usefixtures("shared_e5_tokenizer")
def test_data_pipeline_quick(tmp_path: Path) -> None:
    case = run_quick("data_pipeline", tmp_path)["cases"][0]
    assert case["batches_per_epoch"] > 0
    assert case["fetch"]["n"] == case["step"]["n"] == case["case"]["steps"]
    assert 0 < case["median_share"] == pytest.approx(case["data_per_batch_s"] / case["step"]["median_s"])
    assert case["share_of_step"] > 0


def test_cli_rejects_unknown_benchmark(capsys: pytest.CaptureFixture[str]) -> None:
    from benchmarks.run import parse_args

    with pytest.raises(SystemExit):
        parse_args(["--only", "no_such_benchmark"])
    assert "invalid choice" in capsys.readouterr().err
    assert parse_args(["--only", "eval_scaling", "--quick"]).only == ["eval_scaling"]
    assert sys.modules["benchmarks.run"].BENCHMARKS[0] == "train_throughput"


def test_set_overrides_reach_every_config(monkeypatch: pytest.MonkeyPatch) -> None:
    from benchmarks import harness
    from benchmarks.run import parse_args

    assert parse_args(["--set", "data.batch_size=7", "seed=3"]).set == ["data.batch_size=7", "seed=3"]
    monkeypatch.setattr(harness, "EXTRA_OVERRIDES", ["data.batch_size=7"])
    cfg = harness.bench_config(["data.batch_size=64", "seed=3"])
    assert cfg.data.batch_size == 7 and cfg.seed == 3  # applied after the benchmark's own


@pytest.mark.slow
@pytest.mark.usefixtures("shared_e5_tokenizer")
def test_gpu_throughput_quick(tmp_path: Path) -> None:
    import torch

    record = run_quick("gpu_throughput", tmp_path)
    if not torch.cuda.is_available():
        assert record["skipped"] == "no CUDA device visible" and record["goals"] == [] == record["cases"]
        return
    case = record["cases"][0]
    assert case["batches_match"] and case["precision"] in ("bf16-mixed", "16-mixed")
    assert case["losses"]["max_abs_diff_first"] < 1e-2  # autocast: bf16 rounding, not bit equality
