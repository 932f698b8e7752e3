"""What ``python mine.py`` runs: mine hard negatives for one ``data.train`` input with a model
(:mod:`hybrid_ir.mining.hard_negatives`) and write the input back with ``negative_ids`` (JSONL) plus
``mine_stats.json``. Settings (``mine.*``) and how the negatives are drawn: ``docs/negatives.md``."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Literal

from omegaconf import DictConfig, OmegaConf

from hybrid_ir.data.formats.load_corpus import load_corpus
from hybrid_ir.mining.hard_negatives import (
    EncodeSettings,
    MineSettings,
    PoolKind,
    mine_corpus,
    summary_lines,
    write_corpus_mined,
    write_mined_jsonl,
)
from hybrid_ir.models.encoder import check_model_source
from hybrid_ir.models.loading import load_encoder
from hybrid_ir.retrieval.index import IndexConfig
from hybrid_ir.tasks.checks import check_seed, resolve_ckpt_path
from hybrid_ir.utils.errors import ConfigError
from hybrid_ir.utils.hardware import eval_precision
from hybrid_ir.utils.io import atomic_write_json
from hybrid_ir.utils.settings import check_int, settings


@dataclass(frozen=True)
class MineConfig:
    """The ``mine`` block of ``conf/mine.yaml`` (what each key does: the comments there and ``docs/negatives.md``),
    built and checked by ``settings(MineConfig, cfg.mine, "mine")``: what is retrieved and sampled
    (:meth:`mining`), how texts are encoded, and the index (``mine.index``: :class:`IndexConfig`)."""

    dataset: int
    output: str | None
    pool: PoolKind
    rank_min: int
    rank_max: int
    num_negatives: int
    top_k: int | None
    batch_size: int
    chunk_size: int
    query_chunk: int
    dtype: Literal["float32", "float16"]
    keep_embeddings: bool
    precision: str | int
    index: IndexConfig

    def mining(self, seed: int) -> MineSettings:
        """What the miner retrieves and samples, seeded by ``seed``."""
        return MineSettings(self.pool, self.rank_min, self.rank_max, self.num_negatives, self.top_k, seed)

    def check(self, key: str) -> None:
        """Raise :class:`ConfigError` naming ``<key>.<field>`` for a setting out of range."""
        check_int(self.dataset, f"{key}.dataset", 0)
        self.mining(0).check(key)
        for name in ("batch_size", "chunk_size", "query_chunk"):
            check_int(getattr(self, name), f"{key}.{name}")


def mine_dataset_spec(cfg: DictConfig, index: int) -> dict[str, Any]:
    """The ``data.train`` entry at ``index`` (``mine.dataset``); a JSONL one must have a path."""
    specs = list(cfg.data.get("train") or [])
    check_int(index, "mine.dataset", 0, len(specs) - 1, hint="the position of a data.train entry")
    spec = specs[index]
    if spec.get("format", "lareqa") == "jsonl" and (
        OmegaConf.is_missing(spec, "path") or not spec.get("path")
    ):
        raise ConfigError(
            f"data.train.{index}.path is not set; set it on the command line, e.g. "
            f"data.train.{index}.path=/path/to/pairs.jsonl"
        )
    return OmegaConf.to_container(spec, resolve=True)


def mine(cfg: DictConfig, cli_overrides: Sequence[str] = ()) -> dict[str, Any]:
    """Mine hard negatives for a training dataset (:mod:`hybrid_ir.mining.hard_negatives`) with the encoder of
    :func:`load_encoder`; write a JSONL file with ``negative_ids`` (a JSONL input copied with its keys, any
    other dataset exported with its groups kept, see :func:`write_corpus_mined`) and ``mine_stats.json``, print
    a summary."""
    output_dir = Path(cfg.paths.output_dir)
    check_seed(cfg.seed)
    mcfg = settings(MineConfig, cfg.mine, "mine")
    mining = mcfg.mining(cfg.seed)
    spec = mine_dataset_spec(cfg, mcfg.dataset)
    check_model_source(cfg.model.name_or_path)
    is_jsonl = spec.get("format", "lareqa") == "jsonl"
    source = Path(spec["path"]).expanduser() if is_jsonl else None
    stem = source.stem if source is not None else spec.get("name", "train")
    target = Path(mcfg.output).expanduser() if mcfg.output else output_dir / f"{stem}.mined.jsonl"
    if source is not None and target.resolve() == source.resolve():
        raise ConfigError(
            f"mine.output={str(mcfg.output)!r} is the input file; write the mined file elsewhere"
        )
    ckpt_path = resolve_ckpt_path(cfg.get("ckpt_path"), output_dir)
    corpus = load_corpus(spec, cfg.data.get("root"), download=bool(cfg.data.get("download", False)))
    if source is None:
        source = Path(corpus.source)
    encoder, tag, step = load_encoder(cfg, ckpt_path, cli_overrides)
    encoding = EncodeSettings(
        batch_size=mcfg.batch_size,
        precision=eval_precision(mcfg.precision),
        chunk_size=mcfg.chunk_size,
        cache_dir=output_dir / "embeddings",
        dtype=mcfg.dtype,
        query_chunk=mcfg.query_chunk,
        keep_embeddings=mcfg.keep_embeddings,
    )
    result = mine_corpus(encoder, corpus, mining, mcfg.index, encoding)
    if is_jsonl:
        counts = write_mined_jsonl(source, target, result.negatives)
    else:
        counts = write_corpus_mined(corpus, target, result.negatives)
    print("\n".join(summary_lines(result, mining, counts, source, target)))
    stats = {
        "source": str(source),
        "output": str(target),
        "model": tag,
        "step": step,
        "settings": asdict(mining),
        "top_k": result.top_k,
        "pool_sizes": result.pool_sizes,
        "index": result.index,
        "counts": counts,
        "languages": {lang: asdict(s) for lang, s in result.stats.items()},
    }
    atomic_write_json(output_dir / "mine_stats.json", stats)
    return stats
