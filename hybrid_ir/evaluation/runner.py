"""Zero-shot evaluation of an encoder on the configured benchmarks (LAReQA-style and MIRACL), with files.

:class:`Evaluator` checks the configuration cheaply (:meth:`Evaluator.validate`, before any model is loaded),
loads the benchmarks once (:meth:`Evaluator.load`) and evaluates an encoder (:meth:`Evaluator.run`), writing
into its output folder (rank 0 only; file names from :mod:`hybrid_ir.evaluation.outputs`):

* ``metrics.json``: a list of records ``{"tag", "step", "datasets": {name: summary}}``, one per evaluation,
  appended (the whole file is rewritten atomically); a LAReQA summary is
  :meth:`~hybrid_ir.evaluation.lareqa_metrics.LareqaResult.to_json` without per-query records, a MIRACL one
  :func:`hybrid_ir.evaluation.miracl_metrics.summarize`;
* ``per_query/<dataset>__<tag>.csv.gz``: per-query columns (LAReQA: qid, lang, setting, target, ap, ap_at_k,
  rank_distance; MIRACL: qid, lang and the two measures), for paired significance tests;
* ``plots/<dataset>__<tag>__map_heatmap.png`` and ``plots/<dataset>__<tag>__rank_distance.png`` (LAReQA).

The settings and dataset specs are :class:`~hybrid_ir.evaluation.config.EvalConfig`. LAReQA datasets with a
public source (:mod:`hybrid_ir.data.formats.download`) are fetched into the user cache when missing and ``download`` is
true. MIRACL topics and qrels are read from the root; the passage corpus (not distributed with the data) must be
given per language.

See docs/usage.md.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from hybrid_ir.data.corpus import RetrievalBenchmark
from hybrid_ir.data.formats.download import ensure_dataset
from hybrid_ir.data.formats.lareqa_files import load_lareqa_benchmark
from hybrid_ir.evaluation import miracl_metrics
from hybrid_ir.evaluation.config import DatasetSpec, EvalConfig, validate_config
from hybrid_ir.evaluation.lareqa_metrics import LareqaResult, evaluate_lareqa
from hybrid_ir.evaluation.outputs import (
    METRICS_FILE,
    brief,
    format_table,
    per_query_path,
    plot_path,
    write_per_query,
)
from hybrid_ir.evaluation.plots import plot_pair_heatmap, plot_per_language_bars
from hybrid_ir.evaluation.subset import subset_pool
from hybrid_ir.retrieval.encode import TextEncoder, encode_benchmark, encoder_device
from hybrid_ir.utils.distributed import world_info
from hybrid_ir.utils.errors import DataError
from hybrid_ir.utils.io import atomic_write_json
from hybrid_ir.utils.paths import resolve_data_root
from hybrid_ir.utils.settings import settings

log = logging.getLogger(__name__)


class Evaluator:
    """Evaluates encoders on the benchmarks of an :class:`EvalConfig`, writing into ``output_dir``.

    Under ``torch.distributed`` (world size > 1), :meth:`run` is a collective: every rank must call it; each
    rank embeds a shard of the texts, rank 0 computes the LAReQA metrics, writes the files and returns the
    results; the other ranks return ``{}``.

    Args:
        cfg: the settings (an :class:`EvalConfig`, a mapping or a ``DictConfig`` of its fields: the ``eval`` block,
            checked by :func:`~hybrid_ir.utils.settings.settings`).
        output_dir: where files are written; may be set later (``evaluator.output_dir = ...``) before :meth:`run`.
    """

    def __init__(self, cfg: EvalConfig | Mapping[str, Any], output_dir: str | Path | None = None) -> None:
        self.cfg = settings(EvalConfig, cfg, "eval")
        self.output_dir = None if output_dir is None else Path(output_dir)
        self.records: list[dict[str, Any]] = []
        self._records_loaded = False
        self._specs: list[DatasetSpec] | None = None
        self._data: dict[str, RetrievalBenchmark | miracl_metrics.MiraclData] | None = None

    @property
    def root(self) -> Path:
        return resolve_data_root(self.cfg.root)

    def validate(self) -> list[DatasetSpec]:
        """Check the dataset specs against the data root (see :func:`validate_config`); cheap, no model needed."""
        self._specs = validate_config(self.cfg)
        return self._specs

    def load(self) -> dict[str, RetrievalBenchmark | miracl_metrics.MiraclData]:
        """Build every benchmark once (downloading missing LAReQA files when allowed); cached on the object."""
        if self._data is None:
            specs = self._specs if self._specs is not None else self.validate()
            self._data = {spec.name: self._load_one(spec) for spec in specs}
        return self._data

    def _load_one(self, spec: DatasetSpec) -> RetrievalBenchmark | miracl_metrics.MiraclData:
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
            if cfg.max_queries_per_language is not None and cfg.max_qids is None:
                log.info(
                    "%s: eval.max_queries_per_language=%d samples the queries only; the pool stays whole (all %d "
                    "candidates are encoded, metrics comparable with full-pool ones); for a quick look use "
                    "eval.max_qids=%d (those questions with only their paragraphs as the pool)",
                    spec.name,
                    cfg.max_queries_per_language,
                    len(bench.candidates),
                    cfg.max_queries_per_language,
                )
            return bench
        return miracl_metrics.load_miracl_dataset(
            self.root, spec, cfg.max_queries_per_language, cfg.subset_seed
        )

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
        precision = str(self.cfg.precision if precision is None else precision)
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
                per_lang = miracl_metrics.evaluate_dataset(encoder, data, self.cfg.batch_size, precision)
                if rank != 0:
                    continue
                results[name], summaries[name] = self._miracl_outputs(out, name, tag, per_lang)
            log.info("%s [%s]: %s", name, tag, brief(results[name]["scalars"]))
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
        if self.cfg.plots:
            heatmap = plot_path(out, name, tag, "map_heatmap")
            plot_pair_heatmap(result.pair_map, result.languages, heatmap, f"{name} mAP ({tag})")
            figures["map_heatmap"] = heatmap
            if result.rank_distance:
                bars = plot_path(out, name, tag, "rank_distance")
                title = f"{name} rank distance, multilingual setting ({tag})"
                plot_per_language_bars(result.rank_distance, bars, title, "mean rank distance")
                figures["rank_distance"] = bars
        if self.cfg.per_query:
            write_per_query(per_query_path(out, name, tag), result.per_query_columns())
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
        summary = miracl_metrics.summarize(name, per_lang)
        if self.cfg.per_query:
            write_per_query(per_query_path(out, name, tag), miracl_metrics.per_query_columns(per_lang))
        result = {"format": "miracl", **{k: summary[k] for k in ("scalars", "languages", "per_language")}}
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
