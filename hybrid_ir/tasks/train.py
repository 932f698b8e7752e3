"""What ``python train.py`` runs: validate the config, build the DataModule, the module, the callbacks and the loggers
from it, train (resuming from ``ckpt_path``), and return the metrics a sweep optimises; ``+dry_run=true`` plans the
epochs and writes their statistics without training. Usage: ``docs/usage.md``."""

from __future__ import annotations

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

from hybrid_ir.data.runtime.datamodule import ParallelQADataModule
from hybrid_ir.evaluation.callback import ZeroShotEvalCallback
from hybrid_ir.models.encoder import Encoder
from hybrid_ir.tasks.checks import resolve_ckpt_path, validate_train_config, world_size_of
from hybrid_ir.tasks.instantiate import instantiate_callbacks, instantiate_loggers
from hybrid_ir.utils.checkpoint_io import read_checkpoint
from hybrid_ir.utils.distributed import launch_rank
from hybrid_ir.utils.hardware import set_training_threads
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
        f"{stats['kinds']['mono']} mono, {stats['kinds']['cross']} cross; duplicates {stats['duplicate_ids']}, "
        f"group clashes {stats['group_clashes']}, dropped ids {stats['dropped_ids']}",
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
    """Seed, give this process its share of the machine's CPU cores (:func:`set_training_threads`), then build the
    DataModule (corpora loaded, tokenizer attached), the encoder, the LightningModule,
    the loggers (given the resolved config as hyper-parameters), the callbacks of ``cfg.callbacks`` after
    ``extra_callbacks``, and the Trainer. The evaluation callback's datasets are validated before the model
    is built, so a bad evaluation setting fails fast; so is a resume whose checkpoint (DataModule state
    ``resume_data``) was trained on another batch plan (:meth:`ParallelQADataModule.check_resume`)."""
    L.seed_everything(cfg.seed, workers=True)
    nodes = int(cfg.trainer.get("num_nodes", 1) or 1)
    set_training_threads(world_size_of(cfg.trainer) // nodes)
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
