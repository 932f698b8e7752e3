"""The scale benchmark's synthetic corpus generator and its --quick run (no timing is asserted)."""

from __future__ import annotations

import itertools
import json
from pathlib import Path

import numpy as np
import pytest

from hybrid_ir.data.formats.jsonl import load_jsonl_corpus
from hybrid_ir.utils.paths import default_data_root
from tests.helpers.repo import REPO

ROOT = REPO


@pytest.fixture(autouse=True)
def _repo_on_path(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.syspath_prepend(str(ROOT))
    if not (default_data_root() / "xquad-r" / "zh.json").is_file():
        pytest.skip("the generator draws its texts from XQuAD-R, which is not here")


def test_generator_is_seeded_parallel_and_groups_shared_passages(tmp_path: Path) -> None:
    from benchmarks.scale import LANGS, generate

    a = generate(tmp_path / "a.jsonl", 300, seed=1).read_bytes()
    assert generate(tmp_path / "b.jsonl", 300, seed=1).read_bytes() == a
    assert generate(tmp_path / "c.jsonl", 300, seed=2).read_bytes() != a
    corpus = load_jsonl_corpus(tmp_path / "a.jsonl", "synthetic")
    assert corpus.languages == LANGS and len(corpus) == 300
    assert all(len(corpus.pairs[lang]) == 300 for lang in LANGS)
    records = [json.loads(line) for line in a.decode().splitlines()]
    words = [len(r["passage"].split()) for r in records if r["lang"] == "en"]
    assert min(words) >= 20 and max(words) <= 60
    assert any("\u0e00" <= ch <= "\u0e7f" for ch in corpus.pairs["th"]["s0000000"].question)
    shared = [
        (a, b)
        for a, b in itertools.pairwise(corpus.parallel_ids)
        if corpus.pairs["en"][a].passage == corpus.pairs["en"][b].passage
    ]
    assert len(shared) > 10 and all(corpus.group[a] == corpus.group[b] for a, b in shared)
    assert len(set(corpus.group.values())) <= len(corpus) - len(shared)


@pytest.mark.slow
@pytest.mark.usefixtures("shared_e5_tokenizer")
def test_scale_quick(tmp_path: Path) -> None:
    from benchmarks.run import main
    from hybrid_ir.utils.paths import cache_dir

    main(["--only", "scale", "--quick", "--out", str(tmp_path)])
    record = json.loads((tmp_path / "scale.json").read_text(encoding="utf-8"))
    (case,) = record["cases"]
    data = case["data"]
    assert data["ids"] == 2000 and data["pairs"] == 18000
    assert data["batches_per_epoch"] > 0 and data["store_tokens"] > 0 and data["fetch_median_ms"] > 0
    assert case["train"]["start_to_5_steps_s"] > case["train"]["start_to_first_step_s"] > 0
    assert data["table_build_s"] > 0 and data["table_mb"] > 0
    assert (
        data["store_build_peak_rss_mb"] > 0
        and data["store_tokens_per_s"] > 0
        and data["bare_tokens_per_s"] > 0
    )
    passes = data["bare_tokens_per_s_passes"]
    assert len(passes) == 6 and data["bare_tokens_per_s"] == pytest.approx(float(np.median(passes)))
    assert any(
        g["name"] == "2000 ids: store build tokens/s / bare tokenizer tokens/s" for g in record["goals"]
    )
    assert not list(cache_dir("stores").glob("synthetic-scale-*")), "the benchmark removes its stores"
    assert not list(cache_dir("tables").glob("synthetic-*")), "the benchmark removes its record tables"


def test_full_sizes_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    from benchmarks.scale import FULL, full_sizes

    monkeypatch.delenv("HYBRID_IR_SCALE_IDS", raising=False)
    assert full_sizes() == FULL
    monkeypatch.setenv("HYBRID_IR_SCALE_IDS", "1000000, 30")
    assert full_sizes() == (1_000_000, 30)
    for bad in ("1e6", "0", "10,,20"):
        monkeypatch.setenv("HYBRID_IR_SCALE_IDS", bad)
        with pytest.raises(ValueError, match="HYBRID_IR_SCALE_IDS"):
            full_sizes()
