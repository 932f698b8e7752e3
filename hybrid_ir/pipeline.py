"""What ``train.py``, ``evaluate.py`` and ``mine.py`` run: build everything from the Hydra config, validate it
first."""

from __future__ import annotations

import dataclasses
import logging
import warnings
import zipfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import lightning as L
import torch
from hydra.utils import instantiate
from lightning.pytorch.callbacks import LearningRateMonitor
from lightning.pytorch.loggers import Logger
from omegaconf import DictConfig, OmegaConf

from hybrid_ir.data.datamodule import ParallelQADataModule, check_val_config, load_corpus
from hybrid_ir.data.mining import EncodeSettings, MineSettings, mine_corpus, summary_lines, write_mined_jsonl
from hybrid_ir.data.samplers import check_global_batch_size
from hybrid_ir.evaluation.callback import ZeroShotEvalCallback
from hybrid_ir.evaluation.config import EvalConfig
from hybrid_ir.evaluation.retrieval import IndexConfig
from hybrid_ir.evaluation.runner import Evaluator
from hybrid_ir.models.encoder import SETTING_KEYS, Encoder, check_model_source, saved_settings
from hybrid_ir.models.st_format import load_pooler_dense
from hybrid_ir.utils.checkpoint_io import checkpoint_global_step
from hybrid_ir.utils.errors import ConfigError
from hybrid_ir.utils.hardware import accelerator_device, eval_precision
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


def world_size_of(trainer_cfg: DictConfig) -> int:
    """Ranks the trainer config asks for: devices × num_nodes (``devices: -1`` counts visible GPUs)."""
    devices = trainer_cfg.get("devices", 1)
    if devices in (-1, "auto", "-1"):
        devices = max(1, torch.cuda.device_count()) if trainer_cfg.get("accelerator") == "gpu" else 1
    if isinstance(devices, (list, tuple)) or OmegaConf.is_list(devices):
        devices = len(devices)
    return int(devices) * int(trainer_cfg.get("num_nodes", 1) or 1)


def resolve_ckpt_path(ckpt_path: str | None, output_dir: Path) -> str | None:
    """``"last"`` -> ``<output_dir>/checkpoints/last.ckpt`` (rerun with the same ``hydra.run.dir``); an explicit
    path must exist and be a PyTorch checkpoint (a zip archive, as ``torch.save`` and Lightning write)."""
    if not ckpt_path:
        return None
    path = output_dir / "checkpoints" / "last.ckpt" if ckpt_path == "last" else Path(ckpt_path).expanduser()
    if not path.is_file():
        hint = " (to resume, rerun with the old run's hydra.run.dir=<dir>)" if ckpt_path == "last" else ""
        raise ConfigError(f"ckpt_path={ckpt_path!r}: no checkpoint at {path}{hint}")
    if not zipfile.is_zipfile(path):
        raise ConfigError(
            f"ckpt_path={ckpt_path!r}: {path} is not a PyTorch checkpoint (not a torch.save zip archive); give a "
            "<run>/checkpoints/*.ckpt file written by train.py, or ckpt_path=last"
        )
    return str(path)


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


def resume_step_of(ckpt_path: str | None) -> int | None:
    """The global step of the checkpoint a training run resumes from (``None``: a fresh run); a file that is
    not a ``train.py`` checkpoint is a config error."""
    if ckpt_path is None:
        return None
    try:
        return checkpoint_global_step(ckpt_path)
    except ValueError as err:
        raise ConfigError(f"ckpt_path={ckpt_path!r}: {err}; give a checkpoint written by train.py") from None


def validate_train_config(cfg: DictConfig) -> None:
    """Checks that need no model and no data: the global batch (``check_global_batch_size``), a finite training
    length, Trainer settings that manual optimisation does not honour, mandatory data paths and a path-like
    ``model.name_or_path``. The sampler and data settings are checked when the DataModule is built and
    planned, the evaluation datasets by the evaluator's ``validate``."""
    check_global_batch_size(cfg.data.batch_size, world_size_of(cfg.trainer))
    trainer = cfg.trainer
    for key, (default, use) in MANUAL_OPTIMISATION_KEYS.items():
        value = trainer.get(key, default)
        if value != default and not (key == "gradient_clip_val" and value == 0):
            raise ConfigError(
                f"trainer.{key}={value!r} is not supported: training uses manual optimisation, where Lightning "
                f"does not apply it; use {use}"
            )
    max_epochs, max_steps = trainer.get("max_epochs"), trainer.get("max_steps", -1)
    if max_epochs == -1 and (max_steps is None or max_steps < 0):
        raise ConfigError(
            "trainer.max_epochs=-1 (train without an epoch limit) needs a finite trainer.max_steps (e.g. "
            "trainer.max_steps=10000): the learning-rate schedule is laid out over the total number of steps"
        )
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


