"""What ``train.py``, ``evaluate.py`` and ``mine.py`` run: build everything from the Hydra config, validate it
first."""

from __future__ import annotations

import dataclasses
import logging
import warnings
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import lightning as L
from hydra.utils import instantiate
from lightning.pytorch.callbacks import LearningRateMonitor, ModelCheckpoint
from lightning.pytorch.loggers import Logger
from lightning.pytorch.utilities.rank_zero import rank_zero_only
from omegaconf import DictConfig, OmegaConf

from hybrid_ir.config_checks import check_seed, resolve_ckpt_path, validate_train_config, world_size_of
from hybrid_ir.data.datamodule import ParallelQADataModule
from hybrid_ir.data.loading import load_corpus
from hybrid_ir.data.mining import (
    EncodeSettings,
    MineSettings,
    mine_corpus,
    summary_lines,
    write_corpus_mined,
    write_mined_jsonl,
)
from hybrid_ir.evaluation.callback import ZeroShotEvalCallback
from hybrid_ir.evaluation.config import EvalConfig
from hybrid_ir.evaluation.retrieval import IndexConfig
from hybrid_ir.evaluation.runner import Evaluator
from hybrid_ir.models.encoder import Encoder, check_model_source
from hybrid_ir.models.loading import load_encoder
from hybrid_ir.utils.checkpoint_io import read_checkpoint
from hybrid_ir.utils.distributed import launch_rank
from hybrid_ir.utils.errors import ConfigError
from hybrid_ir.utils.hardware import eval_precision
from hybrid_ir.utils.instantiate import instantiate_callbacks, instantiate_loggers
from hybrid_ir.utils.io import atomic_write_json

log = logging.getLogger(__name__)

# Lightning's notes that do not apply here: our training_step steps the optimiser itself (so a step-wise
# checkpoint holds the post-step state, as intended), and our batch sampler is resumable through the loader.
for _message in (
    ".*ModelCheckpoint with manual optimization.*",
    ".*isinstance\\(treespec, LeafSpec\\).*",
    ".*Trying to infer the `batch_size`.*",
    # the empty validation "loader" (``[]``) of a run without data.val: validation is off
    ".*Total length of `list` across ranks is zero.*",
):
    warnings.filterwarnings("ignore", message=_message)


def drop_logging_callbacks(callbacks: list[L.Callback], has_logger: bool) -> list[L.Callback]:
    """Without any logger (``logger=none``, or W&B could not start) Lightning refuses a LearningRateMonitor;
    drop it then, saying so, rather than failing the run."""
    if has_logger:
        return callbacks
    kept = [cb for cb in callbacks if not isinstance(cb, LearningRateMonitor)]
    if len(kept) < len(callbacks):
        log.warning("no logger is active, so the learning rate is not logged (LearningRateMonitor dropped)")
    return kept


def dry_run(datamodule: ParallelQADataModule, output_dir: Path) -> dict[str, Any]:
    """Plan one epoch of batches without a model; print a summary and write ``batch_stats.json``."""
    datamodule.load_corpora()
    stats = datamodule.preview()
    atomic_write_json(output_dir / "batch_stats.json", stats)
    langs = stats["languages"]
    width = max(len(x) for x in langs) + 2
    lines = [
        f"dry run: {stats['batches']} batches of {stats['batch_size']} ({stats['mode']}, alpha={stats['alpha']}): "
        f"{stats['kinds']['mono']} mono, {stats['kinds']['cross']} cross; duplicates {stats['duplicate_pids']}, "
        f"group clashes {stats['group_clashes']}, dropped ids {stats['dropped_pids']}",
        "query lang \\ passage lang counts:",
        " " * width + "".join(f"{x:>{width + 3}}" for x in langs),
    ]
    for lang, row in zip(langs, stats["lang_pairs"], strict=True):
        lines.append(f"{lang:<{width}}" + "".join(f"{n:>{width + 3}}" for n in row))
    for usage in stats["dataset_usage"]:
        reasons = ", ".join(f"{k} {n}" for k, n in usage["drop_reasons"].items() if n) or "none dropped"
        lines.append(
            f"{usage['name']}: {usage['batches']} batches ({usage['mono_batches']} mono), {usage['used_ids']} of "
            f"{usage['ids']} ids used, "
            f"{usage['dropped_ids']} dropped ({reasons})"
        )
    negatives = stats.get("negatives")
    if negatives is not None:
        lines.append(
            f"hard negatives: {negatives['count']} ({negatives['per_query']} per pair) in "
            f"{negatives['batches_sampled']} of {negatives['batches']} batches, "
            f"{negatives['in_passage_lang_share']:.0%} in the pair's passage language, group clashes with a "
            f"positive of the batch {negatives['group_clashes']}; sources "
            + ", ".join(f"{k} {n}" for k, n in negatives["sources"].items())
        )
    val = stats.get("validation")
    if val is not None:
        lines.append(
            f"validation: {val['batches']} fixed batches of {val['batch_size']} ({val['mode']}, alpha={val['alpha']}): "
            f"{val['kinds']['mono']} mono, {val['kinds']['cross']} cross"
        )
        lines += [
            f"{u['name']}: {u['used_ids']} of {u['ids']} validation ids used, {u['dropped_ids']} dropped"
            for u in val["dataset_usage"]
        ]
    print("\n".join(lines))
    print(f"batch stats written to {output_dir / 'batch_stats.json'}")
    return stats


