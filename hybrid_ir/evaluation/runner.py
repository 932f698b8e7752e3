"""Zero-shot evaluation of an encoder on the configured benchmarks (LAReQA-style and MIRACL), with files.

:class:`Evaluator` checks the configuration cheaply (:meth:`Evaluator.validate`, before any model is loaded),
loads the benchmarks once (:meth:`Evaluator.load`) and evaluates an encoder (:meth:`Evaluator.run`), writing
into its output folder (rank 0 only):

* ``metrics.json``: a list of records ``{"tag", "step", "datasets": {name: summary}}``, one per evaluation,
  appended (the whole file is rewritten atomically); a LAReQA summary is
  :meth:`~hybrid_ir.evaluation.lareqa.LareqaResult.to_json` without per-query records;
* ``per_query/<dataset>__<tag>.json``: per-query columns (LAReQA: qid, lang, setting, target, ap, ap_at_k,
  rank_distance; MIRACL: qid, lang and the two measures), for paired significance tests;
* ``plots/<dataset>__<tag>__map_heatmap.png`` and ``plots/<dataset>__<tag>__rank_distance.png`` (LAReQA).

Dataset specs (``EvalConfig.datasets``)::

    {name: mlqa-r, format: lareqa, languages: [ar, de, ...]}           # <root>/<name>/<lang>.json
    {name: miracl, format: miracl, languages: [sw], corpus: {sw: path}} # <root>/miracl/{topics,qrels}/...

LAReQA datasets with a public source (:mod:`hybrid_ir.data.download`) are fetched into the user cache when
missing and ``download`` is true. MIRACL topics and qrels are read from the root; the passage corpus (not
distributed with the data) must be given per language.
"""

from __future__ import annotations

import json
import logging
import math
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, ListConfig, OmegaConf

from hybrid_ir.data.corpus import RetrievalBenchmark
from hybrid_ir.data.download import SHA256 as DOWNLOADABLE
from hybrid_ir.data.download import ensure_dataset
from hybrid_ir.data.lareqa import load_lareqa_benchmark
from hybrid_ir.data.miracl import load_miracl, qrels_file, topics_file
from hybrid_ir.data.subset import choose_ids, subset_pool
from hybrid_ir.evaluation.lareqa import LareqaResult, evaluate_lareqa
from hybrid_ir.evaluation.plots import plot_pair_heatmap, plot_per_language_bars
from hybrid_ir.evaluation.retrieval import TextEncoder, encode_benchmark, encoder_device, evaluate_miracl
from hybrid_ir.utils.distributed import world_info
from hybrid_ir.utils.errors import ConfigError, DataError
from hybrid_ir.utils.hardware import PRECISIONS
from hybrid_ir.utils.io import atomic_write_json
from hybrid_ir.utils.paths import resolve_data_root

log = logging.getLogger(__name__)

FORMATS = ("lareqa", "miracl")
SPEC_KEYS = {"lareqa": {"name", "format", "languages"}, "miracl": {"name", "format", "languages", "corpus"}}
MIRACL_K_NDCG = 10
MIRACL_K_RECALL = 100
METRICS_FILE = "metrics.json"
LAREQA_COLUMNS = ("map_mono", "map_cross", "map_multi", "rank_distance")
_MIRACL_COLUMN = re.compile(r"^(ndcg|recall)_at(\d+)$")


