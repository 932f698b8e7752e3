"""The sentence-transformers directory format: written beside a saved encoder (so ``SentenceTransformer(dir)``
embeds exactly as :class:`~hybrid_ir.models.encoder.Encoder` does, prompts included) and read back as encoder
settings (so ``evaluate.py`` scores any sentence-transformers model with its own pooling, normalisation and prompts).

Layout (the classic module names, which sentence-transformers 2.x to 6.x load):
``modules.json`` (Transformer at the root, ``1_Pooling``, ``2_Dense`` for a LaBSE-style pooler, ``Normalize``),
``sentence_bert_config.json`` (``max_seq_length``) and ``config_sentence_transformers.json`` (prompts
``{"query": ..., "document": ...}``).

See docs/models.md.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch
from torch import nn

from hybrid_ir.utils.errors import ConfigError

MODULES_FILE = "modules.json"
TRANSFORMER = "sentence_transformers.models.Transformer"
POOLING = "sentence_transformers.models.Pooling"
DENSE = "sentence_transformers.models.Dense"
NORMALIZE = "sentence_transformers.models.Normalize"
TANH = "torch.nn.modules.activation.Tanh"
QUERY_PROMPT = "query"
DOCUMENT_PROMPTS = ("document", "passage", "corpus")
"""Prompt names read as the passage prompt: the first non-empty one (``document`` is written; sentence-transformers
6 adds an empty ``document`` prompt to every model it saves)."""
LEGACY_POOLING_KEYS = {
    "pooling_mode_cls_token": "cls",
    "pooling_mode_mean_tokens": "mean",
    "pooling_mode_max_tokens": "max",
    "pooling_mode_mean_sqrt_len_tokens": "mean_sqrt_len_tokens",
    "pooling_mode_weightedmean_tokens": "weightedmean",
    "pooling_mode_lasttoken": "lasttoken",
}


def _write_json(path: Path, data: Any) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(data, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")


def write_sentence_transformers_files(
    directory: str | Path,
    dim: int,
    pooling: str,
    normalize: bool,
    query_prefix: str,
    passage_prefix: str,
    max_length: int,
    pooler_dense: nn.Linear | None = None,
) -> None:
    """Write the sentence-transformers files into ``directory`` (which already holds the Hugging Face model and
    tokenizer). ``pooling="pooler"`` (LaBSE) becomes CLS pooling followed by a ``Dense`` layer with tanh holding
    ``pooler_dense``'s weights (the model's own pooler)."""
    from safetensors.torch import save_file

    directory = Path(directory)
    modules = [{"idx": 0, "name": "0", "path": "", "type": TRANSFORMER}]
    mode = "cls" if pooling == "pooler" else pooling
    pooling_config = {
        "word_embedding_dimension": dim,
        **{k: v == mode for k, v in LEGACY_POOLING_KEYS.items()},
    }
    pooling_config["include_prompt"] = True
    _write_json(directory / "1_Pooling" / "config.json", pooling_config)
    modules.append({"idx": 1, "name": "1", "path": "1_Pooling", "type": POOLING})
    if pooling == "pooler":
        if pooler_dense is None:
            raise ValueError("pooling='pooler' needs the model's pooler layer")
        dense_dir = directory / "2_Dense"
        _write_json(
            dense_dir / "config.json",
            {"in_features": dim, "out_features": dim, "bias": True, "activation_function": TANH},
        )
        weights = {"linear.weight": pooler_dense.weight, "linear.bias": pooler_dense.bias}
        save_file(
            {k: v.detach().float().cpu().contiguous() for k, v in weights.items()},
            dense_dir / "model.safetensors",
        )
        modules.append({"idx": 2, "name": "2", "path": "2_Dense", "type": DENSE})
    if normalize:
        modules.append({"idx": len(modules), "name": str(len(modules)), "path": "", "type": NORMALIZE})
    _write_json(directory / MODULES_FILE, modules)
    _write_json(
        directory / "sentence_bert_config.json", {"max_seq_length": max_length, "do_lower_case": False}
    )
    _write_json(
        directory / "config_sentence_transformers.json",
        {
            "prompts": {QUERY_PROMPT: query_prefix, DOCUMENT_PROMPTS[0]: passage_prefix},
            "default_prompt_name": None,
            "similarity_fn_name": "cosine" if normalize else "dot",
        },
    )


def _read_json(path: Path) -> Any:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise ConfigError(f"{path}: cannot read this sentence-transformers file ({exc})") from exc


def _pooling_mode(config: dict[str, Any], path: Path) -> str:
    """The single pooling mode of a ``1_Pooling/config.json`` (legacy ``pooling_mode_*`` flags or ``pooling_mode``)."""
    if "pooling_mode" in config:
        modes = config["pooling_mode"]
        modes = [modes] if isinstance(modes, str) else list(modes)
    else:
        modes = [mode for key, mode in LEGACY_POOLING_KEYS.items() if config.get(key)]
    if len(modes) != 1 or modes[0] not in ("mean", "cls"):
        raise ConfigError(f"{path}: pooling {modes} is not supported; hybrid_ir pools with mean or cls")
    return modes[0]


def _max_seq_length(directory: Path) -> int | None:
    """``max_seq_length`` of ``sentence_bert_config.json`` (sentence-transformers < 6), else the tokenizer's
    ``model_max_length`` (where sentence-transformers 6 keeps it) unless that is transformers' "no limit"."""
    bert_config = directory / "sentence_bert_config.json"
    if bert_config.is_file() and _read_json(bert_config).get("max_seq_length"):
        return int(_read_json(bert_config)["max_seq_length"])
    tokenizer_config = directory / "tokenizer_config.json"
    if tokenizer_config.is_file():
        value = _read_json(tokenizer_config).get("model_max_length")
        if isinstance(value, (int, float)) and 0 < value < 1_000_000:
            return int(value)
    return None


