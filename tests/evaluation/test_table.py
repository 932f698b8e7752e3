"""The fixed-width table of evaluation records."""

from __future__ import annotations

from hybrid_ir.evaluation.table import format_table


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
