"""Checks of a run's config that need no model and no data: ranks, checkpoints, trainer keys that manual
optimisation rejects, callbacks that would select on a test metric.

See docs/usage.md."""

from __future__ import annotations

import logging
from pathlib import Path

import torch
from omegaconf import DictConfig, OmegaConf

from hybrid_ir.data.planning.plan import check_global_batch_size, check_training_length
from hybrid_ir.data.planning.split import check_val_config
from hybrid_ir.models.encoder import check_model_source
from hybrid_ir.utils.checkpoint_io import checkpoint_global_step, read_checkpoint
from hybrid_ir.utils.errors import ConfigError
from hybrid_ir.utils.settings import check_int

log = logging.getLogger(__name__)


def world_size_of(trainer_cfg: DictConfig) -> int:
    """Ranks the trainer config asks for: devices × num_nodes (``devices: -1`` counts visible GPUs)."""
    devices = trainer_cfg.get("devices", 1)
    if devices in (-1, "auto", "-1"):
        devices = max(1, torch.cuda.device_count()) if trainer_cfg.get("accelerator") == "gpu" else 1
    if isinstance(devices, (list, tuple)) or OmegaConf.is_list(devices):
        devices = len(devices)
    return int(devices) * int(trainer_cfg.get("num_nodes", 1) or 1)


def resolve_ckpt_path(ckpt_path: str | None, output_dir: Path) -> str | None:
    """The checkpoint file of ``ckpt_path``: ``"last"`` -> :func:`last_checkpoint` of ``<output_dir>/checkpoints``
    (rerun with the same ``hydra.run.dir``); an explicit path must exist (whether it is a ``train.py`` checkpoint
    is :func:`~hybrid_ir.utils.checkpoint_io.read_checkpoint`'s to say)."""
    if not ckpt_path:
        return None
    if ckpt_path == "last":
        return str(last_checkpoint(output_dir / "checkpoints"))
    path = Path(ckpt_path).expanduser()
    if not path.is_file():
        raise ConfigError(f"ckpt_path={ckpt_path!r}: no checkpoint at {path}")
    return str(path)


def last_checkpoint(directory: Path) -> Path:
    """``<directory>/last.ckpt``; when it is missing or not a complete checkpoint (a write that failed, a copy cut
    short), the newest complete checkpoint beside it (highest global step, e.g. ``epoch00-step000050.ckpt``), with
    a warning saying so.

    Raises:
        ConfigError: no complete checkpoint in ``directory``."""
    last = directory / "last.ckpt"
    problem, last_error = "is missing", None
    if last.is_file():
        try:
            read_checkpoint(last, lazy=True)
            return last
        except ConfigError as err:
            problem, last_error = "is not a complete checkpoint", err
    complete = []
    for path in sorted(directory.glob("*.ckpt")) if directory.is_dir() else []:
        if path.name != last.name:
            try:
                complete.append((checkpoint_global_step(path), path))
            except ConfigError:
                log.warning("ckpt_path=last: skipping %s, not a complete checkpoint", path)
    if not complete:
        if last_error is not None:
            raise last_error
        raise ConfigError(
            f"ckpt_path='last': no checkpoint at {last} (to resume, rerun with the old run's hydra.run.dir=<dir>)"
        )
    step, path = max(complete)
    log.warning(
        "ckpt_path=last: %s %s; resuming from the newest complete checkpoint beside it, %s (global step %d)",
        last,
        problem,
        path.name,
        step,
    )
    return path


# Trainer settings that manual optimisation ignores or rejects, and the key that does the job here.
MANUAL_OPTIMISATION_KEYS = {
    "accumulate_grad_batches": (
        1,
        "module.grad_cache_chunk_size (GradCache: a large batch in bounded memory, with identical gradients) "
        "or a larger data.batch_size",
    ),
    "gradient_clip_val": (
        None,
        "module.max_grad_norm (gradient-norm clipping, applied by our training step)",
    ),
    "gradient_clip_algorithm": (None, "module.max_grad_norm (gradient-norm clipping)"),
    "val_check_interval": (
        None,
        "the zero-shot evaluation callback, which runs before training and after every epoch "
        "(callbacks.zero_shot_eval); step-based evaluation is not supported",
    ),
}


