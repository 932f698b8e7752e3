"""The inputs a record table is built from (``data.train[i]``): a JSONL file, Parquet files or a Hugging Face
``datasets`` dataset (:class:`TableInput`), read record by record with their column mapping, and keyed on their
files' paths, sizes, modification times and a content sample so that a changed input gives a new table. Formats and
keys: ``docs/data.md``."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

from hybrid_ir.data.cache import SAMPLE_BLOCK, SAMPLE_BYTES, content_sample
from hybrid_ir.data.formats.textfile import iter_lines, parse_json_object
from hybrid_ir.data.schema import KEYS, REQUIRED_KEYS
from hybrid_ir.utils.errors import ConfigError, DataError

FORMAT_VERSION = 2  # 2: the ids array is parallel_ids.npy


INPUT_FORMATS = ("jsonl", "parquet", "hf")


BATCH_ROWS = 50_000


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
