"""The planner benchmark's synthetic corpus and its --quick run (no timing is asserted)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from hybrid_ir.data.corpus import ParallelCorpus, QAPair
from hybrid_ir.data.planning.planner import plan_epoch
from tests.helpers.repo import REPO

ROOT = REPO


@pytest.fixture(autouse=True)
def _repo_on_path(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.syspath_prepend(str(ROOT))


def test_the_synthetic_corpus_plans_like_a_corpus_of_the_same_ids_languages_and_groups() -> None:
    from benchmarks.planner import LANGS, planner_corpus

    synthetic = planner_corpus(600, seed=3)
    arrays = synthetic.arrays
    assert (
        len(synthetic) == 600
        and synthetic.parallel_ids[0] == "s0000000"
        and synthetic.parallel_ids[-1] == "s0000599"
    )
    assert arrays.has_lang.any(axis=1).all() and 0.85 < arrays.has_lang.mean() < 0.95
    assert (
        0.85 < len(np.unique(arrays.group)) / 600 < 0.95
    )  # one id in ten joins the group of the id before it
    pairs = {
        lang: {
            parallel_id: QAPair(parallel_id, lang, "q", "p")
            for i, parallel_id in enumerate(synthetic.parallel_ids)
            if arrays.has_lang[i, col]
        }
        for col, lang in enumerate(LANGS)
    }
    real = ParallelCorpus(
        "real", list(LANGS), pairs, dict(zip(synthetic.parallel_ids, arrays.group.tolist(), strict=True))
    )
    for mode in ("hybrid", "mono", "cross"):
        a = plan_epoch([synthetic], mode, 16, 0.5, seed=1, epoch=2)
        b = plan_epoch([real], mode, 16, 0.5, seed=1, epoch=2)
        assert a == b and a.dropped == b.dropped, mode


def test_planner_quick(tmp_path: Path) -> None:
    from benchmarks.run import main

    main(["--only", "planner", "--quick", "--out", str(tmp_path)])
    record = json.loads((tmp_path / "planner.json").read_text(encoding="utf-8"))
    (case,) = record["cases"]
    assert case["ids"] == 20000 and case["hybrid_epoch0_batches"] == case["cross_batches"] == 20000 // 32
    for name in ("hybrid_epoch0", "hybrid_epoch1", "mono", "cross"):
        assert case[f"{name}_plan_s"] > 0 and case[f"{name}_plan_cpu_s"] >= 0
    assert case["peak_rss_mb"] >= case["rss_before_plan_mb"] >= case["rss_after_imports_mb"] > 0
    assert record["goals"] == []  # the goals apply at 10^7 ids
