"""The record schema every training input is read into: the keys (required ``id``, ``lang``, ``question``,
``passage``; optional ``context``, ``passage_id``; hard negatives ``negative_ids``, ``negatives``), the check of one
record (:func:`check_record`: a DataError naming the file, the line or row, and the key), the key under which
identical passages meet (:func:`passage_key`) and the Arrow schema of the record table. The JSONL reader and the
record table both use it; the formats are described in ``docs/data.md``."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import pyarrow as pa

from hybrid_ir.data.languages import check_lang
from hybrid_ir.utils.errors import DataError

REQUIRED_KEYS = ("id", "lang", "question", "passage")


OPTIONAL_KEYS = ("context", "passage_id")


NEGATIVE_KEYS = ("negative_ids", "negatives")


def _parse_list(obj: dict[str, Any], key: str, path: Path, record: str, shown: str) -> tuple[str, ...] | None:
    """The list of non-empty strings under ``key`` (``None`` if absent), each listed once; ``shown`` is the key's
    name in errors."""
    if key not in obj:
        return None
    value = obj[key]
    what = "ids of other records" if key == "negative_ids" else "passage texts"
    if not isinstance(value, list):
        raise DataError(
            path, record, f"key {shown!r} must be a list of strings ({what}), got {type(value).__name__}"
        )
    seen: set[str] = set()
    for i, item in enumerate(value):
        if not isinstance(item, str) or not item.strip():
            got = repr(item) if isinstance(item, str) else type(item).__name__
            raise DataError(path, record, f"{shown}[{i}] must be a non-empty string ({what}), got {got}")
        if item in seen:
            raise DataError(path, record, f"{shown} lists {item!r} twice; list each once")
        seen.add(item)
    return tuple(value)


def passage_key(passage: str) -> str:
    """``passage`` with runs of whitespace as one space and no outer whitespace (the text itself when it has
    none to change, so the key shares its memory)."""
    key = " ".join(passage.split())
    return passage if key == passage else key


def check_record(
    obj: dict[str, Any], path: Path, record: str, names: Mapping[str, str] | None = None
) -> dict[str, Any]:
    """Type-check one record (a JSON object, or a row of a table with our keys); return its fields with
    ``context`` defaulted to ``""`` and the hard-negative lists (if given and non-empty) as tuples.

    ``record`` names it in errors (``"line 7"``, ``"row 7"``); ``names[key]`` is the input's own name of ``key``
    (a table's column mapping), used in the messages."""

    def name(key: str) -> str:
        return names.get(key, key) if names else key

    out: dict[str, Any] = {}
    for key in REQUIRED_KEYS:
        if key not in obj:
            required = [name(k) for k in REQUIRED_KEYS]
            raise DataError(path, record, f"missing key {name(key)!r}; required keys: {required}")
        value = obj[key]
        if not isinstance(value, str):
            raise DataError(path, record, f"key {name(key)!r} must be a string, got {type(value).__name__}")
        if not value.strip():
            raise DataError(path, record, f"key {name(key)!r} is empty; expected non-empty text")
        out[key] = value
    for key in OPTIONAL_KEYS:
        if key in obj:
            value = obj[key]
            if not isinstance(value, str):
                raise DataError(
                    path, record, f"key {name(key)!r} must be a string, got {type(value).__name__}"
                )
            if key == "passage_id" and not value.strip():
                raise DataError(path, record, f"key {name(key)!r} is empty; omit it or give a non-empty id")
            out[key] = value
    out.setdefault("context", "")
    check_lang(out["lang"], path, record)
    for key in NEGATIVE_KEYS:
        values = _parse_list(obj, key, path, record, name(key))
        if values:
            out[key] = values
    if out["id"] in out.get("negative_ids", ()):
        raise DataError(path, record, f"{name('negative_ids')} lists the record's own id {out['id']!r}")
    return out


KEYS = (*REQUIRED_KEYS, *OPTIONAL_KEYS, *NEGATIVE_KEYS)


SCHEMA = pa.schema([(key, pa.list_(pa.string()) if key in NEGATIVE_KEYS else pa.string()) for key in KEYS])
