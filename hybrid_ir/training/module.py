"""The LightningModule: one shared encoder trained with InfoNCE over the global batch (all DDP ranks).
See docs/method.md (the loss) and docs/usage.md (training)."""

from __future__ import annotations

import logging
from typing import Any, Literal, get_args

import lightning as L
import torch
from torch import Tensor
from torchmetrics import MeanMetric

from hybrid_ir.models.encoder import Encoder
from hybrid_ir.training.csv_logger import ResumableCSVLogger
from hybrid_ir.training.gradcache import grad_cache_backward, row_chunks
from hybrid_ir.training.loss import InfoNCELoss, positives_first
from hybrid_ir.training.optim import adamw_with_schedule, lr_factor, warmup_steps
from hybrid_ir.utils.distributed import gather_objects, gather_with_grad, world_info
from hybrid_ir.utils.errors import ConfigError
from hybrid_ir.utils.rng import (
    capture_rng_state,
    capture_torch_rng_state,
    restore_rng_state,
    restore_torch_rng_state,
)

log = logging.getLogger(__name__)

NonFinitePolicy = Literal["raise", "skip"]
Schedule = Literal["linear", "constant"]
SCHEDULES: tuple[str, ...] = get_args(Schedule)
# validation metric -> the name it is logged under
VAL_METRICS = {"loss": "val/loss", "accuracy_at_1": "val/acc@1", "mrr": "val/mrr"}


class NonFiniteLossError(FloatingPointError):
    """The training loss became NaN or infinite."""


