"""Compose configs outside a Hydra run; build callbacks and loggers from config (lightning-hydra-template
style), with safe W&B fallbacks.

See docs/usage.md."""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import lightning as L
from hydra import compose, initialize_config_dir
from hydra.core.global_hydra import GlobalHydra
from hydra.core.hydra_config import HydraConfig
from hydra.types import RunMode
from hydra.utils import instantiate
from lightning.pytorch.loggers import Logger
from omegaconf import DictConfig, OmegaConf, open_dict

from hybrid_ir.training.csv_logger import ResumableCSVLogger
from hybrid_ir.utils.io import atomic_write_text

log = logging.getLogger(__name__)

WANDB_ID_FILE = "wandb_id.txt"


def register_resolvers() -> None:
    """OmegaConf resolvers used by ``conf/``: ``${best_precision:cpu|gpu}``."""
    from hybrid_ir.utils.hardware import best_precision

    if not OmegaConf.has_resolver("best_precision"):
        OmegaConf.register_new_resolver("best_precision", best_precision)


def compose_config(config_dir: str | Path, config_name: str, overrides: Sequence[str] = ()) -> DictConfig:
    """``<config_dir>/<config_name>.yaml`` composed with ``overrides`` (Hydra syntax) as the entry point with
    that config would get it, outside a Hydra run (resolvers registered; any initialised Hydra cleared first).
    Hydra's ``paths.output_dir`` default points into the run directory, which exists only inside a run:
    callers pass their own ``paths.output_dir=...``."""
    register_resolvers()
    if GlobalHydra.instance().is_initialized():
        GlobalHydra.instance().clear()
    with initialize_config_dir(config_dir=str(Path(config_dir).resolve()), version_base="1.3"):
        return compose(config_name=config_name, overrides=list(overrides))


def instantiate_callbacks(cfg: Mapping[str, Any] | None) -> list[L.Callback]:
    """One callback per entry of the ``callbacks`` group that has a ``_target_``."""
    return [instantiate(c) for c in (cfg or {}).values() if isinstance(c, Mapping) and "_target_" in c]


def run_identity() -> tuple[str | None, str | None]:
    """``(group, name)`` for experiment trackers: in a multirun the sweep directory's name and the job's
    overrides (``sampler=hybrid,seed=1``); in a single run ``(None, None)``."""
    if not HydraConfig.initialized():
        return None, None
    hc = HydraConfig.get()
    if hc.mode != RunMode.MULTIRUN:
        return None, None
    group = f"{hc.job.name}-{Path(hc.sweep.dir).name}"
    name = hc.job.override_dirname or f"job{hc.job.num}"
    return group, name


def instantiate_loggers(cfg: Mapping[str, Any] | None, resume_step: int | None = None) -> list[Logger]:
    """Loggers from the ``logger`` group. W&B runs offline unless configured otherwise; when W&B cannot start
    (not installed, misconfigured, no network for an online run) training goes on with an offline run, or
    without W&B, and says so.

    ``resume_step``: the global step of the checkpoint a run resumes from (``None``: a fresh run). A resumed
    run continues the CSV file (:class:`~hybrid_ir.training.csv_logger.ResumableCSVLogger`) and the W&B run
    whose id is kept in ``<save_dir>/wandb_id.txt``."""
    loggers: list[Logger] = []
    group, name = run_identity()
    for key, conf in (cfg or {}).items():
        if not isinstance(conf, Mapping) or "_target_" not in conf:
            continue
        conf = (
            OmegaConf.create(OmegaConf.to_container(conf, resolve=True))
            if isinstance(conf, DictConfig)
            else conf
        )
        if "WandbLogger" in str(conf["_target_"]):
            loggers.extend(_wandb_logger(conf, group, name, resume=resume_step is not None))
            continue
        logger = instantiate(conf)
        if resume_step is not None and isinstance(logger, ResumableCSVLogger):
            logger.resume_from(resume_step)
        loggers.append(logger)
        log.info("logger %s: %s", key, conf["_target_"])
    return loggers


def _wandb_logger(conf: DictConfig, group: str | None, name: str | None, resume: bool) -> list[Logger]:
    id_file = Path(conf.get("save_dir") or ".") / WANDB_ID_FILE
    with open_dict(conf):
        conf.group = conf.get("group") or group
        conf.name = conf.get("name") or name
        if resume and not conf.get("id") and id_file.is_file():
            conf.id = id_file.read_text(encoding="utf-8").strip()
            conf.resume = "allow"
            log.info("resuming W&B run %s (id from %s)", conf.id, id_file)
    if conf.get("offline", True):
        os.environ.setdefault("WANDB_MODE", "offline")
    try:
        return [_start_wandb(conf, id_file)]
    except Exception as err:
        if conf.get("offline", True):
            log.warning("W&B could not start (%s); training goes on without W&B", err)
            return []
        log.warning("W&B could not start online (%s); falling back to an offline run", err)
        with open_dict(conf):
            conf.offline = True
        os.environ["WANDB_MODE"] = "offline"
        try:
            return [_start_wandb(conf, id_file)]
        except Exception as err2:
            log.warning("W&B offline could not start either (%s); training goes on without W&B", err2)
            return []


def _start_wandb(conf: DictConfig, id_file: Path) -> Logger:
    """Build the ``WandbLogger`` and start its run now (so a failure shows here and not mid-training); keep
    the run's id in ``id_file`` for a resume."""
    wandb_logger = instantiate(conf)
    run_id = wandb_logger.experiment.id
    if isinstance(run_id, str) and run_id:  # on ranks other than 0, ``experiment`` is a stand-in
        atomic_write_text(id_file, f"{run_id}\n")
    return wandb_logger
