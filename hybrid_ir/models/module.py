"""The LightningModule: one shared encoder trained with InfoNCE over the global batch (all DDP ranks)."""

from __future__ import annotations

import logging
import math
from typing import Any, Literal

import lightning as L
import torch
from torch import Tensor

from hybrid_ir.models.encoder import Encoder
from hybrid_ir.models.gradcache import grad_cache_backward
from hybrid_ir.models.loss import InfoNCELoss
from hybrid_ir.utils.distributed import gather_with_grad
from hybrid_ir.utils.errors import ConfigError
from hybrid_ir.utils.rng import capture_rng_state, restore_rng_state

log = logging.getLogger(__name__)

NonFinitePolicy = Literal["raise", "skip"]


class NonFiniteLossError(FloatingPointError):
    """The training loss became NaN or infinite."""


class BiEncoderModule(L.LightningModule):
    """A shared bi-encoder trained with in-batch negatives gathered from every rank.

    A batch (see :mod:`hybrid_ir.data.datamodule`) holds this rank's slice of the global batch:
    ``q_input_ids``/``q_attention_mask`` [b, Lq] and ``p_input_ids``/``p_attention_mask`` [b, Lp].
    Rank r embeds its queries q_r [b, D] and passages p_r [b, D]; the passages of all ranks are gathered
    with gradients, P = [p_0; …; p_{W-1}] [W·b, D], and the loss of rank r is InfoNCE(q_r, P) with the
    positives at offset r·b. DDP's gradient average then equals the gradient of the single-process
    loss on the global batch (see :func:`hybrid_ir.utils.distributed.gather_with_grad`).

    Optimisation is manual (one code path for plain and GradCache steps): AdamW, linear warm-up then
    linear decay to 0, gradient clipping by global norm, and a guard against non-finite losses.

    Args:
        encoder: the shared :class:`Encoder`.
        loss: the :class:`InfoNCELoss`.
        lr, weight_decay, betas, eps: AdamW (no decay on biases and LayerNorm weights).
        warmup_ratio: fraction of the total steps with linear warm-up (``warmup_steps`` overrides it).
        max_grad_norm: clip the global gradient norm to this (``None``: no clipping).
        grad_cache_chunk_size: embed in chunks of this many texts with GradCache (``None``: plain step).
        nonfinite: ``raise`` stops the run naming the step; ``skip`` drops the step's update and goes on.
    """

    def __init__(
        self,
        encoder: Encoder,
        loss: InfoNCELoss,
        lr: float = 3e-5,
        weight_decay: float = 0.01,
        betas: tuple[float, float] = (0.9, 0.999),
        eps: float = 1e-8,
        warmup_ratio: float = 0.1,
        warmup_steps: int | None = None,
        max_grad_norm: float | None = 1.0,
        grad_cache_chunk_size: int | None = None,
        nonfinite: NonFinitePolicy = "raise",
    ) -> None:
        super().__init__()
        if nonfinite not in ("raise", "skip"):
            raise ConfigError(f"module.nonfinite={nonfinite!r} is not valid; choose 'raise' or 'skip'")
        if grad_cache_chunk_size is not None and grad_cache_chunk_size < 1:
            raise ConfigError(
                f"module.grad_cache_chunk_size must be >= 1 or null, got {grad_cache_chunk_size}"
            )
        self.save_hyperparameters(ignore=["encoder", "loss"])
        self.automatic_optimization = False
        self.encoder = encoder
        self.loss = loss
        self.skipped_steps = 0
        self._resume_rng_state: dict[str, Any] | None = None

    def forward(self, input_ids: Tensor, attention_mask: Tensor) -> Tensor:
        return self.encoder(input_ids, attention_mask)

    def _contrastive_loss(self, q: Tensor, p: Tensor) -> Tensor:
        """Loss of this rank's queries ``q`` [b, D] against the passages ``p`` [b, D] of all ranks."""
        p_all = gather_with_grad(p)
        q_all = gather_with_grad(q) if self.loss.symmetric else None
        return self.loss(q, p_all, q_offset=self.global_rank * q.shape[0], q_global=q_all)

    def _grad_cache_step(self, batch: dict[str, Any]) -> Tensor:
        size = self.hparams.grad_cache_chunk_size

        def chunks(prefix: str) -> list[tuple[Tensor, Tensor]]:
            ids, mask = batch[f"{prefix}_input_ids"], batch[f"{prefix}_attention_mask"]
            return [(ids[i : i + size], mask[i : i + size]) for i in range(0, ids.shape[0], size)]

        world = self.trainer.world_size if self._trainer is not None else 1
        if world == 1:
            return grad_cache_backward(
                encode=lambda chunk: self.encoder(*chunk),
                q_chunks=chunks("q"),
                p_chunks=chunks("p"),
                loss_fn=lambda q, p: self.loss(q, p, q_global=q),
                backward=self.manual_backward,
            )
        # DDP's reducer would all-reduce only the first chunk's backward and leave the other chunks' gradients
        # rank-local; so accumulate locally (no reducer) and average the summed gradients over the ranks once.
        with self.trainer.strategy.block_backward_sync():
            loss = grad_cache_backward(
                encode=lambda chunk: self.encoder(*chunk),
                q_chunks=chunks("q"),
                p_chunks=chunks("p"),
                loss_fn=lambda q, p: self.loss(q, p, q_global=q),
                backward=self.manual_backward,
                gather=gather_with_grad,
            )
        for param in self.parameters():
            if param.grad is not None:
                torch.distributed.all_reduce(param.grad)
                param.grad.div_(world)
        return loss

    def training_step(self, batch: dict[str, Any], batch_idx: int) -> Tensor:
        opt = self.optimizers()
        if self.hparams.grad_cache_chunk_size:
            loss = self._grad_cache_step(batch)
        else:
            q = self.encoder(batch["q_input_ids"], batch["q_attention_mask"])
            p = self.encoder(batch["p_input_ids"], batch["p_attention_mask"])
            loss = self._contrastive_loss(q, p)
            self.manual_backward(loss)
        # One decision for all ranks: a rank-local NaN reaches every rank through the gradient all-reduce.
        if not self.trainer.strategy.reduce_boolean_decision(bool(torch.isfinite(loss)), all=True):
            where = f"global step {self.global_step} (epoch {self.current_epoch}, batch {batch_idx})"
            if self.hparams.nonfinite == "raise":
                raise NonFiniteLossError(
                    f"non-finite training loss {loss.item()} at {where}; lower the learning rate, check the "
                    "data, or set module.nonfinite=skip to drop such steps"
                )
            self.skipped_steps += 1
            log.warning("skipping the update of %s: loss is %s", where, loss.item())
            opt.zero_grad(set_to_none=True)
            # Lightning re-logs the previous step's train/loss for this step; this column tells them apart.
            self.log(
                "train/skipped_steps",
                float(self.skipped_steps),
                on_step=True,
                on_epoch=False,
                batch_size=batch["q_input_ids"].shape[0],
            )
            return loss.detach()
        if self.hparams.max_grad_norm:
            self.clip_gradients(
                opt, gradient_clip_val=self.hparams.max_grad_norm, gradient_clip_algorithm="norm"
            )
        opt.step()
        opt.zero_grad(set_to_none=True)
        self.lr_schedulers().step()
        size = batch["q_input_ids"].shape[0]
        self.log(
            "train/loss",
            loss.detach(),
            prog_bar=True,
            on_step=True,
            on_epoch=True,
            sync_dist=True,
            batch_size=size,
        )
        # A fixed temperature is a constant: not worth a log call (about half a millisecond) on every step.
        if self.loss.learnable_temperature:
            self.log(
                "train/temperature", self.loss.temperature, on_step=True, on_epoch=False, batch_size=size
            )
        if "mono" in batch:
            # Every rank has the same flag (a global batch is mono or cross as a whole); syncing only at the
            # epoch's end costs one all-reduce and keeps Lightning from warning about unsynced epoch metrics.
            self.log(
                "train/mono_batch",
                float(batch["mono"]),
                on_step=False,
                on_epoch=True,
                sync_dist=True,
                batch_size=size,
            )
        return loss.detach()

    def configure_optimizers(self) -> dict[str, Any]:
        decay, no_decay = [], []
        for name, param in self.named_parameters():
            if not param.requires_grad:
                continue
            (no_decay if param.ndim < 2 or "LayerNorm" in name or "log_scale" in name else decay).append(
                param
            )
        hp = self.hparams
        opt = torch.optim.AdamW(
            [{"params": decay, "weight_decay": hp.weight_decay}, {"params": no_decay, "weight_decay": 0.0}],
            lr=hp.lr,
            betas=tuple(hp.betas),
            eps=hp.eps,
        )
        total = max(1, int(self.trainer.estimated_stepping_batches))
        warmup = hp.warmup_steps if hp.warmup_steps is not None else math.ceil(hp.warmup_ratio * total)
        sched = torch.optim.lr_scheduler.LambdaLR(opt, linear_warmup_decay(warmup, total))
        return {"optimizer": opt, "lr_scheduler": {"scheduler": sched, "interval": "step"}}

    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        checkpoint["hybrid_ir"] = {
            "base_model": self.encoder.name_or_path,
            "encoder": self.encoder.settings(),
            "skipped_steps": self.skipped_steps,
            "rng_state": capture_rng_state(),
        }

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        state = checkpoint.get("hybrid_ir", {})
        self.skipped_steps = int(state.get("skipped_steps", 0))
        self._resume_rng_state = state.get("rng_state")

    def on_train_batch_start(self, batch: Any, batch_idx: int) -> None:
        """On the first step after a resume, restore the RNG state saved with the checkpoint (here, not when
        loading it: setting up the data loader draws a random number), so dropout matches the
        uninterrupted run."""
        if self._resume_rng_state is not None:
            restore_rng_state(self._resume_rng_state)
            self._resume_rng_state = None


def linear_warmup_decay(warmup: int, total: int):
    """LR multiplier at step s: (s + 1) / warmup while s < warmup, then (total - s) / (total - warmup), floored at 0."""

    def factor(step: int) -> float:
        if step < warmup:
            return (step + 1) / max(1, warmup)
        return max(0.0, (total - step) / max(1, total - warmup))

    return factor