def check_monitors(cfg: DictConfig) -> None:
    """A callback monitoring a validation metric (``val/...``) needs a validation set (``data.val``); one
    monitoring a zero-shot metric (``eval/...``) selects on a test set, which gets a warning."""
    val = check_val_config(cfg.data.get("val"), cfg.data.batch_size, cfg.data.get("train") or [])
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
    cfg: DictConfig, extra_callbacks: Sequence[L.Callback] = (), resume_step: int | None = None
) -> Components:
    """Seed, then build the DataModule (corpora loaded, tokenizer attached), the encoder, the LightningModule,
    the loggers (given the resolved config as hyper-parameters), the callbacks of ``cfg.callbacks`` after
    ``extra_callbacks``, and the Trainer. The evaluation callback's datasets are validated before the model
    is built, so a bad evaluation setting fails fast."""
    L.seed_everything(cfg.seed, workers=True)
    datamodule: ParallelQADataModule = instantiate(cfg.datamodule)
    callbacks = instantiate_callbacks(cfg.get("callbacks"))
    for cb in callbacks:
        if isinstance(cb, ZeroShotEvalCallback):
            cb.evaluator.validate()
    datamodule.check_plan(world_size_of(cfg.trainer))
    encoder: Encoder = instantiate(cfg.model)
    module = instantiate(cfg.module, encoder=encoder, loss=instantiate(cfg.loss))
    datamodule.attach_tokenizer(encoder.text_tokenizer)
    loggers = instantiate_loggers(cfg.get("logger"), resume_step=resume_step)
    for lg in loggers:
        lg.log_hyperparams(OmegaConf.to_container(cfg, resolve=True))
    callbacks = drop_logging_callbacks([*extra_callbacks, *callbacks], bool(loggers))
    trainer: L.Trainer = instantiate(cfg.trainer, callbacks=callbacks, logger=loggers or False)
    return Components(datamodule, encoder, module, loggers, callbacks, trainer)


def train(cfg: DictConfig) -> dict[str, Any]:
    """Train (or dry-run) as configured; returns the last evaluation's scalars (for sweepers)."""
    output_dir = Path(cfg.paths.output_dir)
    validate_train_config(cfg)
    if cfg.get("dry_run"):
        L.seed_everything(cfg.seed, workers=True)
        return dry_run(instantiate(cfg.datamodule), output_dir)
    ckpt_path = resolve_ckpt_path(cfg.get("ckpt_path"), output_dir)
    run = build_components(cfg, resume_step=resume_step_of(ckpt_path))
    run.trainer.fit(run.module, datamodule=run.datamodule, ckpt_path=ckpt_path)
    return {k: float(v) for k, v in run.trainer.callback_metrics.items() if k.startswith("eval/")}


def read_checkpoint(ckpt_path: str) -> dict[str, Any]:
    """A ``train.py`` Lightning checkpoint, loaded with ``weights_only`` (a checkpoint never runs code)."""
    return torch.load(ckpt_path, map_location="cpu", weights_only=True)


def load_checkpoint_weights(encoder: Encoder, ckpt_path: str, state: dict[str, Any] | None = None) -> None:
    """Copy the encoder weights of a ``train.py`` checkpoint (``state``, else read from ``ckpt_path``) into
    ``encoder``."""
    state = read_checkpoint(ckpt_path) if state is None else state
    weights = {k[len("encoder.") :]: v for k, v in state["state_dict"].items() if k.startswith("encoder.")}
    if not weights:
        raise ConfigError(f"ckpt_path={ckpt_path!r} holds no encoder weights (is it a hybrid_ir checkpoint?)")
    missing, unexpected = encoder.load_state_dict(weights, strict=False)
    if missing or unexpected:
        raise ConfigError(
            f"ckpt_path={ckpt_path!r} does not match model {encoder.name_or_path!r}: "
            f"missing {list(missing)[:5]}, unexpected {list(unexpected)[:5]}; pick the model config it was trained with"
        )


def command_line_keys(overrides: Sequence[str], group: str = "model") -> set[str]:
    """The keys under ``group`` that command-line ``overrides`` set (``model.max_length=64`` -> ``max_length``)."""
    keys = set()
    for override in overrides:
        key = override.split("=", 1)[0].lstrip("+~")
        if key.startswith(f"{group}."):
            keys.add(key[len(group) + 1 :].split(".", 1)[0])
    return keys


