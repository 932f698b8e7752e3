"""Training inputs written as JSONL files for tests: the writer, a file of plain parallel pairs, the varied
records of the record-table tests (several languages, shared passages, hard negatives) and one-language records
whose only negatives are texts."""

from __future__ import annotations

import json
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any


def write_jsonl(path: Path, records: Iterable[dict[str, Any]]) -> Path:
    """Write ``records`` to ``path``, one JSON object a line (UTF-8, non-ASCII text as is); returns ``path``."""
    path.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in records), encoding="utf-8")
    return path


def pair_records(n: int, langs: Sequence[str], prefix: str = "q") -> list[dict[str, Any]]:
    """``n`` ids ``<prefix>0`` … each in every language of ``langs``, every passage distinct (so every id is its
    own answer group): question ``question <i> <lang>?``, passage ``passage <i> <lang>.``."""
    return [
        {
            "id": f"{prefix}{i}",
            "lang": lang,
            "question": f"question {i} {lang}?",
            "passage": f"passage {i} {lang}.",
        }
        for i in range(n)
        for lang in langs
    ]


def table_records(n: int = 40, langs: Sequence[str] = ("de", "en", "fr")) -> list[dict[str, Any]]:
    """``n`` ids ``q000`` … in up to 3 languages: ``fr`` for every other id only; ids 3 and 4 share a passage_id,
    ids 5 and 6 an identical passage text (in ``en``); every seventh id has a context, and some records list hard
    negatives (``negative_ids`` when ``i % 5 == 1``, ``negatives`` when ``i % 6 == 2``)."""
    out = []
    for i in range(n):
        for lang in langs:
            if lang == "fr" and i % 2:
                continue
            j = 6 if i == 5 and lang == "en" else i
            rec: dict[str, Any] = {
                "id": f"q{i:03d}",
                "lang": lang,
                "question": f"Frage {i} in {lang}?",
                "passage": f"Passage {j} in {lang}." + " mehr" * (j % 5),
            }
            if i % 7 == 0:
                rec["context"] = f"Context of {i}"
            if i in (3, 4):
                rec["passage_id"] = "shared"
            if i % 5 == 1:
                rec["negative_ids"] = [f"q{(i + 2) % n:03d}", f"q{(i + 9) % n:03d}"]
            if i % 6 == 2:
                rec["negatives"] = [f"other text {i} {lang}"]
            out.append(rec)
    return out


def text_negative_records(n: int = 8, negatives: int = 3) -> list[dict[str, Any]]:
    """``n`` one-language (``en``) records ``t0`` … whose hard negatives are texts only (``negatives``):
    question ``q <i>?``, passage ``p <i>.``, negatives ``n <i> <j>.`` for ``j < negatives``."""
    return [
        {
            "id": f"t{i}",
            "lang": "en",
            "question": f"q {i}?",
            "passage": f"p {i}.",
            "negatives": [f"n {i} {j}." for j in range(negatives)],
        }
        for i in range(n)
    ]
