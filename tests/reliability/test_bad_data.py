"""Malformed training data stops ``train`` before any model is built, naming the file and the record.

The loaders' own tests (``tests/data/``) cover each kind of defect; these go through the whole start-up path
(``data=jsonl data.train.0.path=...``, or a LAReQA data root) with model construction forbidden."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from hybrid_ir.tasks.train import train
from hybrid_ir.utils.errors import DataError

from .conftest import Compose


def write_jsonl(path: Path, bad_line: str, bad_lineno: int, n_good: int = 4) -> Path:
    """A JSONL training file of ``n_good`` valid en/de records with ``bad_line`` at line ``bad_lineno``."""
    lines = []
    for i in range(n_good):
        for lang in ("en", "de"):
            record = {
                "id": f"q{i}",
                "lang": lang,
                "question": f"question {i} {lang}?",
                "passage": f"passage {i}",
            }
            lines.append(json.dumps(record))
    lines.insert(bad_lineno - 1, bad_line)
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


@pytest.mark.parametrize(
    "bad_line, problem",
    [
        ('{"id": "q9", "lang": "en", "passage": "p"}', "missing key 'question'"),
        ('{"id": "q9", "lang": "en", "question": "q", "passage": "p"', "invalid JSON"),
        ('{"id": "q9", "lang": "english", "question": "q", "passage": "p"}', "english"),
    ],
    ids=["missing key", "truncated line", "bad language code"],
)
def test_bad_jsonl_line_names_file_and_line(
    tmp_path: Path, compose: Compose, no_model: None, bad_line: str, problem: str
) -> None:
    path = write_jsonl(tmp_path / "pairs.jsonl", bad_line, bad_lineno=3)
    cfg = compose("experiment=smoke", "data=jsonl", f"data.train.0.path={path}", "~callbacks.zero_shot_eval")
    with pytest.raises(DataError) as info:
        train(cfg)
    assert info.value.path == str(path)
    assert info.value.record == "line 3"
    assert problem in str(info.value)


def test_truncated_lareqa_file_names_file_and_position(
    tmp_path: Path, compose: Compose, no_model: None
) -> None:
    root = tmp_path / "data"
    (root / "xquad-r").mkdir(parents=True)
    (root / "xquad-r" / "en.json").write_text('{"data": [{"paragraphs": [', encoding="utf-8")
    cfg = compose(
        "experiment=smoke",
        f"data.root={root}",
        "data.download=false",
        "data.train.0.languages=[en]",
        "~callbacks.zero_shot_eval",
    )
    with pytest.raises(DataError) as info:
        train(cfg)
    assert info.value.path == str(root / "xquad-r" / "en.json")
    assert "line 1, column" in str(info.value.record)
    assert "invalid JSON" in str(info.value)
