"""The encoder a command evaluates or mines with: a model config, a saved directory (ours, sentence-transformers or
plain Hugging Face) or a checkpoint, each with its own saved settings unless the command line overrides them.

See docs/models.md."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf

from hybrid_ir.models.encoder import SETTING_KEYS, Encoder, saved_settings
from hybrid_ir.models.st_format import load_pooler_dense
from hybrid_ir.utils.checkpoint_io import read_checkpoint
from hybrid_ir.utils.errors import ConfigError
from hybrid_ir.utils.hardware import accelerator_device

log = logging.getLogger(__name__)


def load_checkpoint_weights(encoder: Encoder, ckpt_path: str, state: dict[str, Any] | None = None) -> None:
    """Copy the encoder weights of a ``train.py`` checkpoint (``state``, else read from ``ckpt_path``) into
    ``encoder``.

    Raises:
        ConfigError: the file is no ``train.py`` checkpoint, or its weights do not fit ``encoder`` (another
            architecture), saying which ``model=`` / ``model.*`` overrides its run was trained with where the
            run's ``.hydra`` folder is beside its ``checkpoints/``."""
    state = read_checkpoint(ckpt_path) if state is None else state
    weights = {k[len("encoder.") :]: v for k, v in state["state_dict"].items() if k.startswith("encoder.")}
    if not weights:
        raise ConfigError(f"ckpt_path={ckpt_path!r} holds no encoder weights (is it a hybrid_ir checkpoint?)")
    own = encoder.state_dict()
    missing = [k for k in own if k not in weights]
    unexpected = [k for k in weights if k not in own]
    reshaped = [k for k in weights if k in own and own[k].shape != weights[k].shape]
    if missing or unexpected or reshaped:
        problems = []
        if reshaped:
            k = reshaped[0]
            problems.append(
                f"{len(reshaped)} weights differ in shape, e.g. {k}: {list(weights[k].shape)} in the checkpoint, "
                f"{list(own[k].shape)} in the model"
            )
        if missing:
            problems.append(f"{len(missing)} weights missing, e.g. {missing[0]}")
        if unexpected:
            problems.append(f"{len(unexpected)} weights the model does not have, e.g. {unexpected[0]}")
        raise ConfigError(
            f"ckpt_path={ckpt_path!r} holds the weights of another architecture than model "
            f"{encoder.name_or_path!r} as configured ({'; '.join(problems)}): it was trained with another model "
            f"config; {training_model_hint(ckpt_path)}"
        )
    encoder.load_state_dict(weights)


def training_model_hint(ckpt_path: str) -> str:
    """What to add to evaluate a checkpoint with the model config it was trained with: the ``model=`` choice and
    ``model.*`` overrides of its run (``<run>/checkpoints/x.ckpt``: read from ``<run>/.hydra``), when found."""
    hydra_dir = Path(ckpt_path).resolve().parent.parent / ".hydra"
    try:
        choice = OmegaConf.load(hydra_dir / "hydra.yaml").hydra.runtime.choices.get("model")
        overrides = OmegaConf.to_container(OmegaConf.load(hydra_dir / "overrides.yaml"))
    except Exception:  # only a hint: without the run's files, the general one
        return "add the model=<name> and model.* overrides it was trained with"
    keys = [
        o for o in overrides if isinstance(o, str) and o.split("=", 1)[0].lstrip("+~").startswith("model.")
    ]
    return f"add the model config of its training run ({hydra_dir}): {' '.join([f'model={choice}', *keys])}"


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
        ours = state.get("hybrid_ir", {})
        saved = ours.get("encoder")
        if saved:
            settings = {k: saved[k] for k in SETTING_KEYS if k in saved}
            model_cfg = with_saved_settings(model_cfg, settings, str(ckpt_path), explicit)
        if "config_overrides" in ours:  # the checkpoint carries its architecture (base model and overrides)
            architecture = {"name_or_path": ours["base_model"], "config_overrides": ours["config_overrides"]}
            model_cfg = with_saved_settings(model_cfg, architecture, str(ckpt_path), explicit)
            # built as trained, with random weights that the checkpoint's replace
            model_cfg["random_init"] = True
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