def read_sentence_transformers_settings(directory: str | Path) -> dict[str, Any] | None:
    """Encoder settings of a sentence-transformers directory, or ``None`` when it has no ``modules.json``.

    Returns ``pooling`` (``mean``, ``cls``, or ``pooler`` for CLS + Dense(tanh), whose weights then replace the
    model's pooler: ``pooler_dense`` names their directory), ``normalize``, ``query_prefix``, ``passage_prefix``
    (the ``query`` and ``document``/``passage``/``corpus`` prompts) and ``max_length`` (``max_seq_length``,
    when the directory says).
    Raises :class:`ConfigError` for modules the encoder cannot reproduce."""
    directory = Path(directory)
    if not (directory / MODULES_FILE).is_file():
        return None
    modules = _read_json(directory / MODULES_FILE)
    kinds = [str(m.get("type", "")).rsplit(".", 1)[-1] for m in modules]
    settings: dict[str, Any] = {"normalize": "Normalize" in kinds, "pooler_dense": None}
    if not kinds or kinds[0] != "Transformer" or modules[0].get("path", "") != "":
        raise ConfigError(
            f"{directory / MODULES_FILE}: the first module must be a Transformer at the directory's root"
        )
    for module, kind in zip(modules[1:], kinds[1:], strict=True):
        path = directory / module.get("path", "")
        if kind == "Pooling":
            settings["pooling"] = _pooling_mode(_read_json(path / "config.json"), path / "config.json")
        elif kind == "Dense" and settings.get("pooling") == "cls" and settings["pooler_dense"] is None:
            config = _read_json(path / "config.json")
            if (
                config.get("in_features") != config.get("out_features")
                or config.get("activation_function") != TANH
            ):
                raise ConfigError(
                    f"{path / 'config.json'}: only a square Dense layer with tanh after CLS pooling (a BERT-style "
                    "pooler, as LaBSE's) is supported"
                )
            settings["pooling"], settings["pooler_dense"] = "pooler", str(path)
        elif kind != "Normalize":
            raise ConfigError(
                f"{directory / MODULES_FILE}: module {module.get('type')!r} is not supported; hybrid_ir reads "
                "Transformer, Pooling (mean or cls), Dense (a pooler after cls) and Normalize"
            )
    if "pooling" not in settings:
        raise ConfigError(f"{directory / MODULES_FILE}: no Pooling module")
    max_length = _max_seq_length(directory)
    if max_length is not None:
        settings["max_length"] = max_length
    st_config = directory / "config_sentence_transformers.json"
    prompts = (_read_json(st_config).get("prompts") or {}) if st_config.is_file() else {}
    settings["query_prefix"] = prompts.get(QUERY_PROMPT, "")
    settings["passage_prefix"] = next((prompts[k] for k in DOCUMENT_PROMPTS if prompts.get(k)), "")
    return settings


def load_pooler_dense(model: nn.Module, dense_dir: str | Path) -> None:
    """Copy a sentence-transformers ``Dense`` layer's weights into ``model.pooler.dense`` (a BERT-style pooler)."""
    from safetensors.torch import load_file

    dense_dir = Path(dense_dir)
    st_file, bin_file = dense_dir / "model.safetensors", dense_dir / "pytorch_model.bin"
    if st_file.is_file():
        state = load_file(st_file)
    elif bin_file.is_file():
        state = torch.load(bin_file, map_location="cpu", weights_only=True)
    else:
        raise ConfigError(f"{dense_dir}: no model.safetensors or pytorch_model.bin for the Dense layer")
    pooler = getattr(model, "pooler", None)
    if pooler is None or not hasattr(pooler, "dense"):
        raise ConfigError(f"{dense_dir}: the model has no BERT-style pooler to take this Dense layer")
    pooler.dense.load_state_dict({"weight": state["linear.weight"], "bias": state["linear.bias"]})
