"""The optimiser of training: AdamW over two parameter groups (no weight decay on biases and norms) and the
learning-rate schedules (linear warm-up, then linear decay or constant), as step-wise multipliers. Used by
:class:`~hybrid_ir.training.module.BiEncoderModule`; settings (``module.lr``, ``module.schedule``, ``module.warmup``):
``docs/usage.md``."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

import torch


def linear_warmup_decay(warmup: int, total: int):
    """LR multiplier at step s: (s + 1) / warmup while s < warmup, then (total - s) / (total - warmup), floored at 0."""

    def factor(step: int) -> float:
        if step < warmup:
            return (step + 1) / max(1, warmup)
        return max(0.0, (total - step) / max(1, total - warmup))

    return factor


def warmup_constant(warmup: int):
    """LR multiplier at step s: (s + 1) / warmup while s < warmup, then 1."""

    def factor(step: int) -> float:
        return (step + 1) / warmup if step < warmup else 1.0

    return factor


def lr_factor(schedule: str, warmup: int, total: int):
    """The multiplier of ``schedule``: :func:`linear_warmup_decay` (``linear``) or :func:`warmup_constant`
    (``constant``)."""
    if schedule == "constant":
        return warmup_constant(warmup)
    return linear_warmup_decay(warmup, total)


def optimizer_param_groups(
    named: Sequence[tuple[str, torch.nn.Parameter]], weight_decay: float
) -> list[dict[str, Any]]:
    """AdamW parameter groups: ``weight_decay`` on weight matrices, none on biases, LayerNorm weights and the
    loss's temperature (``log_scale``); frozen parameters are left out."""
    decay, no_decay = [], []
    for name, param in named:
        if not param.requires_grad:
            continue
        no_weight_decay = param.ndim < 2 or "LayerNorm" in name or "log_scale" in name
        (no_decay if no_weight_decay else decay).append(param)
    return [{"params": decay, "weight_decay": weight_decay}, {"params": no_decay, "weight_decay": 0.0}]


def adamw_with_schedule(
    named: Sequence[tuple[str, torch.nn.Parameter]], hparams: Mapping[str, Any], total_steps: int
) -> tuple[torch.optim.AdamW, torch.optim.lr_scheduler.LambdaLR]:
    """The optimiser and schedule of :class:`BiEncoderModule`: AdamW over :func:`optimizer_param_groups` and
    :func:`lr_factor` over ``total_steps``. ``hparams`` holds ``lr``, ``weight_decay``, ``betas``, ``eps``,
    ``warmup_steps`` (``None``: ``ceil(warmup_ratio · total_steps)``), ``warmup_ratio`` and ``schedule``
    (``linear`` when absent)."""
    opt = torch.optim.AdamW(
        optimizer_param_groups(named, hparams["weight_decay"]),
        lr=hparams["lr"],
        betas=tuple(hparams["betas"]),
        eps=hparams["eps"],
    )
    warmup = warmup_steps(hparams, total_steps)
    factor = lr_factor(hparams.get("schedule", "linear"), warmup, total_steps)
    return opt, torch.optim.lr_scheduler.LambdaLR(opt, factor)


def warmup_steps(hparams: Mapping[str, Any], total_steps: int) -> int:
    """``hparams["warmup_steps"]``, or ``ceil(warmup_ratio · total_steps)`` when that is ``None``."""
    warmup = hparams.get("warmup_steps")
    return math.ceil(hparams["warmup_ratio"] * total_steps) if warmup is None else int(warmup)
