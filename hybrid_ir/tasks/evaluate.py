"""What ``python evaluate.py`` runs: load a model (a hub name, a model directory or a training checkpoint), evaluate
it zero-shot on the ``eval.datasets``, write ``metrics.json`` and per-query files and log the scalars. Usage:
``docs/usage.md``; the metrics: ``docs/method.md``."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

from omegaconf import DictConfig

from hybrid_ir.evaluation.config import EvalConfig
from hybrid_ir.evaluation.runner import Evaluator
from hybrid_ir.models.encoder import check_model_source
from hybrid_ir.models.loading import load_encoder
from hybrid_ir.tasks.checks import resolve_ckpt_path
from hybrid_ir.tasks.instantiate import instantiate_loggers
from hybrid_ir.utils.settings import settings


def evaluate(cfg: DictConfig, cli_overrides: Sequence[str] = ()) -> dict[str, Any]:
    """Evaluate the encoder of :func:`load_encoder` (a pretrained model, a directory or a checkpoint); the
    record is tagged with what was evaluated."""
    output_dir = Path(cfg.paths.output_dir)
    check_model_source(cfg.model.name_or_path)
    evaluator = Evaluator(settings(EvalConfig, cfg.eval, "eval"), output_dir)
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
