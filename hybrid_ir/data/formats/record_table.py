"""The record table: a training dataset's records in one memory-mapped Arrow table, built once per input.

Every input format is read into the same table, with the columns of the JSONL schema
(:mod:`hybrid_ir.data.formats.jsonl`): ``id``, ``lang``, ``question``, ``passage``, ``context``, ``passage_id`` (null
when absent), ``negative_ids``, ``negatives`` (lists, null when absent or empty). The inputs (``data.train[i].format``):

* ``jsonl``: a JSONL file, plain or ``.gz``;
* ``parquet``: a Parquet file, or a folder whose ``*.parquet`` files are read in name order;
* ``hf``: a Hugging Face ``datasets`` dataset saved with ``save_to_disk`` (a hub name only with ``download``).

``columns`` maps schema keys to the input's own column (or JSON key) names; unmapped keys keep their names. Every
record goes through the JSONL checks (:func:`~hybrid_ir.data.schema.check_record`), so a bad value is a
:class:`~hybrid_ir.utils.errors.DataError` naming the file, the line (JSONL) or row (Parquet, ``hf``: counted from 0
in each file) and the key.

Next to the table (``records.arrow``, an Arrow IPC file) the folder holds the integer arrays training works on, as
``.npy`` files mapped read-only: ``parallel_ids`` (the ids, sorted, as fixed-width UTF-8 bytes), ``group`` (the answer
group of each id: union-find of same id, same ``passage_id`` and identical passage text, numbered by smallest id)
and ``rows`` (``rows[i, l]``: the table row of ``parallel_ids[i]`` in ``languages[l]``, ``-1`` where absent), and
``meta.json``, written last. The folder is ``<cache>/tables/<input name>-<key>`` (``$HYBRID_IR_CACHE``, default
``~/.cache/hybrid_ir``), where the key hashes the input files' paths, sizes, modification times and a sample of
their content, the format, the column mapping and the language filter: a changed input gives a new table. The
sample (:func:`~hybrid_ir.data.cache.content_sample`, 3 MiB read per input, shared among its files, at least 12 KiB
each: a one-file input's first and last MiB and 256 blocks of 4 KiB spread evenly between) sees every edit of a file
within its share (a one-file input up to 3 MiB) and, in a larger one, an edit that changes its size or modification
time or touches a sampled byte; a same-size edit elsewhere in a large file whose modification time was restored
(``cp -p``, ``touch -r``, some sync tools) still reuses the old table: delete ``<cache>/tables/<input name>-*``
after such an edit. It is built under a file lock into a temporary folder renamed into place when complete, so the
processes of one machine build it once; a table whose files do not match its ``meta.json`` is rebuilt, never
trusted; a complete one is opened without writing anything (a read-only cache works); a full disk is a DataError
naming the cache, and a killed build's temporary folder is removed by the next build (:mod:`hybrid_ir.data.cache`).
With several machines, keep the cache node-local (each machine builds its own) or build it once before the launch
when the cache is on shared storage (file locks are not reliable on every network file system).

:class:`TableCorpus` is a :class:`~hybrid_ir.data.corpus.ParallelCorpus` over such a table: the planner, the token
store and the dataset read its integer arrays and fetch texts by row; ``pairs``, ``group`` and the negatives are
read-only views that build a value when asked for one.

See docs/data.md.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa

from hybrid_ir.data.cache import entry_path, open_entry
from hybrid_ir.data.corpus import group_ids
from hybrid_ir.data.formats.inputs import BATCH_ROWS, FORMAT_VERSION, INPUT_FORMATS, TableInput, _Source
from hybrid_ir.data.languages import check_langs
from hybrid_ir.data.schema import KEYS, SCHEMA, check_record, passage_key
from hybrid_ir.utils.errors import ConfigError, DataError
from hybrid_ir.utils.io import atomic_write_json

log = logging.getLogger(__name__)

_TEXT_KINDS = ("question", "passage")


@dataclass(frozen=True)
class RecordTable:
    """A mapped record table (see the module docstring); ``built`` says whether this process built it."""

    path: Path
    key: str
    table: pa.Table
    languages: list[str]
    parallel_ids: np.ndarray
    group: np.ndarray
    rows: np.ndarray
    built: bool = False

    def __reduce__(self) -> tuple[Any, ...]:
        """Travels to another process (a spawned DataLoader worker) as its path and is mapped there again."""
        return _reopen, (self.path, self.key)


def _reopen(path: Path, key: str) -> RecordTable:
    table = _map(path, key)
    if table is None:
        raise RuntimeError(f"the record table {path} is gone or damaged; rerun to rebuild it")
    return table


def open_record_table(spec: TableInput) -> RecordTable:
    """``spec``'s record table, mapped from the cache when a valid one exists, else built (see the module
    docstring). Raises ConfigError for a bad format, path or column mapping, DataError for a bad record."""
    if spec.format not in INPUT_FORMATS:
        raise ConfigError(f"format={spec.format!r} is not a table input; choose one of {INPUT_FORMATS}")
    unknown = sorted(set(spec.columns) - set(KEYS))
    if unknown:
        raise ConfigError(f"columns: {unknown[0]!r} is not a key of the schema; the keys are {list(KEYS)}")
    source = _Source.of(spec)
    key = source.key()
    path = entry_path("tables", f"{source.stem}-{key}")
    table, built = open_entry(
        path, "record table", lambda p: _map(p, key), lambda tmp: _write(tmp, key, source)
    )
    return RecordTable(**{**table.__dict__, "built": True}) if built else table


def _write(tmp: Path, key: str, source: _Source) -> None:
    """Read every record of ``source``, check it, and write the table and its arrays into the folder ``tmp``."""
    spec = source.spec
    names = spec.names()
    renamed = {col: key for key, col in names.items()}
    wanted = None if spec.languages is None else set(check_langs(spec.languages, spec.path))
    first_seen: dict[tuple[str, str], str] = {}
    row_id: list[str] = []
    row_lang: list[str] = []
    passage_ids: dict[str, list[str]] = {}
    first_with_text: dict[bytes, str] = {}
    same_text: list[tuple[str, str]] = []
    listing: list[tuple[Path, str, tuple[str, ...]]] = []  # records with negative_ids: where, the ids
    columns: dict[str, list[Any]] = {k: [] for k in KEYS}
    with pa.OSFile(str(tmp / "records.arrow"), "wb") as sink, pa.ipc.new_file(sink, SCHEMA) as writer:
        for file, where, raw in source.records():
            obj = {renamed.get(k, k): v for k, v in raw.items()} if renamed else raw
            rec = check_record(obj, file, where, names)
            pair = (rec["id"], rec["lang"])
            if pair in first_seen:
                raise DataError(
                    file, where, f"duplicate (id, lang) = {pair!r}, first seen on {first_seen[pair]}"
                )
            first_seen[pair] = (
                where if spec.format != "parquet" or len(source.files) == 1 else f"{where} of {file}"
            )
            if wanted is not None and rec["lang"] not in wanted:
                continue
            parallel_id = rec["id"]
            row_id.append(parallel_id)
            row_lang.append(rec["lang"])
            for k in KEYS:
                columns[k].append(rec.get(k))
            if "passage_id" in rec:
                passage_ids.setdefault(rec["passage_id"], []).append(parallel_id)
            if "negative_ids" in rec:
                listing.append((file, where, rec["negative_ids"]))
            text = hashlib.blake2b(passage_key(rec["passage"]).encode(), digest_size=16).digest()
            first = first_with_text.setdefault(text, parallel_id)
            if first != parallel_id:
                same_text.append((first, parallel_id))
            if len(columns["id"]) >= BATCH_ROWS:
                writer.write_batch(pa.record_batch(columns, schema=SCHEMA))
                columns = {k: [] for k in KEYS}
        if columns["id"]:
            writer.write_batch(pa.record_batch(columns, schema=SCHEMA))
    del first_with_text, columns
    if not row_id:
        raise DataError(spec.path, "file", "no records; expected one record per line (JSONL) or row")
    languages = sorted(set(row_lang))
    if wanted is not None:
        missing = sorted(wanted - set(languages))
        if missing:
            have = sorted({lang for _, lang in first_seen})
            raise DataError(spec.path, "languages", f"no records in {missing}; the input has {have}")
    _check_negative_ids(listing, {parallel_id for parallel_id, _ in first_seen}, names["negative_ids"])
    del first_seen, listing
    parallel_ids = sorted(set(row_id))
    groups = group_ids(parallel_ids, [*passage_ids.values(), *same_text])
    index = {parallel_id: i for i, parallel_id in enumerate(parallel_ids)}
    lang_index = {lang: col for col, lang in enumerate(languages)}
    rows = np.full(
        (len(parallel_ids), len(languages)), -1, dtype=np.int32 if len(row_id) < 2**31 else np.int64
    )
    rows[
        np.fromiter((index[p] for p in row_id), np.int64, len(row_id)),
        np.fromiter((lang_index[x] for x in row_lang), np.int64, len(row_lang)),
    ] = np.arange(len(row_id))
    arrays = {
        "parallel_ids": np.array([p.encode() for p in parallel_ids], dtype=bytes),
        "group": np.fromiter((groups[p] for p in parallel_ids), np.int64, len(parallel_ids)),
        "rows": rows,
    }
    for name, array in arrays.items():
        with open(tmp / f"{name}.npy", "wb") as fh:
            np.save(fh, array)
            fh.flush()
            os.fsync(fh.fileno())
    with open(tmp / "records.arrow", "rb") as fh:
        os.fsync(fh.fileno())
    meta = {
        "format": FORMAT_VERSION,
        "key": key,
        "input": {"format": spec.format, "path": str(spec.path), "files": [str(f) for f in source.files]},
        "languages": languages,
        "records": len(row_id),
        "ids": len(parallel_ids),
    }
    atomic_write_json(tmp / "meta.json", meta)
    log.info("record table of %s: %d records, %d ids", spec.path, len(row_id), len(parallel_ids))


def _check_negative_ids(listing: list[tuple[Path, str, tuple[str, ...]]], ids: set[str], shown: str) -> None:
    """DataError naming the first record that lists an id no record of the input has, and the unknown ids."""
    unknown: dict[str, int] = {}  # unknown id -> the first record (position in listing) that lists it
    for position, (_, _, listed) in enumerate(listing):
        for nid in listed:
            if nid not in ids:
                unknown.setdefault(nid, position)
    if unknown:
        names = sorted(unknown, key=lambda nid: (unknown[nid], nid))
        shown_ids = ", ".join(repr(n) for n in names[:10]) + (
            f" (and {len(names) - 10} more)" if len(names) > 10 else ""
        )
        file, where, _ = listing[unknown[names[0]]]
        raise DataError(
            file,
            where,
            f"{shown} names {len(names)} id(s) that no record of the file has: {shown_ids}; "
            "expected ids of other records of this file",
        )


def _map(path: Path, key: str) -> RecordTable | None:
    """Map a complete table, or ``None`` when it is missing, partial or does not match its ``meta.json``."""
    try:
        meta = json.loads((path / "meta.json").read_text(encoding="utf-8"))
        if meta.get("format") != FORMAT_VERSION or meta.get("key") != key:
            return None
        table = pa.ipc.open_file(pa.memory_map(str(path / "records.arrow"))).read_all()
        arrays = {
            name: np.load(path / f"{name}.npy", mmap_mode="r") for name in ("parallel_ids", "group", "rows")
        }
    except (OSError, ValueError, KeyError, TypeError, pa.ArrowException):
        return None
    ids, languages = meta["ids"], meta["languages"]
    if (
        table.num_rows != meta["records"]
        or table.schema != SCHEMA
        or arrays["parallel_ids"].shape != (ids,)
        or arrays["group"].shape != (ids,)
        or arrays["rows"].shape != (ids, len(languages))
    ):
        return None
    return RecordTable(path, key, table, languages, arrays["parallel_ids"], arrays["group"], arrays["rows"])
