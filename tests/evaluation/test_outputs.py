"""Output file names (one helper for writer and reader) and the gzip CSV per-query files."""

from __future__ import annotations

import gzip
from pathlib import Path

import pytest

from hybrid_ir.evaluation.outputs import (
    format_table,
    output_stem,
    per_query_path,
    plot_path,
    read_per_query,
    write_per_query,
)
from hybrid_ir.utils.errors import DataError


def test_names_are_sanitised_in_one_place(tmp_path: Path) -> None:
    assert output_stem("mlqa r", "epoch0/step 7") == "mlqa_r__epoch0_step_7"
    assert (
        per_query_path(tmp_path, "mlqa r", "epoch0/step 7")
        == tmp_path / "per_query" / "mlqa_r__epoch0_step_7.csv.gz"
    )
    assert (
        plot_path(tmp_path, "ds", "pretrained", "map_heatmap")
        == tmp_path / "plots" / "ds__pretrained__map_heatmap.png"
    )


def test_per_query_round_trip_is_exact(tmp_path: Path) -> None:
    columns = {
        "qid": ["q,1", '"q2"', "007"],
        "lang": ["en", "de", "zh"],
        "ap": [1 / 3, 0.1 + 0.2, 1e-17],
        "rank_distance": [None, 4.0, 12.0],
    }
    path = write_per_query(tmp_path / "per_query" / "x.csv.gz", columns)
    assert gzip.decompress(path.read_bytes()).decode().splitlines()[0] == "qid,lang,ap,rank_distance"
    assert read_per_query(path) == columns


def test_per_query_errors(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="differ in length"):
        write_per_query(tmp_path / "bad.csv.gz", {"qid": ["a"], "ap": [0.1, 0.2]})
    with pytest.raises(DataError, match=r"absent\.csv\.gz: file: not found.*eval\.per_query=true"):
        read_per_query(tmp_path / "absent.csv.gz")
    (tmp_path / "bad.csv.gz").write_bytes(gzip.compress(b"qid,ap\nq1,0.5\nq2,high\n"))
    with pytest.raises(DataError, match=r"bad\.csv\.gz: line 3: column 'ap': 'high' is not a number"):
        read_per_query(tmp_path / "bad.csv.gz")


def test_format_table_marks_missing_values() -> None:
    records = [
        {
            "tag": "pretrained",
            "step": None,
            "datasets": {"a": {"scalars": {"map_multi": 0.5, "map_mono": 0.25}}},
        },
        {
            "tag": "epoch0",
            "step": 12,
            "datasets": {"a": {"scalars": {"map_mono": 0.75}}, "b": {"scalars": {}}},
        },
    ]
    lines = format_table(records).splitlines()
    assert len(lines) == 5
    assert lines[1].split()[:5] == ["tag", "step", "|", "map_mono", "map_multi"]
    assert lines[3].split() == ["pretrained", "-", "|", "0.2500", "0.5000", "|"]
    assert lines[4].split() == ["epoch0", "12", "|", "0.7500", "-", "|"]
    assert len({len(line) for line in lines[1:]}) == 1
