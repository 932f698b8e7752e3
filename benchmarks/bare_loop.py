"""The bare PyTorch training loop the benchmarks compare ours with: the package's encoder, loss, optimiser
groups, schedule and GradCache chunking, without Lightning or Hydra."""

from __future__ import annotations

import copy
from collections.abc import Mapping, Sequence
from typing import Any

import lightning as L
import torch
from torch import Tensor

from benchmarks.timing import Batch, synchronize
from hybrid_ir.data.runtime.dataset import batch_to_device
from hybrid_ir.models.encoder import Encoder, autocast_context
from hybrid_ir.training.gradcache import grad_cache_backward, row_chunks
from hybrid_ir.training.loss import InfoNCELoss
from hybrid_ir.training.optim import adamw_with_schedule


def apply_update(
    params: Sequence[Tensor],
    max_grad_norm: float | None,
    optimizer: torch.optim.Optimizer,
    scheduler: torch.optim.lr_scheduler.LRScheduler,
) -> None:
    """What follows the backward pass in the module's step: clip the gradient norm (when set), step the
    optimiser, clear the gradients, step the schedule."""
    if max_grad_norm:
        torch.nn.utils.clip_grad_norm_(params, max_grad_norm)
    optimizer.step()
    optimizer.zero_grad(set_to_none=True)
    scheduler.step()


class BareLoop:
    """The step of a plain PyTorch training loop: encode queries and passages, InfoNCE over the batch,
    backward, clip the global gradient norm, AdamW, linear warm-up/decay schedule. No Lightning, no Hydra.

    Args:
        encoder: its own copy of the model (``copy.deepcopy`` of the competitor's, so the weights match).
        loss: the InfoNCE loss.
        hparams: the module's hyper-parameters (see :func:`~hybrid_ir.training.optim.adamw_with_schedule`,
            and ``max_grad_norm``).
        total_steps: length of the schedule (the trainer's ``estimated_stepping_batches``).
        grad_cache_chunk: embed and back-propagate with GradCache in chunks of this many texts
            (:func:`~hybrid_ir.training.gradcache.grad_cache_backward`, as the module does); ``None``: one pass.
        device: where the model lives; each step moves its batch there (as Lightning does for ours) and, on
            CUDA, waits for the GPU before returning, so that a step's time is its whole work.
        precision: the Trainer's precision; ``bf16-mixed``/``16-mixed`` run forward, loss and backward under
            ``torch.autocast`` as Lightning's precision plugin does around ``training_step``.
    """

    def __init__(
        self,
        encoder: Encoder,
        loss: InfoNCELoss,
        hparams: Mapping[str, Any],
        total_steps: int,
        grad_cache_chunk: int | None = None,
        device: torch.device | str = "cpu",
        precision: str = "32-true",
    ) -> None:
        self.device = torch.device(device)
        self.precision = precision
        self.encoder = encoder.to(self.device).train()
        self.grad_cache_chunk = grad_cache_chunk
        self.loss = loss.to(self.device)
        named = [*encoder.named_parameters(), *loss.named_parameters()]
        self.params = [p for _, p in named if p.requires_grad]
        self.optimizer, self.scheduler = adamw_with_schedule(named, hparams, total_steps)
        self.max_grad_norm = hparams.get("max_grad_norm")

    def step(self, batch: Batch) -> Tensor:
        """One optimisation step on a collated batch; returns the detached loss (0-dim)."""
        batch = batch_to_device(batch, self.device)
        with autocast_context(self.device, self.precision):
            if self.grad_cache_chunk:
                size = self.grad_cache_chunk
                loss = grad_cache_backward(
                    encode=lambda chunk: self.encoder(*chunk),
                    q_chunks=row_chunks(batch, "q", size),
                    p_chunks=row_chunks(batch, "p", size),
                    loss_fn=lambda q, p: self.loss(q, p, q_global=q),
                )
            else:
                q = self.encoder(batch["q_input_ids"], batch["q_attention_mask"])
                p = self.encoder(batch["p_input_ids"], batch["p_attention_mask"])
                loss = self.loss(q, p)
                loss.backward()
        apply_update(self.params, self.max_grad_norm, self.optimizer, self.scheduler)
        synchronize(self.device)
        return loss.detach()


def bare_loop_like(
    module: L.LightningModule,
    total_steps: int,
    grad_cache_chunk: int | None = None,
    device: torch.device | str = "cpu",
    precision: str = "32-true",
) -> BareLoop:
    """A :class:`BareLoop` with copies of ``module``'s encoder and loss and its hyper-parameters."""
    return BareLoop(
        copy.deepcopy(module.encoder),
        copy.deepcopy(module.loss),
        dict(module.hparams),
        total_steps,
        grad_cache_chunk,
        device,
        precision,
    )
