"""The store-memory benchmark's quick run (no memory figure is asserted, only what it reports)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from hybrid_ir.utils.paths import default_data_root
from tests.helpers.repo import REPO


@pytest.fixture(autouse=True)
def _repo_on_path(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.syspath_prepend(str(REPO))
    if not (default_data_root() / "xquad-r" / "zh.json").is_file():
        pytest.skip("the generator draws its texts from XQuAD-R, which is not here")


def test_store_memory_reports_each_size_from_fresh_workers(tmp_path: Path, capsys) -> None:
    from benchmarks.store_memory import main

    main(["--ids", "1000,2000", "--out", str(tmp_path / "out.json")])
    records = json.loads((tmp_path / "out.json").read_text(encoding="utf-8"))
    assert [r["n_ids"] for r in records] == [1000, 2000]
    small, large = records
    # every id has a question in 9 languages; one passage in ten repeats the one before it
    assert 9 * 1000 < small["texts"] < 2 * 9 * 1000 and large["texts"] > small["texts"]
    assert small["digest"] != large["digest"]
    for r in records:
        assert 0 < r["rss_before_mb"] <= r["build_peak_rss_mb"] and r["growth_mb"] >= 0
    out = capsys.readouterr().out
    assert "1000 ids: RSS before" in out and "peak ratio 2000 / 1000 ids" in out
