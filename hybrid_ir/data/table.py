"""The record table: a training dataset's records in one memory-mapped Arrow table, built once per input.

Every input format is read into the same table, with the columns of the JSONL schema (:mod:`hybrid_ir.data.jsonl`):
``id``, ``lang``, ``question``, ``passage``, ``context``, ``passage_id`` (null when absent), ``negative_ids``,
``negatives`` (lists, null when absent or empty). The inputs (``data.train[i].format``):

* ``jsonl``: a JSONL file, plain or ``.gz``;
* ``parquet``: a Parquet file, or a folder whose ``*.parquet`` files are read in name order;
* ``hf``: a Hugging Face ``datasets`` dataset saved with ``save_to_disk`` (a hub name only with ``download``).

``columns`` maps schema keys to the input's own column (or JSON key) names; unmapped keys keep their names. Every
record goes through the JSONL checks (:func:`~hybrid_ir.data.jsonl.check_record`), so a bad value is a
:class:`~hybrid_ir.utils.errors.DataError` naming the file, the line (JSONL) or row (Parquet, ``hf``: counted from 0
in each file) and the key.

Next to the table (``records.arrow``, an Arrow IPC file) the folder holds the integer arrays training works on, as
``.npy`` files mapped read-only: ``pids`` (the ids, sorted, as fixed-width UTF-8 bytes), ``group`` (the answer
group of each id: union-find of same id, same ``passage_id`` and identical passage text, numbered by smallest id)
and ``rows`` (``rows[i, l]``: the table row of ``pids[i]`` in ``languages[l]``, ``-1`` where absent), and
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
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
from collections.abc import Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from hybrid_ir.data.cache import SAMPLE_BLOCK, SAMPLE_BYTES, content_sample, entry_path, open_entry
from hybrid_ir.data.corpus import CorpusArrays, ParallelCorpus, QAPair
from hybrid_ir.data.jsonl import (
    NEGATIVE_KEYS,
    OPTIONAL_KEYS,
    REQUIRED_KEYS,
    check_record,
    group_ids,
    passage_key,
)
from hybrid_ir.data.languages import check_langs
from hybrid_ir.data.textfile import iter_lines, parse_json_object
from hybrid_ir.utils.errors import ConfigError, DataError
from hybrid_ir.utils.io import atomic_write_json

log = logging.getLogger(__name__)

FORMAT_VERSION = 1
INPUT_FORMATS = ("jsonl", "parquet", "hf")
KEYS = (*REQUIRED_KEYS, *OPTIONAL_KEYS, *NEGATIVE_KEYS)
SCHEMA = pa.schema([(key, pa.list_(pa.string()) if key in NEGATIVE_KEYS else pa.string()) for key in KEYS])
BATCH_ROWS = 50_000
_TEXT_KINDS = ("question", "passage")
_VIEWS = ("index_of", "arrays", "pairs", "group", "negative_ids", "negatives")  # cached on the instance


@dataclass(frozen=True)
class TableInput:
    """One training input: ``format`` (one of :data:`INPUT_FORMATS`), ``path`` (a file or folder; for ``hf`` a
    hub name when ``download``), ``columns`` (schema key -> the input's name), ``languages`` (``None``: all),
    ``split`` (of a hub dataset)."""

    format: str
    path: Path
    columns: Mapping[str, str] = field(default_factory=dict)
    languages: str | Iterable[str] | None = None
    download: bool = False
    split: str = "train"

    def names(self) -> dict[str, str]:
        """Schema key -> the input's column name, for every key."""
        return {key: self.columns.get(key, key) for key in KEYS}


@dataclass(frozen=True)
class RecordTable:
    """A mapped record table (see the module docstring); ``built`` says whether this process built it."""

    path: Path
    key: str
    table: pa.Table
    languages: list[str]
    pids: np.ndarray
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


def table_corpus(spec: TableInput, name: str) -> TableCorpus:
    """The :class:`TableCorpus` named ``name`` of ``spec``'s cached record table (built when missing)."""
    table = open_record_table(spec)
    return TableCorpus(name, table, str(spec.path))


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


class _Source:
    """An input's files and the reader of its records (as dicts with schema keys)."""

    def __init__(self, spec: TableInput, files: list[Path], stem: str, dataset: Any = None) -> None:
        self.spec, self.files, self.stem, self.dataset = spec, files, stem, dataset

    @classmethod
    def of(cls, spec: TableInput) -> _Source:
        path = Path(spec.path).expanduser()
        stem = path.name.split(".")[0] or "records"
        if spec.format == "jsonl":
            return cls(spec, [path], stem)  # a missing file is reported by the reader
        if spec.format == "parquet":
            files = sorted(path.glob("*.parquet")) if path.is_dir() else [path]
            if not files or not files[0].is_file():
                raise DataError(
                    path, "file", "not found; expected a Parquet file or a folder of .parquet files"
                )
            return cls(spec, files, stem)
        import datasets  # imported only for this format: it takes a second

        if path.is_dir():
            try:
                dataset = datasets.load_from_disk(str(path))
            except FileNotFoundError as err:
                raise DataError(path, "folder", f"not a dataset saved with save_to_disk ({err})") from None
        elif spec.download:
            dataset = _load_hub(spec)
            stem = str(spec.path).replace("/", "_")
        else:
            raise ConfigError(
                f"format=hf: {str(spec.path)!r} is not a folder saved with Dataset.save_to_disk; a hub name is "
                "loaded only with data.download=true"
            )
        if isinstance(dataset, datasets.DatasetDict):
            raise ConfigError(
                f"format=hf: {path} holds the splits {sorted(dataset)}; point path at one split's folder"
            )
        if path.is_dir():
            files = sorted(p for p in path.rglob("*") if p.is_file())
        else:  # a hub dataset: keyed on the cache files it is mapped from
            files = sorted(Path(f["filename"]) for f in dataset.cache_files)
        return cls(spec, files, stem, dataset)

    def key(self) -> str:
        """A hash of the input files (path, size, modification time and a sample of the content:
        :func:`~hybrid_ir.data.cache.content_sample`), the format, mapping and language filter."""
        spec = self.spec
        languages = spec.languages
        if languages is not None:
            languages = sorted([languages] if isinstance(languages, str) else languages)
        stats = []
        budget = max(3 * SAMPLE_BLOCK, SAMPLE_BYTES // max(len(self.files), 1))
        for file in self.files:
            st = file.stat() if file.exists() else None
            sample = content_sample(file, budget) if st else None
            stats.append(
                [str(file.resolve()), st.st_size if st else -1, st.st_mtime_ns if st else -1, sample]
            )
        blob = json.dumps(
            [FORMAT_VERSION, spec.format, stats, sorted(spec.columns.items()), languages, spec.split]
        )
        return hashlib.sha256(blob.encode()).hexdigest()[:24]

    def columns_of(self, file: Path) -> list[str]:
        """The input's column names (Parquet schema, dataset features)."""
        if self.dataset is not None:
            return list(self.dataset.column_names)
        try:
            return list(pq.read_schema(file).names)
        except (OSError, pa.ArrowInvalid) as err:
            raise DataError(file, "file", f"not a readable Parquet file ({err})") from None

    def check_columns(self, file: Path, have: Sequence[str]) -> list[str]:
        """The input columns to read; ConfigError when a required or explicitly mapped column is missing."""
        names = self.spec.names()
        wanted = []
        for key in KEYS:
            col = names[key]
            if col in have:
                wanted.append(col)
            elif key in REQUIRED_KEYS or key in self.spec.columns:
                how = (
                    f"columns.{key} maps schema key {key!r} to it"
                    if key in self.spec.columns
                    else f"schema key {key!r}"
                )
                raise ConfigError(
                    f"{file}: no column {col!r} ({how}); its columns are {list(have)}. Map each schema key to "
                    f"one of them with data.train.<i>.columns (schema keys: {list(KEYS)})"
                )
        return wanted

    def records(self) -> Iterator[tuple[Path, str, dict[str, Any]]]:
        """``(file, where, record)`` of every record, ``record`` keyed by the input's names."""
        if self.spec.format == "jsonl":
            path = self.files[0]
            with _reading(path):
                for lineno, text in iter_lines(path, "JSONL file of training records"):
                    yield path, f"line {lineno}", parse_json_object(text, path, lineno, REQUIRED_KEYS)
            return
        for file in [Path(self.spec.path)] if self.dataset is not None else self.files:
            wanted = self.check_columns(file, self.columns_of(file))
            with _reading(file):
                if self.dataset is not None:
                    batches = self.dataset.data.table.select(wanted).to_batches(max_chunksize=BATCH_ROWS)
                else:
                    batches = pq.ParquetFile(file).iter_batches(batch_size=BATCH_ROWS, columns=wanted)
                row = 0
                for batch in batches:
                    for record in batch.to_pylist():
                        yield file, f"row {row}", {k: v for k, v in record.items() if v is not None}
                        row += 1


@contextmanager
def _reading(file: Path) -> Iterator[None]:
    """An ``OSError`` while reading the input ``file`` (a damaged gzip or Parquet file, a failing disk) becomes a
    DataError naming it, so that every ``OSError`` of a table build is one of writing the cache."""
    try:
        yield
    except OSError as err:
        raise DataError(file, "file", f"could not be read ({err})") from None


def _load_hub(spec: TableInput) -> Any:
    """The split ``spec.split`` of the hub dataset named ``spec.path``, mapped from its cache files; DataError naming
    the dataset and split when it cannot be loaded or is held in memory (no files for the table's key)."""
    import datasets

    where = f"split {spec.split!r}"
    try:
        dataset = datasets.load_dataset(str(spec.path), split=spec.split)
    except (OSError, ValueError) as err:
        raise DataError(spec.path, where, f"could not load the hub dataset ({err})") from None
    if isinstance(dataset, datasets.Dataset) and not dataset.cache_files:
        raise DataError(
            spec.path,
            where,
            "datasets.load_dataset returned a dataset held in memory, without cache files to key the record table "
            "on; save it with Dataset.save_to_disk and set path to that folder",
        )
    return dataset


def _write(tmp: Path, key: str, source: _Source) -> None:
    """Read every record of ``source``, check it, and write the table and its arrays into the folder ``tmp``."""
    spec = source.spec
    names = spec.names()
    renamed = {col: key for key, col in names.items()}
    wanted = None if spec.languages is None else set(check_langs(spec.languages, spec.path))
    first_seen: dict[tuple[str, str], str] = {}
    row_pid: list[str] = []
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
            pid = rec["id"]
            row_pid.append(pid)
            row_lang.append(rec["lang"])
            for k in KEYS:
                columns[k].append(rec.get(k))
            if "passage_id" in rec:
                passage_ids.setdefault(rec["passage_id"], []).append(pid)
            if "negative_ids" in rec:
                listing.append((file, where, rec["negative_ids"]))
            text = hashlib.blake2b(passage_key(rec["passage"]).encode(), digest_size=16).digest()
            first = first_with_text.setdefault(text, pid)
            if first != pid:
                same_text.append((first, pid))
            if len(columns["id"]) >= BATCH_ROWS:
                writer.write_batch(pa.record_batch(columns, schema=SCHEMA))
                columns = {k: [] for k in KEYS}
        if columns["id"]:
            writer.write_batch(pa.record_batch(columns, schema=SCHEMA))
    del first_with_text, columns
    if not row_pid:
        raise DataError(spec.path, "file", "no records; expected one record per line (JSONL) or row")
    languages = sorted(set(row_lang))
    if wanted is not None:
        missing = sorted(wanted - set(languages))
        if missing:
            have = sorted({lang for _, lang in first_seen})
            raise DataError(spec.path, "languages", f"no records in {missing}; the input has {have}")
    _check_negative_ids(listing, {pid for pid, _ in first_seen}, names["negative_ids"])
    del first_seen, listing
    pids = sorted(set(row_pid))
    groups = group_ids(pids, [*passage_ids.values(), *same_text])
    index = {pid: i for i, pid in enumerate(pids)}
    lang_index = {lang: col for col, lang in enumerate(languages)}
    rows = np.full((len(pids), len(languages)), -1, dtype=np.int32 if len(row_pid) < 2**31 else np.int64)
    rows[
        np.fromiter((index[p] for p in row_pid), np.int64, len(row_pid)),
        np.fromiter((lang_index[x] for x in row_lang), np.int64, len(row_lang)),
    ] = np.arange(len(row_pid))
    arrays = {
        "pids": np.array([p.encode() for p in pids], dtype=bytes),
        "group": np.fromiter((groups[p] for p in pids), np.int64, len(pids)),
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
        "records": len(row_pid),
        "ids": len(pids),
    }
    atomic_write_json(tmp / "meta.json", meta)
    log.info("record table of %s: %d records, %d ids", spec.path, len(row_pid), len(pids))


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
        arrays = {name: np.load(path / f"{name}.npy", mmap_mode="r") for name in ("pids", "group", "rows")}
    except (OSError, ValueError, KeyError, TypeError, pa.ArrowException):
        return None
    ids, languages = meta["ids"], meta["languages"]
    if (
        table.num_rows != meta["records"]
        or table.schema != SCHEMA
        or arrays["pids"].shape != (ids,)
        or arrays["group"].shape != (ids,)
        or arrays["rows"].shape != (ids, len(languages))
    ):
        return None
    return RecordTable(path, key, table, languages, arrays["pids"], arrays["group"], arrays["rows"])


class _PidList(Sequence[str]):
    """The sorted ids of a table corpus (fixed-width UTF-8 bytes), decoded one at a time."""

    def __init__(self, raw: np.ndarray) -> None:
        self.raw = raw

    def __len__(self) -> int:
        return len(self.raw)

    def __getitem__(self, i: Any) -> Any:
        if isinstance(i, slice):
            return [p.decode() for p in self.raw[i].tolist()]
        return self.raw[i].tobytes().rstrip(b"\0").decode()

    def __iter__(self) -> Iterator[str]:
        for start in range(0, len(self.raw), BATCH_ROWS):
            yield from (p.decode() for p in self.raw[start : start + BATCH_ROWS].tolist())

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Sequence) or isinstance(other, str):
            return NotImplemented
        return len(self) == len(other) and all(a == b for a, b in zip(self, other, strict=True))

    __hash__ = None  # type: ignore[assignment]

    def __repr__(self) -> str:
        return f"<{len(self)} ids>"


class _PidIndex(Mapping[str, int]):
    """``pid -> position`` by binary search in the sorted ids."""

    def __init__(self, pids: _PidList) -> None:
        self.pids = pids

    def __getitem__(self, pid: str) -> int:
        key = pid.encode() if isinstance(pid, str) else b""
        raw = self.pids.raw
        i = int(np.searchsorted(raw, key))
        if key and i < len(raw) and raw[i] == key:
            return i
        raise KeyError(pid)

    def __iter__(self) -> Iterator[str]:
        return iter(self.pids)

    def __len__(self) -> int:
        return len(self.pids)


class _ById(Mapping[str, Any]):
    """A read-only view ``pid -> value`` over the ids whose ``present`` flag is set."""

    def __init__(self, corpus: TableCorpus, present: np.ndarray, value: Any) -> None:
        self.corpus, self.present, self.value = corpus, present, value

    def __getitem__(self, pid: str) -> Any:
        i = self.corpus.index_of[pid]
        if not self.present[i]:
            raise KeyError(pid)
        return self.value(i)

    def __iter__(self) -> Iterator[str]:
        pids = self.corpus.pids
        for i in np.flatnonzero(self.present).tolist():
            yield pids[i]

    def __len__(self) -> int:
        return int(np.count_nonzero(self.present))

    def __repr__(self) -> str:
        return f"<{len(self)} entries>"


class _ByLang(Mapping[str, Mapping[str, Any]]):
    """A read-only view ``lang -> _ById`` over the languages that have an entry."""

    def __init__(self, views: dict[str, _ById]) -> None:
        self.views = {lang: view for lang, view in views.items() if len(view)}

    def __getitem__(self, lang: str) -> Mapping[str, Any]:
        return self.views[lang]

    def __iter__(self) -> Iterator[str]:
        return iter(self.views)

    def __len__(self) -> int:
        return len(self.views)

    def __repr__(self) -> str:
        return f"<{', '.join(f'{lang}: {len(v)}' for lang, v in self.views.items())}>"


class TableCorpus(ParallelCorpus):
    """A :class:`~hybrid_ir.data.corpus.ParallelCorpus` over a :class:`RecordTable` (see the module docstring),
    limited to some of its ids (``index``: positions in the table's ids, ascending; ``None``: all) and, when
    ``negatives`` is false, without its hard negatives."""

    def __init__(
        self,
        name: str,
        table: RecordTable,
        source: str = "",
        index: np.ndarray | None = None,
        negatives: bool = True,
    ) -> None:
        self.name, self.table, self.source = name, table, source
        rows, group, raw = table.rows, table.group, table.pids
        if index is not None:
            rows, group, raw = rows[index], group[index], raw[index]
        cols = np.flatnonzero((rows >= 0).any(axis=0))
        self.languages = [table.languages[c] for c in cols.tolist()]
        self.rows = rows if len(cols) == rows.shape[1] else rows[:, cols]
        self._group = group
        self.index = index
        self.pids = _PidList(raw)
        self.has_negatives = negatives

    def __repr__(self) -> str:
        return f"TableCorpus({self.name!r}, {len(self)} ids in {self.languages}, table={self.table.path})"

    def __getstate__(self) -> dict[str, Any]:
        """Pickled (for a spawned DataLoader worker) without the views built on demand: they are rebuilt there."""
        return {k: v for k, v in self.__dict__.items() if k not in _VIEWS}

    def __eq__(self, other: object) -> bool:
        return self is other

    __hash__ = object.__hash__

    @cached_property
    def index_of(self) -> Mapping[str, int]:  # type: ignore[override]
        return _PidIndex(self.pids)

    @cached_property
    def arrays(self) -> CorpusArrays:
        has_lang = self.rows >= 0
        return CorpusArrays(
            group=np.asarray(self._group), has_lang=has_lang, n_langs=has_lang.sum(axis=1, dtype=np.int8)
        )

    def langs_of(self, pid: str) -> list[str]:
        row = self.rows[self.index_of[pid]]
        return [lang for lang, r in zip(self.languages, row.tolist(), strict=True) if r >= 0]

    def _cell(self, column: str, row: int) -> Any:
        return self.table.table.column(column)[row].as_py()

    def _pair(self, i: int, col: int) -> QAPair:
        row = int(self.rows[i, col])
        return QAPair(
            self.pids[i],
            self.languages[col],
            self._cell("question", row),
            self._cell("passage", row),
            self._cell("context", row),
        )

    @cached_property
    def pairs(self) -> Mapping[str, Mapping[str, QAPair]]:  # type: ignore[override]
        return _ByLang(
            {
                lang: _ById(self, self.rows[:, col] >= 0, lambda i, col=col: self._pair(i, col))
                for col, lang in enumerate(self.languages)
            }
        )

    @cached_property
    def group(self) -> Mapping[str, int]:  # type: ignore[override]
        ones = np.ones(len(self.pids), dtype=bool)
        return _ById(self, ones, lambda i: int(self._group[i]))

    def _listed(self, column: str) -> Mapping[str, Mapping[str, tuple[str, ...]]]:
        if not self.has_negatives:
            return _ByLang({})
        valid = np.asarray(self.table.table.column(column).is_valid())
        views = {}
        for col, lang in enumerate(self.languages):
            rows = self.rows[:, col]
            present = (rows >= 0) & valid[np.maximum(rows, 0)]
            views[lang] = _ById(
                self, present, lambda i, col=col: tuple(self._cell(column, int(self.rows[i, col])))
            )
        return _ByLang(views)

    @cached_property
    def negative_ids(self) -> Mapping[str, Mapping[str, tuple[str, ...]]]:  # type: ignore[override]
        return self._listed("negative_ids")

    @cached_property
    def negatives(self) -> Mapping[str, Mapping[str, tuple[str, ...]]]:  # type: ignore[override]
        return self._listed("negatives")

    def text_rows(self) -> tuple[pa.Table, np.ndarray]:
        return self.table.table.select(list(_TEXT_KINDS)), np.asarray(self.rows)

    def content_key(self) -> str:
        digest = hashlib.sha256(f"table|{self.table.key}|{json.dumps(self.languages)}|".encode())
        digest.update(np.ascontiguousarray(self.rows).tobytes())
        return digest.hexdigest()[:24]

    def subset(self, index: np.ndarray, name: str) -> TableCorpus:
        index = np.asarray(index, dtype=np.int64)
        base = index if self.index is None else self.index[index]
        return TableCorpus(name, self.table, self.source, base, negatives=False)