def validate_train_config(cfg: DictConfig) -> None:
    """Checks that need no model and no data: the global batch the DataModule receives
    (``check_global_batch_size`` of ``datamodule.batch_size``, named as :func:`batch_size_key`), a finite training
    length, Trainer settings that manual optimisation does not honour, mandatory data paths and a path-like
    ``model.name_or_path``. The sampler and data settings are checked when the DataModule is built and
    planned, the evaluation datasets by the evaluator's ``validate``."""
    check_seed(cfg.seed)
    check_accelerator(cfg.trainer)
    check_global_batch_size(cfg.datamodule.batch_size, world_size_of(cfg.trainer), key=batch_size_key(cfg))
    trainer = cfg.trainer
    for key, (default, use) in MANUAL_OPTIMISATION_KEYS.items():
        value = trainer.get(key, default)
        if value != default and not (key == "gradient_clip_val" and value == 0):
            raise ConfigError(
                f"trainer.{key}={value!r} is not supported: training uses manual optimisation, where Lightning "
                f"does not apply it; use {use}"
            )
    check_training_length(trainer.get("max_epochs"), trainer.get("max_steps", -1))
    for i, spec in enumerate(cfg.data.get("train") or []):
        missing = (
            [key for key in spec if OmegaConf.is_missing(spec, key)] if isinstance(spec, DictConfig) else []
        )
        if missing:
            key = missing[0]
            name = None if "name" in missing else spec.get("name")
            example = "/path/to/pairs.jsonl" if key == "path" else "<value>"
            raise ConfigError(
                f"data.train.{i}.{key} is not set (dataset {name!r}); set it on the command line, e.g. "
                f"data.train.{i}.{key}={example}"
            )
    check_model_source(cfg.model.name_or_path)
    check_monitors(cfg)


def batch_size_key(cfg: DictConfig) -> str:
    """The key the user set the training batch with: ``data.batch_size``, which ``datamodule.batch_size``
    interpolates, or ``datamodule.batch_size`` where that was set to another value on its own."""
    return (
        "data.batch_size"
        if cfg.datamodule.batch_size == cfg.data.get("batch_size")
        else "datamodule.batch_size"
    )


def check_monitors(cfg: DictConfig) -> None:
    """A callback monitoring a validation metric (``val/...``) needs a validation set (``data.val``); one
    monitoring a zero-shot metric (``eval/...``) selects on a test set, which gets a warning."""
    val = check_val_config(cfg.data.get("val"), cfg.datamodule.batch_size, cfg.data.get("train") or [])
    for key, callback in (cfg.get("callbacks") or {}).items():
        monitor = callback.get("monitor") if isinstance(callback, DictConfig) else None
        if not isinstance(monitor, str):
            continue
        if monitor.startswith("val/") and val is None:
            raise ConfigError(
                f"callbacks.{key} monitors {monitor}, which needs a validation set: set data.val.fraction "
                "(e.g. data.val.fraction=0.1) or data.val.datasets"
            )
        if monitor.startswith("eval/"):
            log.warning(
                "callbacks.%s monitors the zero-shot metric %s: that selects on a test set, so its results "
                "overstate the model; monitor val/loss (data.val) instead",
                key,
                monitor,
            )


SEED_MAX = 2**32 - 1
"""The largest seed numpy (and so ``lightning.seed_everything``) accepts; the smallest is 0."""


def check_seed(seed: object, key: str = "seed") -> None:
    """``seed`` must be an integer in ``0 .. 2**32 - 1`` (numpy's range), named as ``key`` in the error."""
    check_int(seed, key, 0, SEED_MAX, hint="numpy's seed range, 0 to 2**32 - 1")


def check_accelerator(trainer_cfg: DictConfig) -> None:
    """A GPU trainer (``trainer.accelerator`` ``gpu`` / ``cuda``) needs as many visible CUDA GPUs as
    ``trainer.devices`` asks for (``-1`` / ``auto``: at least one; a list: each index visible); checked before any
    data or model is loaded, instead of Lightning's error once the Trainer is built."""
    if trainer_cfg.get("accelerator") not in ("gpu", "cuda"):
        return
    devices = trainer_cfg.get("devices", 1)
    visible = torch.cuda.device_count()
    if isinstance(devices, (list, tuple)) or OmegaConf.is_list(devices):
        needed = max(int(d) for d in devices) + 1 if len(devices) else 1
    elif devices in (-1, "auto", "-1"):
        needed = 1
    else:
        needed = int(devices)
    if visible >= needed:
        return
    seen = "no CUDA GPU is visible" if visible == 0 else f"only {visible} CUDA GPU(s) are visible"
    fix = "lower trainer.devices, or train" if visible else "train"
    raise ConfigError(
        f"trainer.accelerator={trainer_cfg.get('accelerator')} with trainer.devices={devices} asks for "
        f"{needed} GPU(s), but {seen} (torch.cuda.device_count() = {visible}); {fix} on the CPU with trainer=cpu "
        "(or trainer=ddp_cpu for several processes)"
    )
