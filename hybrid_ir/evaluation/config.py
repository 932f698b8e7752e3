"""Evaluation settings (:class:`EvalConfig`) and their validation against the data root.

Dataset specs (``EvalConfig.datasets``)::

    {name: mlqa-r, format: lareqa, languages: [ar, de, ...]}           # <root>/<name>/<lang>.json
    {name: miracl, format: miracl, languages: [sw], corpus: {sw: path}} # <root>/miracl/{topics,qrels}/...

A MIRACL corpus entry is a file, a directory, a glob or a list of these
(:func:`hybrid_ir.data.formats.miracl_files.corpus_files`), as MIRACL ships its large languages in several
``docs-*.jsonl.gz`` files. :func:`validate_config` checks file presence only (cheap, no parsing), so that
config mistakes stop before any model is loaded.

See docs/usage.md.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from hybrid_ir.data.formats.download import SHA256 as DOWNLOADABLE
from hybrid_ir.data.formats.miracl_files import CORPUS_FORMS, corpus_files, qrels_file, topics_file
from hybrid_ir.utils.errors import ConfigError, DataError
from hybrid_ir.utils.hardware import PRECISIONS
from hybrid_ir.utils.paths import resolve_data_root
from hybrid_ir.utils.settings import check_int

FORMATS = ("lareqa", "miracl")
SPEC_KEYS = {"lareqa": {"name", "format", "languages"}, "miracl": {"name", "format", "languages", "corpus"}}


@dataclass(frozen=True)
class EvalConfig:
    """Evaluation settings (the ``eval`` group of the Hydra configs), built and checked by
    :func:`~hybrid_ir.utils.settings.settings` (``settings(EvalConfig, cfg.eval, "eval")``).

    Attributes:
        datasets: dataset specs (see the module docstring).
        root: data root; ``None``: :func:`hybrid_ir.utils.paths.default_data_root`.
        download: fetch missing LAReQA files from their public source.
        max_queries_per_language: keep N question ids per language (LAReQA: the pool stays complete, so every
            candidate is still encoded and the metrics estimate the full-pool ones; MIRACL: a seeded sample of N
            judged queries per language).
        max_qids: LAReQA only: keep N parallel question ids and only their answer paragraphs as the pool
            (:func:`hybrid_ir.evaluation.subset.subset_pool`): the quick look, as few candidates are encoded (a smaller
            pool makes retrieval easier, so the metrics are higher than full-pool ones).
        subset_seed: seed of both subsamplings.
        batch_size: encoding batch size.
        map_k, share_k: cut-offs of AP@k and of the language share (LAReQA).
        with_context: LAReQA candidates are ``sentence + " " + paragraph``.
        precision: ``32`` or a Lightning precision string (a number as the YAML may give it, e.g. ``32``);
            bf16/16 variants encode under autocast.
        plots: write the PNG figures.
        per_query: write the per-query files.
    """

    datasets: list[dict[str, Any]]
    root: str | None = None
    download: bool = True
    max_queries_per_language: int | None = None
    max_qids: int | None = None
    subset_seed: int = 0
    batch_size: int = 128
    map_k: int = 20
    share_k: int = 10
    with_context: bool = False
    precision: str | int = "32"
    plots: bool = True
    per_query: bool = True

    def check(self, key: str = "eval") -> None:
        """Raise :class:`ConfigError` naming ``<key>.<field>`` for a setting out of range."""
        if str(self.precision) not in PRECISIONS:
            raise ConfigError(
                f"{key}.precision={self.precision!r} is not valid; choose one of {', '.join(PRECISIONS)}"
            )
        for name in ("batch_size", "map_k", "share_k"):
            check_int(getattr(self, name), f"{key}.{name}")
        for name in ("max_queries_per_language", "max_qids"):
            check_int(getattr(self, name), f"{key}.{name}", null=True)
        if not self.datasets:
            raise ConfigError(
                f"{key}.datasets must be a non-empty list of dataset specs, got {self.datasets!r}"
            )


@dataclass(frozen=True)
class DatasetSpec:
    """One validated dataset spec; ``corpus[lang]`` holds the MIRACL corpus entries of ``lang`` (files,
    directories or globs, resolved by :func:`hybrid_ir.data.formats.miracl_files.corpus_files`)."""

    name: str
    format: str
    languages: tuple[str, ...]
    corpus: dict[str, tuple[str, ...]] = field(default_factory=dict)


def _parse_spec(index: int, raw: Any) -> DatasetSpec:
    """Check the keys and types of ``datasets[index]``."""
    where = f"eval.datasets[{index}]"
    if not isinstance(raw, Mapping):
        raise ConfigError(f"{where} must be a mapping with keys name, format, languages; got {raw!r}")
    fmt = raw.get("format")
    if fmt not in FORMATS:
        raise ConfigError(
            f"{where}.format={fmt!r} is not a valid evaluation format; valid: {', '.join(FORMATS)}"
        )
    unknown = sorted(set(raw) - SPEC_KEYS[fmt])
    if unknown:
        raise ConfigError(
            f"{where}: unknown key(s) {unknown} for format {fmt}; valid: {sorted(SPEC_KEYS[fmt])}"
        )
    name = raw.get("name")
    if not isinstance(name, str) or not name.strip():
        raise ConfigError(f"{where}.name must be a non-empty string, got {name!r}")
    langs = raw.get("languages")
    if isinstance(langs, str) or not isinstance(langs, Sequence) or not langs:
        raise ConfigError(f"{where}.languages must be a non-empty list of language codes, got {langs!r}")
    if not all(isinstance(lang, str) for lang in langs):
        raise ConfigError(f"{where}.languages must hold language-code strings, got {list(langs)!r}")
    corpus = raw.get("corpus") or {}
    if not isinstance(corpus, Mapping):
        raise ConfigError(
            f"{where}.corpus must map a language to its corpus ({CORPUS_FORMS}), got {corpus!r}"
        )
    entries = {}
    for lang, value in corpus.items():
        items = [value] if isinstance(value, str | Path) else value
        if isinstance(items, str) or not isinstance(items, Sequence) or not items:
            raise ConfigError(f"{where}.corpus.{lang} must be {CORPUS_FORMS}; got {value!r}")
        entries[str(lang)] = tuple(str(item) for item in items)
    return DatasetSpec(name, fmt, tuple(dict.fromkeys(langs)), entries)


def _lareqa_languages(root: Path, spec: DatasetSpec, download: bool) -> tuple[set[str], set[str]]:
    """``(languages on disk under root, languages that can be downloaded)`` of a LAReQA dataset."""
    folder = root / spec.name
    on_disk = {f.stem for f in folder.glob("*.json")} if folder.is_dir() else set()
    remote = set(DOWNLOADABLE.get(spec.name, {})) if download else set()
    return on_disk, remote


def _check_lareqa(root: Path, spec: DatasetSpec, download: bool, where: str) -> None:
    on_disk, remote = _lareqa_languages(root, spec, download)
    have = on_disk | remote
    if not have:
        source = (
            f"no download source (datasets with one: {', '.join(sorted(DOWNLOADABLE))})"
            if download
            else "download is off"
        )
        raise ConfigError(
            f"{where}: dataset {spec.name!r} not found under data root {root} "
            f"(expected {root / spec.name}/<lang>.json) and {source}; set eval.root / data.root or $HYBRID_IR_DATA"
        )
    missing = [lang for lang in spec.languages if lang not in have]
    if missing:
        extra = ""
        if not download and set(DOWNLOADABLE.get(spec.name, {})) - on_disk:
            extra = (
                f" (more can be downloaded with download=true: {', '.join(sorted(DOWNLOADABLE[spec.name]))})"
            )
        raise ConfigError(
            f"{where}: dataset {spec.name!r} has no language(s) {', '.join(missing)}; "
            f"it has: {', '.join(sorted(have))}{extra}"
        )


def _miracl_languages(root: Path) -> set[str]:
    """Languages with a MIRACL dev topics file under ``root``."""
    folder = topics_file(root, "xx").parent
    return (
        {p.name.split("-")[2] for p in folder.glob("topics.miracl-v1.0-*-dev.tsv")}
        if folder.is_dir()
        else set()
    )


def _check_miracl(root: Path, spec: DatasetSpec, where: str) -> None:
    have = _miracl_languages(root)
    missing = [lang for lang in spec.languages if lang not in have]
    if missing:
        raise ConfigError(
            f"{where}: dataset {spec.name!r} (MIRACL) has no language(s) {', '.join(missing)} under data root "
            f"{root} (expected {topics_file(root, missing[0])}); it has: {', '.join(sorted(have)) or 'none'}"
        )
    for lang in spec.languages:
        if not qrels_file(root, lang).is_file():
            raise ConfigError(f"{where}: MIRACL qrels for {lang!r} not found: {qrels_file(root, lang)}")
        entries = spec.corpus.get(lang)
        if entries is None:
            raise ConfigError(
                f"{where}: MIRACL needs a passage corpus per language; set {where}.corpus.{lang} to the "
                f"miracl-corpus-v1.0-{lang} corpus ({CORPUS_FORMS}; it is not distributed with the topics "
                "and qrels)"
            )
        try:
            corpus_files(entries)
        except DataError as err:
            raise ConfigError(f"{where}.corpus.{lang}: {err}") from None
    unused = sorted(set(spec.corpus) - set(spec.languages))
    if unused:
        raise ConfigError(
            f"{where}.corpus has language(s) {unused} that are not in its languages {list(spec.languages)}"
        )


def validate_config(cfg: EvalConfig) -> list[DatasetSpec]:
    """Check every dataset spec against the data root (file presence only: cheap, no parsing).

    Raises:
        ConfigError: unknown format (listing the valid ones), duplicate names, an unknown dataset, a language the
            dataset lacks (listing those it has), a missing MIRACL corpus.
    """
    root = resolve_data_root(cfg.root)
    specs = [_parse_spec(i, raw) for i, raw in enumerate(cfg.datasets)]
    names = [spec.name for spec in specs]
    duplicates = sorted({n for n in names if names.count(n) > 1})
    if duplicates:
        raise ConfigError(
            f"eval.datasets: duplicate dataset name(s) {duplicates}; each name must appear once"
        )
    for i, spec in enumerate(specs):
        where = f"eval.datasets[{i}]"
        if spec.format == "lareqa":
            _check_lareqa(root, spec, cfg.download, where)
        else:
            _check_miracl(root, spec, where)
    return specs
