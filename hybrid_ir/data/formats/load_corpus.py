"""Reading the configured training datasets: a spec (name, format, languages, path) -> a ParallelCorpus.
See docs/data.md."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

from hybrid_ir.data.corpus import ParallelCorpus
from hybrid_ir.data.formats.download import ensure_dataset
from hybrid_ir.data.formats.inputs import INPUT_FORMATS, TableInput
from hybrid_ir.data.formats.lareqa_files import load_lareqa_corpus
from hybrid_ir.data.formats.table_corpus import table_corpus
from hybrid_ir.utils.errors import ConfigError
from hybrid_ir.utils.paths import resolve_data_root

FORMATS = ("lareqa", *INPUT_FORMATS)


def load_corpus(spec: Mapping[str, Any], root: str | Path | None, download: bool = True) -> ParallelCorpus:
    """Load one training dataset from its config ``spec``.

    ``spec``: ``{name, format: lareqa | jsonl | parquet | hf, languages: [..] | null, path, columns}``. LAReQA data
    is read from ``<root>/<name>/<lang>.json`` and downloaded into the cache when missing (``download``). The other
    formats are read from ``path`` into a cached record table (:mod:`hybrid_ir.data.formats.record_table`), ``columns``
    mapping schema keys to the input's column names; ``hf`` takes a hub name for ``path`` only with ``download``.
    """
    name = spec.get("name")
    fmt = spec.get("format", "lareqa")
    if fmt not in FORMATS:
        raise ConfigError(f"dataset {name!r}: format={fmt!r} is not valid; choose one of {FORMATS}")
    if fmt in INPUT_FORMATS:
        if not spec.get("path"):
            what = {"jsonl": "the .jsonl file", "parquet": "a .parquet file or a folder of them"}.get(
                fmt, "a folder written by Dataset.save_to_disk"
            )
            raise ConfigError(f"dataset {name!r}: format={fmt} needs a 'path' to {what}")
        columns = spec.get("columns") or {}
        if not isinstance(columns, Mapping) or not all(isinstance(v, str) for v in columns.values()):
            raise ConfigError(
                f"dataset {name!r}: columns={columns!r} must map schema keys to the input's column names, "
                "e.g. columns: {question: query, passage: positive}"
            )
        source = TableInput(
            fmt,
            Path(str(spec["path"])).expanduser(),
            columns=dict(columns),
            languages=spec.get("languages"),
            download=download,
            split=spec.get("split") or "train",
        )
        try:
            return table_corpus(source, name or fmt)
        except ConfigError as err:
            raise ConfigError(f"dataset {name!r} ({fmt}): {err}") from None
    langs = list(spec.get("languages") or [])
    if not langs:
        raise ConfigError(f"dataset {name!r}: list its languages, e.g. languages: [en, de]")
    base = resolve_data_root(root)
    if download:
        base = ensure_dataset(base, spec["name"], langs)
    return load_lareqa_corpus(base, spec["name"], langs)