def with_saved_settings(
    model_cfg: dict[str, Any], saved: dict[str, Any], source: str, explicit: set[str]
) -> dict[str, Any]:
    """``model_cfg`` with the settings saved with the model (``saved``, read from ``source``) in place of the
    config's; a key set on the command line (``explicit``) wins, with a log line saying so."""
    out = dict(model_cfg)
    for key, value in saved.items():
        if key in explicit and key in model_cfg:
            if model_cfg[key] != value:
                log.info(
                    "model.%s=%r (command line) overrides %r saved in %s", key, model_cfg[key], value, source
                )
            continue
        if key in model_cfg and model_cfg[key] != value:
            log.info("model.%s=%r from %s (the model config says %r)", key, value, source, model_cfg[key])
        out[key] = value
    return out


def load_encoder(
    cfg: DictConfig, ckpt_path: str | None, cli_overrides: Sequence[str] = ()
) -> tuple[Encoder, str, int | None]:
    """The encoder to use outside training: the model config's pretrained model, a directory
    (``model.name_or_path``: ours, sentence-transformers or plain Hugging Face) or a checkpoint (``ckpt_path``),
    with the settings saved with the directory or checkpoint (pooling, prefixes, max length; a ``model.*`` key
    in ``cli_overrides`` wins), on ``trainer.accelerator``'s device. Returns ``(encoder, tag, step)``: ``tag`` is
    ``pretrained`` for the model config's own model, else the directory or checkpoint path; ``step`` the
    checkpoint's global step."""
    device = accelerator_device(str(cfg.trainer.get("accelerator", "auto")))
    model_cfg: dict[str, Any] = OmegaConf.to_container(cfg.model, resolve=True)
    explicit = command_line_keys(cli_overrides)
    name_or_path = str(model_cfg["name_or_path"])
    state = read_checkpoint(ckpt_path) if ckpt_path else None
    tag, step = "pretrained", None
    if state is not None:
        saved = state.get("hybrid_ir", {}).get("encoder")
        if saved:
            settings = {k: saved[k] for k in SETTING_KEYS if k in saved}
            model_cfg = with_saved_settings(model_cfg, settings, str(ckpt_path), explicit)
        tag, step = str(ckpt_path), state.get("global_step")
    else:
        found = saved_settings(name_or_path)
        if found:
            model_cfg = with_saved_settings(model_cfg, *found, explicit)
            if "random_init" not in explicit:
                model_cfg["random_init"] = False  # a saved model is evaluated with its weights
        if found or "name_or_path" in explicit or Path(name_or_path).expanduser().is_dir():
            tag = name_or_path
    pooler_dense = model_cfg.pop("pooler_dense", None)
    encoder: Encoder = instantiate(model_cfg)
    if pooler_dense:
        load_pooler_dense(encoder.model, pooler_dense)
    if state is not None:
        load_checkpoint_weights(encoder, str(ckpt_path), state)
    return encoder.to(device), tag, step


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
    """The ``data.train`` entry that ``mine.dataset`` selects; it must be a JSONL dataset with a path."""
    specs = list(cfg.data.get("train") or [])
    index = cfg.mine.dataset
    if isinstance(index, bool) or not isinstance(index, int) or not 0 <= index < len(specs):
        raise ConfigError(
            f"mine.dataset={index!r}: expected the position of a data.train entry, 0..{len(specs) - 1}"
        )
    spec = specs[index]
    if spec.get("format", "lareqa") != "jsonl":
        raise ConfigError(
            f"mine.dataset={index}: data.train.{index} ({spec.get('name')!r}) has format "
            f"{spec.get('format', 'lareqa')!r}; the miner reads JSONL training data: use data=jsonl "
            f"data.train.{index}.path=/path/to/pairs.jsonl"
        )
    if OmegaConf.is_missing(spec, "path") or not spec.get("path"):
        raise ConfigError(
            f"data.train.{index}.path is not set; set it on the command line, e.g. "
            f"data.train.{index}.path=/path/to/pairs.jsonl"
        )
    return OmegaConf.to_container(spec, resolve=True)


def mine(cfg: DictConfig, cli_overrides: Sequence[str] = ()) -> dict[str, Any]:
    """Mine hard negatives for a JSONL training file (:mod:`hybrid_ir.data.mining`) with the encoder of
    :func:`load_encoder`; write the file with ``negative_ids`` and ``mine_stats.json``, print a summary."""
    output_dir = Path(cfg.paths.output_dir)
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
    source = Path(spec["path"]).expanduser()
    target = Path(mcfg.output).expanduser() if mcfg.output else output_dir / f"{source.stem}.mined.jsonl"
    if target.resolve() == source.resolve():
        raise ConfigError(
            f"mine.output={str(mcfg.output)!r} is the input file; write the mined file elsewhere"
        )
    ckpt_path = resolve_ckpt_path(cfg.get("ckpt_path"), output_dir)
    corpus = load_corpus(spec, None, download=False)
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
    counts = write_mined_jsonl(source, target, result.negatives)
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
