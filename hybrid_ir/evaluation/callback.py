"""Zero-shot evaluation during training: before the first step and after every n-th epoch.

Each evaluation runs :meth:`hybrid_ir.evaluation.runner.Evaluator.run` on ``pl_module.encoder``. Under DDP
every rank embeds its shard of the texts and rank 0 computes the metrics and writes the files; the scalars are
then broadcast so that every rank holds them in ``trainer.callback_metrics`` as ``eval/<dataset>/<name>``
(``ModelCheckpoint(monitor="eval/mlqa-r/map_multi", mode="max")`` works on them). They are also logged with
every logger (``log_metrics(..., step=trainer.global_step)``); each ``WandbLogger`` additionally gets, per
LAReQA dataset, ``eval/<dataset>/map_matrix`` (a ``wandb.Table`` of the pair mAP matrix: ``query_lang`` then
one column per passage language), ``eval/<dataset>/map_heatmap`` and ``eval/<dataset>/rank_distance_bars``
(the PNG figures as ``wandb.Image``) and ``eval/<dataset>/rank_distance_chart`` (a ``wandb.plot.bar``).

See docs/usage.md.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import lightning as L
import torch
from lightning.pytorch.loggers import WandbLogger
from lightning.pytorch.utilities import rank_zero_info

from hybrid_ir.evaluation.config import EvalConfig
from hybrid_ir.evaluation.runner import Evaluator
from hybrid_ir.utils.hardware import eval_precision
from hybrid_ir.utils.settings import check_int


def flatten_scalars(scalars: Mapping[str, Mapping[str, float]]) -> dict[str, float]:
    """``{dataset: {name: value}}`` -> ``{"eval/<dataset>/<name>": value}``."""
    return {
        f"eval/{ds}/{name}": float(value) for ds, values in scalars.items() for name, value in values.items()
    }


def wandb_payload(results: Mapping[str, Mapping[str, Any]]) -> dict[str, Any]:
    """The W&B media of :meth:`Evaluator.run` results (LAReQA datasets; see the module docstring)."""
    import wandb

    payload: dict[str, Any] = {}
    for name, res in results.items():
        if res.get("format") != "lareqa":
            continue
        langs = list(res["languages"])
        rows = [
            [query_lang, *[None if v is None else float(v) for v in row]]
            for query_lang, row in zip(langs, res["pair_map"], strict=True)
        ]
        payload[f"eval/{name}/map_matrix"] = wandb.Table(columns=["query_lang", *langs], data=rows)
        figures = res.get("figures", {})
        if "map_heatmap" in figures:
            payload[f"eval/{name}/map_heatmap"] = wandb.Image(str(figures["map_heatmap"]))
        if "rank_distance" in figures:
            payload[f"eval/{name}/rank_distance_bars"] = wandb.Image(str(figures["rank_distance"]))
        if res["rank_distance"]:
            table = wandb.Table(
                columns=["lang", "rank_distance"],
                data=[[lang, float(v)] for lang, v in res["rank_distance"].items()],
            )
            payload[f"eval/{name}/rank_distance_chart"] = wandb.plot.bar(
                table, "lang", "rank_distance", title=f"{name}: mean rank distance per query language"
            )
    return payload


class ZeroShotEvalCallback(L.Callback):
    """Evaluate the encoder zero-shot before training and every ``every_n_epochs`` epochs.

    Args:
        evaluator_cfg: an :class:`EvalConfig` or a mapping (or ``DictConfig``) of its fields.
        before_training: evaluate with tag ``pretrained`` at fit start (skipped when resuming from a checkpoint).
        every_n_epochs: evaluate with tag ``epoch<E>-step<S>`` (``S``: the global step) after epochs ``E`` with
            ``(E + 1) % every_n_epochs == 0``; the step keeps tags unique when a resumed run with a larger
            ``trainer.max_steps`` ends the same epoch again.
        output_dir: where the evaluator writes; default ``<trainer.log_dir or default_root_dir>/zero_shot_eval``.

    Attributes:
        evaluator: the :class:`Evaluator` (``evaluator.validate()`` can run before any model is built).
        last_scalars: ``{dataset: {name: value}}`` of the latest evaluation, on every rank.
    """

    def __init__(
        self,
        evaluator_cfg: EvalConfig | Mapping[str, Any],
        before_training: bool = True,
        every_n_epochs: int = 1,
        output_dir: str | None = None,
    ) -> None:
        super().__init__()
        check_int(every_n_epochs, "callbacks.zero_shot_eval.every_n_epochs")
        self.evaluator = Evaluator(evaluator_cfg, output_dir)
        self.before_training = before_training
        self.every_n_epochs = every_n_epochs
        self.last_scalars: dict[str, dict[str, float]] = {}

    def on_fit_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if self.evaluator.output_dir is None:
            self.evaluator.output_dir = Path(trainer.log_dir or trainer.default_root_dir) / "zero_shot_eval"
        self.evaluator.validate()
        self.evaluator.load()
        if self.before_training and trainer.ckpt_path is None:
            self.evaluate(trainer, pl_module, "pretrained")

    def on_train_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if (trainer.current_epoch + 1) % self.every_n_epochs == 0:
            self.evaluate(trainer, pl_module, f"epoch{trainer.current_epoch}-step{trainer.global_step}")

    def on_fit_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if trainer.is_global_zero and self.evaluator.records:
            print(self.evaluator.format_table())
            rank_zero_info(f"zero-shot metrics: {self.evaluator.output_dir}")

    def evaluate(
        self, trainer: L.Trainer, pl_module: L.LightningModule, tag: str
    ) -> dict[str, dict[str, float]]:
        """Run one evaluation on every rank; publish and log its scalars; return them (every rank)."""
        encoder = getattr(pl_module, "encoder", None)
        if encoder is None:
            raise AttributeError(
                f"ZeroShotEvalCallback needs the module's encoder as .encoder; {type(pl_module).__name__} has none"
            )
        was_training = pl_module.training
        try:
            results = self.evaluator.run(
                encoder, tag, step=trainer.global_step, precision=eval_precision(trainer.precision)
            )
        finally:
            pl_module.train(was_training)
        local = (
            {name: dict(res["scalars"]) for name, res in results.items()} if trainer.is_global_zero else None
        )
        scalars: dict[str, dict[str, float]] = trainer.strategy.broadcast(local, src=0)
        flat = flatten_scalars(scalars)
        for key, value in flat.items():
            trainer.callback_metrics[key] = torch.tensor(value)
        for logger in trainer.loggers:
            logger.log_metrics(flat, step=trainer.global_step)
        wandb_loggers = [lg for lg in trainer.loggers if isinstance(lg, WandbLogger)]
        payload = wandb_payload(results) if trainer.is_global_zero and wandb_loggers else {}
        if payload:
            for logger in wandb_loggers:
                logger.experiment.log({**payload, "trainer/global_step": trainer.global_step})
        self.last_scalars = scalars
        return scalars
