"""Reading line-oriented data files (JSONL, TSV, qrels) with errors that name the file and the line.
See docs/data.md."""

from __future__ import annotations

import codecs
import gzip
import json
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

from hybrid_ir.utils.errors import DataError


def read_lines(path: Path, what: str) -> list[tuple[int, str]]:
    """``(line number, text)`` of every non-blank line of a UTF-8 text file, plain or gzip-compressed (``.gz``).

    ``what`` describes the expected file for the "not found" error, e.g. ``"TREC qrels file (qid Q0 docid rel)"``.
    Line numbers count from 1 and include the blank lines, so they match an editor's. A UTF-8 byte-order mark
    at the start of the file (as some Windows editors write) is skipped.
    """
    return list(iter_lines(path, what))


def iter_lines(path: Path, what: str) -> Iterator[tuple[int, str]]:
    """:func:`read_lines` one line at a time (for files too large to hold); the "not found" error comes at once."""
    if not path.is_file():
        raise DataError(path, "file", f"not found; expected the {what}")
    return _lines(path)


def _lines(path: Path) -> Iterator[tuple[int, str]]:
    opener = gzip.open if path.suffix == ".gz" else open
    with opener(path, "rb") as fh:
        for lineno, raw in enumerate(fh, start=1):
            if lineno == 1:
                raw = raw.removeprefix(codecs.BOM_UTF8)
            try:
                text = raw.decode("utf-8").rstrip("\r\n")
            except UnicodeDecodeError as exc:
                raise DataError(
                    path, f"line {lineno}", f"not valid UTF-8 ({exc.reason} at byte {exc.start})"
                ) from None
            if text.strip():
                yield lineno, text


def parse_json_object(text: str, path: Path, lineno: int, keys: Sequence[str]) -> dict[str, Any]:
    """Parse one line that must hold a JSON object; ``keys`` (the expected ones) only go into the error."""
    try:
        obj = json.loads(text)
    except json.JSONDecodeError as exc:
        raise DataError(path, f"line {lineno}", f"invalid JSON: {exc.msg} (column {exc.colno})") from None
    if not isinstance(obj, dict):
        raise DataError(
            path, f"line {lineno}", f"expected a JSON object with keys {list(keys)}, got {type(obj).__name__}"
        )
    return obj
