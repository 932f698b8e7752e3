"""Reading the configured training datasets: a spec (name, format, languages, path) -> a ParallelCorpus."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

from hybrid_ir.data.corpus import ParallelCorpus
from hybrid_ir.data.download import ensure_dataset
from hybrid_ir.data.jsonl import load_jsonl_corpus
from hybrid_ir.data.lareqa_loader import load_lareqa_corpus
from hybrid_ir.utils.errors import ConfigError
from hybrid_ir.utils.paths import resolve_data_root

FORMATS = ("lareqa", "jsonl")


def load_corpus(spec: Mapping[str, Any], root: str | Path | None, download: bool = True) -> ParallelCorpus:
    """Load one training dataset from its config ``spec``.

    ``spec``: ``{name, format: lareqa | jsonl, languages: [..] | null, path: <file> (jsonl)}``. LAReQA data
    is read from ``<root>/<name>/<lang>.json`` and downloaded into the cache when missing (``download``).
    """
    fmt = spec.get("format", "lareqa")
    if fmt not in FORMATS:
        raise ConfigError(
            f"dataset {spec.get('name')!r}: format={fmt!r} is not valid; choose one of {FORMATS}"
        )
    if fmt == "jsonl":
        if not spec.get("path"):
            raise ConfigError(f"dataset {spec.get('name')!r}: format=jsonl needs a 'path' to the .jsonl file")
        return load_jsonl_corpus(
            Path(spec["path"]).expanduser(), spec.get("name", "jsonl"), spec.get("languages")
        )
    langs = list(spec.get("languages") or [])
    if not langs:
        raise ConfigError(f"dataset {spec.get('name')!r}: list its languages, e.g. languages: [en, de]")
    base = resolve_data_root(root)
    if download:
        base = ensure_dataset(base, spec["name"], langs)
    return load_lareqa_corpus(base, spec["name"], langs)