@dataclass
class Components:
    """What a training run is made of, built from the config by :func:`build_components`."""

    datamodule: ParallelQADataModule
    encoder: Encoder
    module: L.LightningModule
    loggers: list[Logger]
    callbacks: list[L.Callback]
    trainer: L.Trainer


def build_components(
    cfg: DictConfig,
    extra_callbacks: Sequence[L.Callback] = (),
    resume_step: int | None = None,
    resume_data: Mapping[str, Any] | None = None,
) -> Components:
    """Seed, then build the DataModule (corpora loaded, tokenizer attached), the encoder, the LightningModule,
    the loggers (given the resolved config as hyper-parameters), the callbacks of ``cfg.callbacks`` after
    ``extra_callbacks``, and the Trainer. The evaluation callback's datasets are validated before the model
    is built, so a bad evaluation setting fails fast; so is a resume whose checkpoint (DataModule state
    ``resume_data``) was trained on another batch plan (:meth:`ParallelQADataModule.check_resume`)."""
    L.seed_everything(cfg.seed, workers=True)
    datamodule: ParallelQADataModule = instantiate(cfg.datamodule)
    callbacks = instantiate_callbacks(cfg.get("callbacks"))
    for cb in callbacks:
        if isinstance(cb, ZeroShotEvalCallback):
            cb.evaluator.validate()
    datamodule.check_plan(world_size_of(cfg.trainer))
    if resume_data is not None:
        datamodule.check_resume(resume_data)
    encoder: Encoder = instantiate(cfg.model)
    module = instantiate(cfg.module, encoder=encoder, loss=instantiate(cfg.loss))
    datamodule.attach_tokenizer(encoder.text_tokenizer)
    # Until the Trainer sets up, Lightning's rank-zero-only calls go by RANK / LOCAL_RANK / SLURM_PROCID; a node
    # that Lightning's multi-node launcher started (NODE_RANK) would log the hyper-parameters as rank 0 (and so
    # start a W&B run of its own).
    nodes = int(cfg.trainer.get("num_nodes", 1) or 1)
    rank_zero_only.rank = launch_rank(world_size_of(cfg.trainer) // nodes)
    loggers = instantiate_loggers(cfg.get("logger"), resume_step=resume_step)
    for lg in loggers:
        lg.log_hyperparams(OmegaConf.to_container(cfg, resolve=True))
    callbacks = drop_logging_callbacks([*extra_callbacks, *callbacks], bool(loggers))
    # A run configured without a checkpoint callback (``callbacks.model_checkpoint=null``, as the replication sets)
    # writes none: Lightning would otherwise add a ModelCheckpoint of its own into the logger's folder.
    checkpoints = (
        {} if any(isinstance(cb, ModelCheckpoint) for cb in callbacks) else {"enable_checkpointing": False}
    )
    trainer: L.Trainer = instantiate(cfg.trainer, callbacks=callbacks, logger=loggers or False, **checkpoints)
    return Components(datamodule, encoder, module, loggers, callbacks, trainer)


def train(cfg: DictConfig) -> dict[str, Any]:
    """Train (or dry-run) as configured; returns the last zero-shot evaluation's (``eval/...``) and validation's
    (``val/...``) scalars; a sweeper optimises :func:`sweep_objective` of them."""
    output_dir = Path(cfg.paths.output_dir)
    validate_train_config(cfg)
    if cfg.get("dry_run"):
        L.seed_everything(cfg.seed, workers=True)
        return dry_run(instantiate(cfg.datamodule), output_dir)
    ckpt_path = resolve_ckpt_path(cfg.get("ckpt_path"), output_dir)
    resume_step, resume_data = resume_point(ckpt_path)
    run = build_components(cfg, resume_step=resume_step, resume_data=resume_data)
    run.trainer.fit(run.module, datamodule=run.datamodule, ckpt_path=ckpt_path)
    return {k: float(v) for k, v in run.trainer.callback_metrics.items() if k.startswith(("eval/", "val/"))}


def resume_point(ckpt_path: str | None) -> tuple[int | None, Mapping[str, Any] | None]:
    """``(resume_step, resume_data)`` of :func:`build_components` for a run resuming from ``ckpt_path``: the
    checkpoint's global step and its DataModule state (``{}`` when it has none); ``(None, None)`` for a fresh
    run."""
    if ckpt_path is None:
        return None, None
    checkpoint = read_checkpoint(ckpt_path, lazy=True)
    return int(checkpoint["global_step"]), checkpoint.get(ParallelQADataModule.__qualname__, {})


def sweep_objective(metrics: Mapping[str, float]) -> float | None:
    """What a sweep minimises (``hydra/sweeper=optuna``): the last validation loss ``val/loss`` of a run with
    ``data.val``; ``None`` without one. Never a zero-shot metric (``eval/...``): those are the test sets, and
    choosing hyper-parameters on them overstates the result."""
    value = metrics.get("val/loss")
    return None if value is None else float(value)


def evaluate(cfg: DictConfig, cli_overrides: Sequence[str] = ()) -> dict[str, Any]:
    """Evaluate the encoder of :func:`load_encoder` (a pretrained model, a directory or a checkpoint); the
    record is tagged with what was evaluated."""
    output_dir = Path(cfg.paths.output_dir)
    check_model_source(cfg.model.name_or_path)
    eval_cfg = EvalConfig(**OmegaConf.to_container(cfg.eval, resolve=True))
    evaluator = Evaluator(eval_cfg, output_dir)
    evaluator.validate()
    ckpt_path = resolve_ckpt_path(cfg.get("ckpt_path"), output_dir)
    encoder, tag, step = load_encoder(cfg, ckpt_path, cli_overrides)
    loggers = instantiate_loggers(cfg.get("logger"))
    results = evaluator.run(encoder, tag=tag, step=step)
    print(evaluator.format_table(evaluator.records))
    print(f"metrics written to {output_dir / 'metrics.json'}")
    for lg in loggers:
        for name, res in results.items():
            lg.log_metrics({f"eval/{name}/{k}": v for k, v in res["scalars"].items()})
        lg.finalize("success")
    return results


def mine_dataset_spec(cfg: DictConfig) -> dict[str, Any]:
    """The ``data.train`` entry that ``mine.dataset`` selects; a JSONL one must have a path."""
    specs = list(cfg.data.get("train") or [])
    index = cfg.mine.dataset
    if isinstance(index, bool) or not isinstance(index, int) or not 0 <= index < len(specs):
        raise ConfigError(
            f"mine.dataset={index!r}: expected the position of a data.train entry, 0..{len(specs) - 1}"
        )
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
    """Mine hard negatives for a training dataset (:mod:`hybrid_ir.data.mining`) with the encoder of
    :func:`load_encoder`; write a JSONL file with ``negative_ids`` (a JSONL input copied with its keys, any
    other dataset exported with its groups kept, see :func:`write_corpus_mined`) and ``mine_stats.json``, print
    a summary."""
    output_dir = Path(cfg.paths.output_dir)
    check_seed(cfg.seed)
    mcfg = cfg.mine
    settings = MineSettings(
        pool=mcfg.pool,
        rank_min=mcfg.rank_min,
        rank_max=mcfg.rank_max,
        num_negatives=mcfg.num_negatives,
        top_k=mcfg.top_k,
        seed=cfg.seed,
    )
    settings.check("mine")
    index_keys = OmegaConf.to_container(mcfg.index, resolve=True)
    unknown = sorted(set(index_keys) - {f.name for f in dataclasses.fields(IndexConfig)})
    if unknown:
        allowed = [f.name for f in dataclasses.fields(IndexConfig)]
        raise ConfigError(f"mine.index has unknown key(s) {unknown}; allowed: {allowed}")
    index_cfg = IndexConfig(**index_keys)
    index_cfg.check("mine.index")
    for key in ("batch_size", "chunk_size", "query_chunk"):
        value = mcfg[key]
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ConfigError(f"mine.{key}={value!r}: expected an integer >= 1")
    if mcfg.dtype not in ("float32", "float16"):
        raise ConfigError(f"mine.dtype={mcfg.dtype!r}: expected float32 or float16")
    spec = mine_dataset_spec(cfg)
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
        keep_embeddings=bool(mcfg.keep_embeddings),
    )
    result = mine_corpus(encoder, corpus, settings, index_cfg, encoding)
    if is_jsonl:
        counts = write_mined_jsonl(source, target, result.negatives)
    else:
        counts = write_corpus_mined(corpus, target, result.negatives)
    print("\n".join(summary_lines(result, settings, counts, source, target)))
    stats = {
        "source": str(source),
        "output": str(target),
        "model": tag,
        "step": step,
        "settings": dataclasses.asdict(settings),
        "top_k": result.top_k,
        "pool_sizes": result.pool_sizes,
        "index": result.index,
        "counts": counts,
        "languages": {lang: dataclasses.asdict(s) for lang, s in result.stats.items()},
    }
    atomic_write_json(output_dir / "mine_stats.json", stats)
    return stats