@dataclass
class EvalConfig:
    """Evaluation settings (the ``eval`` group of the Hydra configs).

    Attributes:
        datasets: dataset specs (see the module docstring).
        root: data root; ``None``: :func:`hybrid_ir.utils.paths.default_data_root`.
        download: fetch missing LAReQA files from their public source.
        max_queries_per_language: keep N question ids per language (LAReQA: the pool stays complete;
            MIRACL: a seeded sample of N judged queries per language).
        max_qids: LAReQA only: keep N parallel question ids and only their answer paragraphs as the pool
            (:func:`hybrid_ir.data.subset.subset_pool`).
        subset_seed: seed of both subsamplings.
        batch_size: encoding batch size.
        map_k, share_k: cut-offs of AP@k and of the language share (LAReQA).
        with_context: LAReQA candidates are ``sentence + " " + paragraph``.
        precision: ``32`` or a Lightning precision string; bf16/16 variants encode under autocast.
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
    precision: str = "32"
    plots: bool = True
    per_query: bool = True

    def __post_init__(self) -> None:
        if isinstance(self.datasets, ListConfig):
            self.datasets = OmegaConf.to_container(self.datasets, resolve=True)
        self.precision = str(self.precision)
        if self.precision not in PRECISIONS:
            raise ConfigError(
                f"eval.precision={self.precision!r} is not valid; choose one of {', '.join(PRECISIONS)}"
            )
        for name in ("batch_size", "map_k", "share_k"):
            value = getattr(self, name)
            if not isinstance(value, int) or value < 1:
                raise ConfigError(f"eval.{name} must be a positive integer, got {value!r}")
        for name in ("max_queries_per_language", "max_qids"):
            value = getattr(self, name)
            if value is not None and (not isinstance(value, int) or value < 1):
                raise ConfigError(f"eval.{name} must be a positive integer or null, got {value!r}")
        if not isinstance(self.datasets, Sequence) or isinstance(self.datasets, str) or not self.datasets:
            raise ConfigError(
                f"eval.datasets must be a non-empty list of dataset specs, got {self.datasets!r}"
            )

    @classmethod
    def from_any(cls, cfg: EvalConfig | Mapping[str, Any]) -> EvalConfig:
        """An :class:`EvalConfig` from itself, a dict or an OmegaConf ``DictConfig`` (resolved); unknown keys
        raise :class:`ConfigError` listing the valid ones."""
        if isinstance(cfg, EvalConfig):
            return cfg
        if isinstance(cfg, DictConfig):
            cfg = OmegaConf.to_container(cfg, resolve=True)
        if not isinstance(cfg, Mapping):
            raise ConfigError(f"the evaluation config must be a mapping, got {type(cfg).__name__}")
        valid = [f.name for f in fields(cls)]
        unknown = sorted(set(cfg) - set(valid))
        if unknown:
            raise ConfigError(f"unknown eval setting(s) {unknown}; valid: {', '.join(valid)}")
        return cls(**dict(cfg))


@dataclass(frozen=True)
class DatasetSpec:
    """One validated dataset spec; ``corpus[lang]`` is the MIRACL corpus file of ``lang``."""

    name: str
    format: str
    languages: tuple[str, ...]
    corpus: dict[str, str] = field(default_factory=dict)


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
        raise ConfigError(f"{where}.corpus must map a language to a corpus file, got {corpus!r}")
    return DatasetSpec(name, fmt, tuple(dict.fromkeys(langs)), {str(k): str(v) for k, v in corpus.items()})


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
        path = spec.corpus.get(lang)
        if path is None:
            raise ConfigError(
                f"{where}: MIRACL needs a passage corpus per language; set {where}.corpus.{lang} to the "
                f"miracl-corpus-v1.0-{lang} JSONL file (it is not distributed with the topics and qrels)"
            )
        if not Path(path).is_file():
            raise ConfigError(f"{where}.corpus.{lang}: file not found: {path}")
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


@dataclass
class MiraclData:
    """MIRACL dev data of one dataset spec: per language ``(topics, qrels, corpus)``."""

    name: str
    languages: list[str]
    by_lang: dict[str, tuple[dict[str, str], dict[str, dict[str, int]], dict[str, str]]]


def safe_name(text: str) -> str:
    """``text`` with every character outside ``[A-Za-z0-9._-]`` replaced by ``_`` (for file names)."""
    return re.sub(r"[^A-Za-z0-9._-]", "_", text)


def _mean(values: Sequence[float]) -> float:
    return sum(values) / len(values) if values else math.nan


class Evaluator:
    """Evaluates encoders on the benchmarks of an :class:`EvalConfig`, writing into ``output_dir``.

    Under ``torch.distributed`` (world size > 1), :meth:`run` is a collective: every rank must call it; each
    rank embeds a shard of the texts, rank 0 computes the LAReQA metrics, writes the files and returns the
    results; the other ranks return ``{}``.

    Args:
        cfg: the settings (an :class:`EvalConfig` or a mapping of its fields).
        output_dir: where files are written; may be set later (``evaluator.output_dir = ...``) before :meth:`run`.
    """

    def __init__(self, cfg: EvalConfig | Mapping[str, Any], output_dir: str | Path | None = None) -> None:
        self.cfg = EvalConfig.from_any(cfg)
        self.output_dir = None if output_dir is None else Path(output_dir)
        self.records: list[dict[str, Any]] = []
        self._records_loaded = False
        self._specs: list[DatasetSpec] | None = None
        self._data: dict[str, RetrievalBenchmark | MiraclData] | None = None

    @property
    def root(self) -> Path:
        return resolve_data_root(self.cfg.root)

    def validate(self) -> list[DatasetSpec]:
        """Check the dataset specs against the data root (see :func:`validate_config`); cheap, no model needed."""
        self._specs = validate_config(self.cfg)
        return self._specs

    def load(self) -> dict[str, RetrievalBenchmark | MiraclData]:
        """Build every benchmark once (downloading missing LAReQA files when allowed); cached on the object."""
        if self._data is None:
            specs = self._specs if self._specs is not None else self.validate()
            self._data = {spec.name: self._load_one(spec) for spec in specs}
        return self._data

    def _load_one(self, spec: DatasetSpec) -> RetrievalBenchmark | MiraclData:
        cfg = self.cfg
        if spec.format == "lareqa":
            root = ensure_dataset(self.root, spec.name, spec.languages) if cfg.download else self.root
            bench = load_lareqa_benchmark(
                root,
                spec.name,
                spec.languages,
                max_queries_per_language=cfg.max_queries_per_language,
                seed=cfg.subset_seed,
                with_context=cfg.with_context,
            )
            if cfg.max_qids is not None:
                bench = subset_pool(bench, cfg.max_qids, cfg.subset_seed)
            sizes = f"{len(bench.queries)} queries, {len(bench.candidates)} candidates"
            log.info("%s: %s (%s)", spec.name, sizes, ", ".join(bench.languages))
            return bench
        by_lang = {}
        for lang in spec.languages:
            topics, qrels, corpus = load_miracl(self.root, lang, spec.corpus[lang])
            if cfg.max_queries_per_language is not None and cfg.max_queries_per_language < len(qrels):
                kept = choose_ids(list(qrels), cfg.max_queries_per_language, cfg.subset_seed)
                qrels = {qid: judged for qid, judged in qrels.items() if qid in kept}
            by_lang[lang] = (topics, qrels, corpus)
        return MiraclData(spec.name, list(spec.languages), by_lang)

    def run(
        self, encoder: TextEncoder, tag: str, step: int | None = None, precision: str | None = None
    ) -> dict[str, dict[str, Any]]:
        """Evaluate ``encoder`` on every dataset and record the result under ``tag`` (see the module docstring).

        Args:
            encoder: an :class:`~hybrid_ir.models.encoder.Encoder` (anything with ``encode`` and ``dim``).
            tag: names this evaluation (``pretrained``, ``epoch0``, ...) in ``metrics.json`` and file names.
            step: the training step, recorded as is.
            precision: overrides ``cfg.precision`` for encoding.

        Returns:
            on rank 0, per dataset: ``format``, ``scalars`` (flat ``{name: float}``), ``languages``, the
            matrices (LAReQA: ``pair_map``, ``multi_map``, ``rank_distance``; MIRACL: ``per_language``) and
            ``figures`` (``{"map_heatmap": path, "rank_distance": path}``, those written); ``{}`` on other ranks.
            LAReQA metrics are computed on the encoder's device.
        """
        out = self._require_output_dir()
        precision = self.cfg.precision if precision is None else str(precision)
        rank, _ = world_info()
        results: dict[str, dict[str, Any]] = {}
        summaries: dict[str, dict[str, Any]] = {}
        for name, data in self.load().items():
            if isinstance(data, RetrievalBenchmark):
                q_emb, c_emb = encode_benchmark(encoder, data, self.cfg.batch_size, precision)
                if rank != 0:
                    continue
                device = encoder_device(encoder)
                result = evaluate_lareqa(
                    q_emb.to(device), c_emb.to(device), data, map_k=self.cfg.map_k, share_k=self.cfg.share_k
                )
                results[name] = self._lareqa_outputs(out, name, tag, result)
                summaries[name] = result.to_json(per_query=False)
            else:
                per_lang = {
                    lang: evaluate_miracl(
                        encoder,
                        topics,
                        qrels,
                        corpus,
                        self.cfg.batch_size,
                        precision,
                        MIRACL_K_NDCG,
                        MIRACL_K_RECALL,
                    )
                    for lang, (topics, qrels, corpus) in data.by_lang.items()
                }
                if rank != 0:
                    continue
                results[name], summaries[name] = self._miracl_outputs(out, name, tag, per_lang)
            log.info("%s [%s]: %s", name, tag, _brief(results[name]["scalars"]))
        if rank == 0:
            self._append_record(out / METRICS_FILE, {"tag": tag, "step": step, "datasets": summaries})
        return results

    def _require_output_dir(self) -> Path:
        if self.output_dir is None:
            raise ValueError("Evaluator.output_dir is not set; pass output_dir or set it before run()")
        return self.output_dir

    def _lareqa_outputs(self, out: Path, name: str, tag: str, result: LareqaResult) -> dict[str, Any]:
        """Write the plots and per-query file of one LAReQA result; return its entry of :meth:`run`."""
        figures: dict[str, Path] = {}
        stem = f"{safe_name(name)}__{safe_name(tag)}"
        if self.cfg.plots:
            heatmap = out / "plots" / f"{stem}__map_heatmap.png"
            plot_pair_heatmap(result.pair_map, result.languages, heatmap, f"{name} mAP ({tag})")
            figures["map_heatmap"] = heatmap
            if result.rank_distance:
                bars = out / "plots" / f"{stem}__rank_distance.png"
                title = f"{name} rank distance, multilingual setting ({tag})"
                plot_per_language_bars(result.rank_distance, bars, title, "mean rank distance")
                figures["rank_distance"] = bars
        if self.cfg.per_query:
            atomic_write_json(out / "per_query" / f"{stem}.json", result.per_query_columns())
        return {
            "format": "lareqa",
            "scalars": result.scalars(),
            "languages": list(result.languages),
            "pair_map": result.pair_map,
            "multi_map": dict(result.multi_map),
            "rank_distance": dict(result.rank_distance),
            "figures": figures,
        }

    def _miracl_outputs(
        self, out: Path, name: str, tag: str, per_lang: dict[str, dict[str, Any]]
    ) -> tuple[dict[str, Any], dict[str, Any]]:
        """Macro averages over languages and the per-query file of one MIRACL dataset; returns its entry of
        :meth:`run` and its summary for ``metrics.json``."""
        ndcg, recall = f"ndcg_at{MIRACL_K_NDCG}", f"recall_at{MIRACL_K_RECALL}"
        langs = list(per_lang)
        scalars = {
            ndcg: _mean([per_lang[lang][ndcg] for lang in langs]),
            recall: _mean([per_lang[lang][recall] for lang in langs]),
            "n_queries": float(sum(per_lang[lang]["n_queries"] for lang in langs)),
        }
        for lang in langs:
            scalars[f"{ndcg}_{lang}"] = per_lang[lang][ndcg]
            scalars[f"{recall}_{lang}"] = per_lang[lang][recall]
        summary_per_lang = {
            lang: {k: v for k, v in res.items() if k != "per_query"} for lang, res in per_lang.items()
        }
        if self.cfg.per_query:
            rows = [
                (lang, qid, values)
                for lang, res in per_lang.items()
                for qid, values in res["per_query"].items()
            ]
            columns = {"qid": [q for _, q, _ in rows], "lang": [lang for lang, _, _ in rows]}
            for measure in (ndcg, recall):
                columns[measure] = [values[measure] for _, _, values in rows]
            atomic_write_json(out / "per_query" / f"{safe_name(name)}__{safe_name(tag)}.json", columns)
        summary = {"name": name, "languages": langs, "scalars": scalars, "per_language": summary_per_lang}
        result = {
            "format": "miracl",
            "scalars": scalars,
            "languages": langs,
            "per_language": summary_per_lang,
        }
        return {**result, "figures": {}}, summary

    def _append_record(self, path: Path, record: dict[str, Any]) -> None:
        """Append ``record`` to :attr:`records` (first reading the records already in ``path``, e.g. of a
        resumed run) and rewrite ``path`` atomically."""
        if not self._records_loaded and path.is_file():
            try:
                existing = json.loads(path.read_text(encoding="utf-8"))
            except json.JSONDecodeError as exc:
                raise DataError(path, f"line {exc.lineno}", f"invalid JSON: {exc.msg}") from None
            if not isinstance(existing, list):
                raise DataError(path, "top level", "expected a JSON list of evaluation records")
            self.records = existing + self.records
        self._records_loaded = True
        self.records.append(record)
        atomic_write_json(path, self.records)

    def format_table(self, records: Sequence[Mapping[str, Any]] | None = None) -> str:
        """:func:`format_table` of ``records`` (default: this evaluator's records)."""
        return format_table(self.records if records is None else records)


def _brief(scalars: Mapping[str, float]) -> str:
    """The table's metrics of one dataset as ``name=value`` pairs (for the log)."""
    keys = [k for k in (*LAREQA_COLUMNS, *sorted(scalars)) if k in scalars and _column_header(k)]
    return ", ".join(f"{k}={scalars[k]:.4f}" for k in dict.fromkeys(keys))


def _column_header(key: str) -> str | None:
    """Header of a table column, or ``None`` when ``key`` is not shown in the table."""
    if key in LAREQA_COLUMNS:
        return "rank_dist" if key == "rank_distance" else key
    match = _MIRACL_COLUMN.match(key)
    if match:
        return f"{'nDCG' if match.group(1) == 'ndcg' else 'R'}@{match.group(2)}"
    return None


def _table_columns(records: Sequence[Mapping[str, Any]]) -> dict[str, list[str]]:
    """Per dataset (in order of first appearance), the scalar keys shown in the table, in display order."""
    datasets: dict[str, list[str]] = {}
    for record in records:
        for name, summary in record.get("datasets", {}).items():
            keys = datasets.setdefault(name, [])
            keys.extend(k for k in summary.get("scalars", {}) if _column_header(k) and k not in keys)
    order = {key: i for i, key in enumerate(LAREQA_COLUMNS)}
    for keys in datasets.values():
        keys.sort(key=lambda k: (order.get(k, len(order)), k))
    return datasets


def _cell(scalars: Mapping[str, float], key: str, width: int) -> str:
    return f"{scalars[key]:>{width}.4f}" if key in scalars else f"{'-':>{width}}"


def format_table(records: Sequence[Mapping[str, Any]]) -> str:
    """A fixed-width table of evaluation records (as in ``metrics.json``).

    Rows: one per record (``tag``, ``step``). Column groups, separated by ``|``: one per dataset (its name
    above), in order of first appearance; in each, those of ``map_mono``, ``map_cross``, ``map_multi``,
    ``rank_distance`` (LAReQA) and ``ndcg_at{k}``, ``recall_at{k}`` (MIRACL macro averages) that some record
    has. Values with 4 decimals; missing values: ``-``.
    """
    datasets = _table_columns(records)
    tags = [str(r.get("tag", "")) for r in records]
    steps = ["-" if r.get("step") is None else str(r["step"]) for r in records]
    tag_w, step_w = max([3, *map(len, tags)]), max([4, *map(len, steps)])
    widths: dict[str, list[int]] = {}
    for name, keys in datasets.items():
        widths[name] = [max(8, len(_column_header(k) or "")) for k in keys] or [0]
        spare = len(name) - (sum(widths[name]) + len(widths[name]) - 1)
        widths[name][-1] += max(0, spare)
    top = [" " * (tag_w + 1 + step_w)]
    head = [f"{'tag':<{tag_w}} {'step':>{step_w}}"]
    for name, keys in datasets.items():
        top.append(f"{name:<{sum(widths[name]) + len(widths[name]) - 1}}")
        headers = [_column_header(k) or "" for k in keys] or [""]
        head.append(" ".join(f"{h:>{w}}" for h, w in zip(headers, widths[name], strict=True)))
    lines = [" | ".join(top), " | ".join(head)]
    lines.append("-" * len(lines[1]))
    for record, tag, step in zip(records, tags, steps, strict=True):
        cells = [f"{tag:<{tag_w}} {step:>{step_w}}"]
        for name, keys in datasets.items():
            scalars = record.get("datasets", {}).get(name, {}).get("scalars", {})
            values = [_cell(scalars, k, w) for k, w in zip(keys, widths[name], strict=True)] if keys else [""]
            cells.append(" ".join(v.rjust(w) for v, w in zip(values, widths[name], strict=True)))
        lines.append(" | ".join(cells))
    return "\n".join(lines)