class BiEncoderModule(L.LightningModule):
    """A shared bi-encoder trained with in-batch negatives gathered from every rank.

    A batch (see :mod:`hybrid_ir.data.runtime.datamodule`) holds this rank's slice of the global batch:
    ``q_input_ids``/``q_attention_mask`` [b, Lq] and ``p_input_ids``/``p_attention_mask`` [b, Lp], and
    optionally hard negatives ``n_input_ids``/``n_attention_mask`` [b·k, Ln], k >= 1 per query, query-major
    (rows i·k … i·k+k-1 belong to query i). Rank r embeds its queries q_r [b, D], positives p_r [b, D] and
    negatives n_r [b·k, D]; the passages of all ranks are gathered with gradients in two blocks,
    P = [p_0; …; p_{W-1}; n_0; …; n_{W-1}] [W·b·(1+k), D] (see :func:`~hybrid_ir.training.loss.positives_first`),
    and the loss of rank r is InfoNCE(q_r, P) with the positives at offset r·b: every query is contrasted with
    every positive and every hard negative of the global batch. DDP's gradient average then equals the
    gradient of the single-process loss on the global batch (see
    :func:`hybrid_ir.utils.distributed.gather_with_grad`). A batch without the ``n_`` keys trains on in-batch
    negatives only.

    Optimisation is manual (one code path for plain and GradCache steps): AdamW, linear warm-up then
    linear decay to 0 (``schedule="linear"``) or a constant rate (``schedule="constant"``), gradient clipping by
    global norm, and a guard against non-finite losses.

    Validation (when the DataModule has a validation set) runs the same forward pass and logs, per epoch, the
    mean over all validation queries of every rank: ``val/loss`` (the training loss, with the hard negatives
    when the batch has them), ``val/acc@1`` and ``val/mrr`` (in-batch retrieval: each query ranks all passages
    of its global batch, see :func:`positive_ranks`).

    Args:
        encoder: the shared :class:`Encoder`.
        loss: the :class:`InfoNCELoss`.
        lr, weight_decay, betas, eps: AdamW (no decay on biases and LayerNorm weights).
        warmup_ratio: fraction of the total steps with linear warm-up (``warmup_steps`` overrides it).
        schedule: after the warm-up, ``linear`` decays the rate to 0 at the last step; ``constant`` keeps it.
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
        schedule: Schedule = "linear",
        max_grad_norm: float | None = 1.0,
        grad_cache_chunk_size: int | None = None,
        nonfinite: NonFinitePolicy = "raise",
    ) -> None:
        super().__init__()
        if nonfinite not in ("raise", "skip"):
            raise ConfigError(f"module.nonfinite={nonfinite!r} is not valid; choose 'raise' or 'skip'")
        if schedule not in SCHEDULES:
            raise ConfigError(
                f"module.schedule={schedule!r} is not valid; choose one of {', '.join(SCHEDULES)}"
            )
        if grad_cache_chunk_size is not None and grad_cache_chunk_size < 1:
            raise ConfigError(
                f"module.grad_cache_chunk_size must be >= 1 or null, got {grad_cache_chunk_size}"
            )
        self.save_hyperparameters(ignore=["encoder", "loss"])
        self.automatic_optimization = False
        self.encoder = encoder
        self.loss = loss
        self.skipped_steps = 0
        # the checkpoint's random state, restored before the first resumed step; torch's random state at the end
        # of the last training step, restored before the next one (see on_train_batch_start)
        self._resume_rng_state: dict[str, Any] | None = None
        self._step_rng_state: dict[str, Any] | None = None
        # {"lr", "warmup", "total"} of the LR schedule built by configure_optimizers, and of the checkpoint's
        self._schedule: dict[str, float] | None = None
        self._resume_schedule: dict[str, float] | None = None
        # torchmetrics aggregators: their states are not saved in checkpoints and are summed over the ranks
        # when computed at the epoch's end
        self.val_metrics = torch.nn.ModuleDict({key: MeanMetric() for key in VAL_METRICS})

    def forward(self, input_ids: Tensor, attention_mask: Tensor) -> Tensor:
        return self.encoder(input_ids, attention_mask)

    def _embed_passages(self, batch: dict[str, Any]) -> Tensor:
        """This rank's positives [b, D] followed by its hard negatives [b·k, D], if the batch has any."""
        p = self.encoder(batch["p_input_ids"], batch["p_attention_mask"])
        negatives = hard_negatives(batch)
        return p if negatives is None else torch.cat([p, self.encoder(*negatives)])

    def _contrastive_loss(self, q: Tensor, p: Tensor) -> tuple[Tensor, Tensor]:
        """Loss of this rank's queries ``q`` [b, D] against the passages of all ranks, and those passages
        (positives of all ranks, then negatives); ``p`` [b·(1+k), D] is this rank's positives followed by its
        hard negatives."""
        p_all = positives_first(gather_with_grad(p), world_info()[1], q.shape[0])
        q_all = gather_with_grad(q) if self.loss.symmetric else None
        return self.loss(q, p_all, q_offset=self.global_rank * q.shape[0], q_global=q_all), p_all

    def _grad_cache_step(self, batch: dict[str, Any]) -> Tensor:
        size = self.hparams.grad_cache_chunk_size
        p_chunks = row_chunks(batch, "p", size) + (
            row_chunks(batch, "n", size) if hard_negatives(batch) is not None else []
        )
        world = self.trainer.world_size if self._trainer is not None else 1
        if world == 1:
            return grad_cache_backward(
                encode=lambda chunk: self.encoder(*chunk),
                q_chunks=row_chunks(batch, "q", size),
                p_chunks=p_chunks,
                loss_fn=lambda q, p: self.loss(q, p, q_global=q),
                backward=self.manual_backward,
            )
        # DDP's reducer would all-reduce only the first chunk's backward and leave the other chunks' gradients
        # rank-local; so accumulate locally (no reducer) and average the summed gradients over the ranks once.
        with self.trainer.strategy.block_backward_sync():
            loss = grad_cache_backward(
                encode=lambda chunk: self.encoder(*chunk),
                q_chunks=row_chunks(batch, "q", size),
                p_chunks=p_chunks,
                loss_fn=lambda q, p: self.loss(q, positives_first(p, world, q.shape[0] // world), q_global=q),
                backward=self.manual_backward,
                gather=gather_with_grad,
            )
        for param in self.parameters():
            if param.grad is not None:
                torch.distributed.all_reduce(param.grad)
                param.grad.div_(world)
        return loss

    def training_step(self, batch: dict[str, Any], batch_idx: int) -> Tensor:
        loss = self._train_on(batch, batch_idx)
        # what the next step draws from, whatever runs in between (see on_train_batch_start)
        self._step_rng_state = capture_torch_rng_state()
        return loss

    def _train_on(self, batch: dict[str, Any], batch_idx: int) -> Tensor:
        """One optimisation step on ``batch`` (or none, when the loss is not finite and ``nonfinite=skip``);
        returns the loss."""
        opt = self.optimizers()
        if self.hparams.grad_cache_chunk_size:
            loss = self._grad_cache_step(batch)
        else:
            q = self.encoder(batch["q_input_ids"], batch["q_attention_mask"])
            loss, _ = self._contrastive_loss(q, self._embed_passages(batch))
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

    def validation_step(self, batch: dict[str, Any], batch_idx: int) -> None:
        q = self.encoder(batch["q_input_ids"], batch["q_attention_mask"])
        loss, p_all = self._contrastive_loss(q, self._embed_passages(batch))
        ranks = positive_ranks(q, p_all, self.global_rank * q.shape[0])
        size = q.shape[0]
        self.val_metrics["loss"].update(loss.detach(), weight=size)
        self.val_metrics["accuracy_at_1"].update((ranks == 1).float())
        self.val_metrics["mrr"].update(1.0 / ranks.float())
        for key, name in VAL_METRICS.items():
            self.log(name, self.val_metrics[key], on_step=False, on_epoch=True, batch_size=size)

    def configure_optimizers(self) -> dict[str, Any]:
        total = max(1, self._total_steps())
        opt, sched = adamw_with_schedule(list(self.named_parameters()), self.hparams, total)
        self._schedule = {
            "lr": self.hparams.lr,
            "warmup": warmup_steps(self.hparams, total),
            "total": total,
            "schedule": self.hparams.schedule,
        }
        return {"optimizer": opt, "lr_scheduler": {"scheduler": sched, "interval": "step"}}

    def _total_steps(self) -> int:
        """The steps this run will take: from the DataModule's epoch plans when it has them (epochs may differ
        in length), else Lightning's estimate."""
        trainer = self.trainer
        planned = getattr(getattr(trainer, "datamodule", None), "planned_steps", None)
        if planned is None:
            return int(trainer.estimated_stepping_batches)
        return planned(trainer.max_epochs, trainer.max_steps, trainer.limit_train_batches)

    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        # The CSV file must hold every row this checkpoint covers before the file exists (a resume trusts it).
        for logger in self.loggers:
            if isinstance(logger, ResumableCSVLogger):
                logger.write_before_checkpoint(self.trainer)
        # numpy's and Python's as they are now; torch's as the last step left them: what the next step draws from
        rng_state = {**capture_rng_state(), **(self._step_rng_state or {})}
        checkpoint["hybrid_ir"] = {
            "base_model": self.encoder.name_or_path,
            "config_overrides": self.encoder.config_overrides,
            "encoder": self.encoder.settings(),
            "skipped_steps": self.skipped_steps,
            # this rank's (rank 0's in the file: rank 0 writes it)
            "rng_state": rng_state,
            "schedule": self._schedule,
        }
        if world_info()[1] > 1:
            # Each rank draws its own dropout masks: a resume restores each rank's own state. Lightning builds
            # the checkpoint on every rank (this hook included) before rank 0 writes it, so every rank gathers.
            checkpoint["hybrid_ir"]["rng_state_by_rank"] = gather_objects(rng_state)

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        state = checkpoint.get("hybrid_ir", {})
        self.skipped_steps = int(state.get("skipped_steps", 0))
        self._resume_rng_state = rank_rng_state(state, *world_info())
        self._resume_schedule = state.get("schedule")

    def on_train_start(self) -> None:
        """After a resume whose LR schedule differs from the checkpoint's (``trainer.max_steps`` or
        ``max_epochs``, ``module.lr``, warm-up changed), continue on the new schedule from the current step.

        The scheduler follows the new schedule from its next step anyway, but the optimiser restored from the
        checkpoint still holds the old schedule's learning rate (0 at the end of a finished run) and the old
        base rate; both are set from the new schedule here, with a warning."""
        old, new = self._resume_schedule, self._schedule
        self._resume_schedule = None
        if old is None or new is None or old == new:
            return
        sched = self.trainer.lr_scheduler_configs[0].scheduler
        factor = lr_factor(new["schedule"], int(new["warmup"]), int(new["total"]))(sched.last_epoch)
        for group in sched.optimizer.param_groups:
            group["initial_lr"] = new["lr"]
            group["lr"] = new["lr"] * factor
        sched.base_lrs = [new["lr"]] * len(sched.optimizer.param_groups)
        sched._last_lr = [group["lr"] for group in sched.optimizer.param_groups]
        changed = ", ".join(f"{key} {old.get(key)} -> {new[key]}" for key in new if old.get(key) != new[key])
        log.warning(
            "the learning-rate schedule differs from the checkpoint's (%s; total and warm-up are optimiser "
            "steps): continuing on the new schedule at step %d with lr %.3g",
            changed,
            sched.last_epoch,
            new["lr"] * factor,
        )

    def on_train_batch_start(self, batch: Any, batch_idx: int) -> None:
        """Give every training step the random state the previous step left (after a resume: this rank's in the
        checkpoint, which is that state too; see :func:`rank_rng_state`), so dropout matches the uninterrupted
        run whatever ran between two steps and drew random numbers there: validation, evaluations, a new epoch's
        data loader (each of its iterators draws a seed), setting up the resumed run. Only torch's generators,
        which the steps draw from, are kept from step to step (reading numpy's state takes a few tenths of a
        millisecond); the checkpoint's numpy and Python states are restored with them on the first resumed
        step."""
        if self._resume_rng_state is not None:
            restore_rng_state(self._resume_rng_state)
            self._resume_rng_state = None
        elif self._step_rng_state is not None:
            restore_torch_rng_state(self._step_rng_state)


def rank_rng_state(state: dict[str, Any], rank: int, world: int) -> dict[str, Any] | None:
    """The random state that ``rank`` of ``world`` ranks resumes from, out of a checkpoint's ``"hybrid_ir"`` entry:
    its own (``rng_state_by_rank``, written by a DDP run), else rank 0's (``rng_state``; ``None`` in a checkpoint
    without one). When the checkpoint holds fewer ranks' states than ``world`` (a run resumed on more ranks, or
    a checkpoint of a single process), the other ranks start from rank 0's state and draw other dropout masks
    than an uninterrupted run would have; rank 0 warns once."""
    by_rank = state.get("rng_state_by_rank") or []
    saved = max(len(by_rank), 1)
    if rank == 0 and saved < world and state.get("rng_state") is not None:
        log.warning(
            "the checkpoint holds the random states of %d rank(s) and this run has %d: ranks %d to %d start from "
            "rank 0's, so their dropout masks differ from those of an uninterrupted run",
            saved,
            world,
            saved,
            world - 1,
        )
    return by_rank[rank] if rank < len(by_rank) else state.get("rng_state")


def hard_negatives(batch: dict[str, Any]) -> tuple[Tensor, Tensor] | None:
    """The batch's hard negatives ``(n_input_ids, n_attention_mask)``, each [b·k, L], or ``None`` when it has none.

    Raises ``ValueError`` when only one of the two keys is present, their shapes differ, or the rows are not a
    positive multiple k·b of the b queries (k negatives per query, query-major).
    """
    ids, mask = batch.get("n_input_ids"), batch.get("n_attention_mask")
    if ids is None and mask is None:
        return None
    if ids is None or mask is None:
        raise ValueError("a batch with hard negatives needs both n_input_ids and n_attention_mask")
    queries = batch["q_input_ids"].shape[0]
    if ids.shape != mask.shape or ids.ndim != 2 or ids.shape[0] == 0 or ids.shape[0] % queries:
        raise ValueError(
            f"hard negatives must be [b*k, L] with k >= 1 negatives for each of the b = {queries} queries, got "
            f"n_input_ids {tuple(ids.shape)} and n_attention_mask {tuple(mask.shape)}"
        )
    return ids, mask


def positive_ranks(q: Tensor, passages: Tensor, offset: int = 0) -> Tensor:
    """The rank (1 = first) of each query's positive among ``passages`` by cosine/dot score, computed in fp32.

    ``q`` [b, D] are queries ``offset … offset + b - 1`` of the global batch, whose positives are those rows of
    ``passages`` [P, D] (the layout of :class:`~hybrid_ir.training.loss.InfoNCELoss`). A passage scoring the
    same as the positive counts as ranked above it, so collapsed embeddings rank every positive last.
    """
    with torch.autocast(q.device.type, enabled=False):
        scores = q.float() @ passages.float().T
    rows = torch.arange(q.shape[0], device=q.device)
    positive = scores[rows, rows + offset]
    return (scores >= positive[:, None]).sum(dim=1)
