"""The LightningDataModule: training corpora -> hybrid / mono / cross batches of token ids. See docs/data.md."""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from functools import partial
from typing import Any

import lightning as L
import torch
from torch.utils.data import DataLoader

from hybrid_ir.data.corpus import ParallelCorpus
from hybrid_ir.data.formats.load_corpus import load_corpus
from hybrid_ir.data.planning.fingerprint import check_resume, fingerprint
from hybrid_ir.data.planning.negatives import negative_stats
from hybrid_ir.data.planning.plan import (
    EpochPlan,
    check_every_dataset_used,
    check_global_batch_size,
    check_sampler_args,
    count_planned_steps,
)
from hybrid_ir.data.planning.sampler import HybridBatchSampler
from hybrid_ir.data.planning.split import check_val_config, held_out_note, split_validation, validation_plan
from hybrid_ir.data.planning.stats import batch_stats, mono_share_summary, plan_summary, validation_stats
from hybrid_ir.data.runtime.dataset import PairDataset, ResumableDataLoader, batch_to_device
from hybrid_ir.models.tokenizer import TextTokenizer
from hybrid_ir.utils.distributed import is_global_zero
from hybrid_ir.utils.errors import ConfigError
from hybrid_ir.utils.hardware import worker_init

log = logging.getLogger(__name__)


class ParallelQADataModule(L.LightningDataModule):
    """Builds the training batches.

    Args:
        datasets: training dataset specs (see :func:`load_corpus`); several are mixed per batch with
            probability ∝ size**temperature.
        root: data root (``null``: ``$HYBRID_IR_DATA`` or the default).
        mode: ``hybrid`` | ``mono`` | ``cross``; alpha: P(monolingual batch) for ``hybrid``.
        batch_size: the GLOBAL batch size (split evenly over DDP ranks).
        temperature: dataset-mixing exponent; seed: sampling seed.
        epoch_steps: batches per epoch, datasets drawn ∝ size**temperature and repeated or partly used (see
            :func:`~hybrid_ir.data.planning.planner.plan_epoch`); ``None``: one pass over every dataset.
        num_workers / pin_memory: DataLoader settings (workers help on GPU machines).
        cache_tokens: keep token ids in memory-mapped stores in the user cache (``<cache>/stores``).
        val: the validation set (``data.val``): ``fraction`` > 0 holds out that fraction of every training
            dataset's ids (:func:`~hybrid_ir.data.planning.split.hold_out`, seeded by ``seed``), or ``datasets`` lists
            separate dataset specs; its batches are fixed (:meth:`val_plan`): ``passes`` sampler epochs of
            ``batch_size`` pairs (``None``: ``batch_size``) drawn as ``mode`` / ``alpha``. ``None``, or neither a
            fraction nor datasets: no validation.
        negatives_per_query: hard negatives per training pair (``data.negatives_per_query``), chosen from the
            data's ``negative_ids`` / ``negatives`` in the pair's passage language
            (:mod:`hybrid_ir.data.planning.negatives`); 0: none (validation batches never carry any).
        allow_plan_change: resume from a checkpoint whose batch plan differs (:meth:`check_resume`) with a warning
            instead of refusing (``resume_allow_plan_change``).
    """

    def __init__(
        self,
        datasets: Sequence[Mapping[str, Any]],
        root: str | None = None,
        mode: str = "hybrid",
        alpha: float = 0.5,
        batch_size: int = 32,
        temperature: float = 1.0,
        seed: int = 0,
        epoch_steps: int | None = None,
        num_workers: int = 0,
        pin_memory: bool = False,
        cache_tokens: bool = True,
        download: bool = True,
        val: Mapping[str, Any] | None = None,
        negatives_per_query: int = 0,
        allow_plan_change: bool = False,
    ) -> None:
        super().__init__()
        check_sampler_args(mode, batch_size, alpha, temperature, seed, epoch_steps, negatives_per_query)
        if not datasets:
            raise ConfigError("data.train lists no training dataset")
        self.specs = [dict(s) for s in datasets]
        self.root = root
        self.mode, self.alpha, self.batch_size = mode, alpha, batch_size
        self.temperature, self.seed, self.epoch_steps = temperature, seed, epoch_steps
        self.num_workers, self.pin_memory, self.negatives_per_query = (
            num_workers,
            pin_memory,
            negatives_per_query,
        )
        self.cache_tokens, self.download, self.allow_plan_change = cache_tokens, download, allow_plan_change
        self.tokenizer: TextTokenizer | None = None
        self.corpora: list[ParallelCorpus] = []
        self.dataset: PairDataset | None = None
        self._loader: ResumableDataLoader | None = None
        self._pending_loader_state: dict[str, int] | None = None
        self._logged_epochs: set[int] = set()
        # Shared by every sampler made here (a plan depends on the settings above, the seed and the epoch only),
        # with the batch count of every epoch planned: an epoch is planned once for the checks, the schedule's
        # step count and training, unless more epochs were planned since than the samplers keep.
        self._plans: dict[tuple[int, int], EpochPlan] = {}
        self._plan_lengths: dict[tuple[int, int], int] = {}
        self._plan_fingerprint: dict[str, Any] | None = None
        self._resume_checked = self._plan_changed = False
        self.val = check_val_config(val, batch_size, self.specs)
        self.val_corpora: list[ParallelCorpus] = []
        self.val_dataset: PairDataset | None = None
        self._val_loader: DataLoader | None = None

    def attach_tokenizer(self, tokenizer: TextTokenizer) -> None:
        """Use the model's tokenizer (called once the model is built)."""
        self.tokenizer = tokenizer

    @property
    def languages(self) -> list[str]:
        return sorted({lang for c in self.corpora for lang in c.languages})

    def load_corpora(self) -> list[ParallelCorpus]:
        """The training corpora (less the held-out ids when ``data.val.fraction`` is set); loads the validation
        corpora (:attr:`val_corpora`) with them."""
        if not self.corpora:
            load = partial(load_corpus, root=self.root, download=self.download)
            self.corpora, self.val_corpora = split_validation([load(s) for s in self.specs], self.val, load)
            for corpus in self.corpora:
                log.info(
                    "training data %s: %d ids in %s", corpus.name, len(corpus), ", ".join(corpus.languages)
                )
                if self.negatives_per_query and not (corpus.negative_ids or corpus.negatives):
                    log.warning(
                        "data.negatives_per_query=%d: %s lists no negative_ids or negatives; its pairs get random "
                        "ids of the passage language as negatives",
                        self.negatives_per_query,
                        corpus.name,
                    )
            for corpus in self.val_corpora:
                log.info(
                    "validation data %s: %d ids in %s", corpus.name, len(corpus), ", ".join(corpus.languages)
                )
        return self.corpora

    def setup(self, stage: str | None = None) -> None:
        self.load_corpora()
        if self.tokenizer is None:
            raise RuntimeError("call attach_tokenizer() with the model's TextTokenizer before setup()")
        if self.dataset is None:
            self.dataset = PairDataset(self.corpora, self.tokenizer, self.cache_tokens)
        if self.val_corpora and self.val_dataset is None:
            self.val_dataset = PairDataset(self.val_corpora, self.tokenizer, self.cache_tokens)

    def make_sampler(self, rank: int = 0, world_size: int = 1) -> HybridBatchSampler:
        """The batch sampler of rank ``rank`` of ``world_size``; rank 0 logs each epoch's :func:`plan_summary`."""
        return HybridBatchSampler(
            self.load_corpora(),
            self.mode,
            self.batch_size,
            self.alpha,
            self.seed,
            self.temperature,
            rank=rank,
            world_size=world_size,
            on_plan=self._log_plan if rank == 0 else None,
            epoch_steps=self.epoch_steps,
            negatives_per_query=self.negatives_per_query,
            plans=self._plans,
        )

    def _plan_length(self, epoch: int) -> int:
        """Batches in ``epoch``'s plan: ``epoch_steps``, or the plan's length (planned once per seed and epoch)."""
        if self.epoch_steps is not None:
            return self.epoch_steps
        key = (self.seed, epoch)
        if key not in self._plan_lengths:
            self._plan_lengths[key] = len(self.make_sampler().plan(epoch))
        return self._plan_lengths[key]

    def _log_plan(self, epoch: int, plan: EpochPlan) -> None:
        """Log an epoch's :func:`plan_summary` once (a plan no sampler keeps any more is computed again), on global
        rank 0 only: every DDP process plans epoch 0 for its checks before the Trainer knows its rank."""
        if epoch not in self._logged_epochs and is_global_zero():
            self._logged_epochs.add(epoch)
            log.info("epoch %d: %s", epoch, plan_summary(plan, self.corpora))
            log.info("epoch %d: %s", epoch, mono_share_summary(plan, self.corpora, self.alpha))

    def check_plan(self, world_size: int = 1) -> EpochPlan:
        """Plan epoch 0 (no model needed) and fail early when the batches cannot be what the config asks.

        Raises:
            ConfigError: the batch size breaks the rule of
            :func:`~hybrid_ir.data.planning.plan.check_global_batch_size`,
                no full batch can be formed, or a configured dataset contributes no batch (naming the dataset
                and the largest batch it can fill).
        """
        corpora = self.load_corpora()
        try:
            plan = self.make_sampler(world_size=world_size).plan(0)
        except ValueError as err:  # a ConfigError too
            raise ConfigError(
                self._fraction_note("too few for training (lower data.val.fraction)") + str(err)
            ) from err
        check_every_dataset_used(
            plan,
            corpora,
            self.mode,
            self.alpha,
            self.batch_size,
            self.epoch_steps,
            self._fraction_note("too few for training (lower data.val.fraction)"),
        )
        self.negative_stats(plan, 0)
        if self.val is not None:
            check_global_batch_size(self.val["batch_size"], world_size, key="data.val.batch_size")
            self.val_plan()
        return plan

    def _fraction_note(self, verdict: str) -> str:
        """The start of a message about batches that cannot be filled when the validation set is held out of the
        training data: ``"<what data.val.fraction left on each side>: <verdict>: "``; else ``""``."""
        if self.val is None or not self.val["fraction"]:
            return ""
        return f"{held_out_note(self.val['fraction'], self.corpora, self.val_corpora)}: {verdict}: "

    def negative_stats(self, plan: EpochPlan, epoch: int) -> dict[str, Any] | None:
        """:func:`~hybrid_ir.data.planning.negatives.negative_stats` of ``plan`` (``None`` without hard negatives).

        Raises:
            ConfigError: a batch's pairs cannot get ``data.negatives_per_query`` negatives each."""
        if not self.negatives_per_query:
            return None
        try:
            return negative_stats(plan, self.corpora, self.negatives_per_query, self.seed, epoch)
        except ValueError as err:
            raise ConfigError(str(err)) from err

    def val_plan(self) -> EpochPlan:
        """The validation batches, the same at every validation: the sampler's epochs ``0 … passes - 1`` (of
        ``data.val.seed``) over the validation corpora, one after the other. One pass uses each id once, in one
        language pair; more passes use the ids in more language pairs. With several passes, ``dropped`` counts
        the ids no pass uses (no ``drop_reasons``).

        Raises:
            ConfigError: validation is off, or the validation set cannot fill one batch.
        """
        if self.val is None:
            raise ConfigError("no validation set: set data.val.fraction or data.val.datasets")
        self.load_corpora()
        return validation_plan(self.val_corpora, self.val, self._fraction_note("too few for validation"))

    def val_dataloader(self) -> DataLoader | list[DataLoader]:
        """This rank's slice of every batch of :meth:`val_plan` (built once: Lightning asks every epoch), or no
        loader (``[]``: Lightning skips validation) when validation is off."""
        if self.val is None:
            return []
        if self._val_loader is None:
            assert self.val_dataset is not None, "setup() has not run"
            rank, world = self._rank_and_world()
            per_rank = self.val["batch_size"] // world
            plan = self.val_plan()
            if rank == 0:
                log.info("validation: %s", plan_summary(plan, self.val_corpora))
            batches = [refs[rank * per_rank : (rank + 1) * per_rank] for _, refs in plan]
            self._val_loader = DataLoader(batch_sampler=batches, **self._loader_args(self.val_dataset, rank))
        return self._val_loader

    def _rank_and_world(self) -> tuple[int, int]:
        """This process's DDP rank and the world size (``(0, 1)`` without a trainer)."""
        return (self.trainer.global_rank, self.trainer.world_size) if self.trainer is not None else (0, 1)

    def _loader_args(self, dataset: PairDataset, rank: int) -> dict[str, Any]:
        """What rank ``rank``'s training and validation loaders share: dataset, collation, workers."""
        return {
            "dataset": dataset,
            "collate_fn": dataset.collate,
            "num_workers": self.num_workers,
            "pin_memory": self.pin_memory,
            "worker_init_fn": partial(worker_init, rank=rank),
        }

    def train_dataloader(self) -> ResumableDataLoader:
        """The loader of the trainer's current epoch (Lightning asks again every epoch when
        ``reload_dataloaders_every_n_epochs=1``, so its length is that epoch's number of batches); the batch
        sampler, and so its position, is kept across calls."""
        trainer = self.trainer
        rank, world = self._rank_and_world()

        def progress() -> tuple[int, int]:
            return trainer.current_epoch, trainer.fit_loop.epoch_loop.batch_progress.current.processed

        assert self.dataset is not None, "setup() has not run"
        # Keep the sampler across a trainer's per-epoch requests; a loader used before fitting (the benchmarks
        # read the first batches up front) must not move the trainer's.
        reuse = self._loader is not None and self._loader.progress is not None and trainer is not None
        sampler = self._loader.batch_sampler if reuse else self.make_sampler(rank, world)
        adapt = self._onto_new_plan if self._plan_changed else None
        if self._pending_loader_state is not None:
            state = self._pending_loader_state
            sampler.load_state_dict(state if adapt is None else adapt(state))
            self._pending_loader_state = None
        elif trainer is not None:
            sampler.set_epoch(trainer.current_epoch)
        self._loader = ResumableDataLoader(
            batch_sampler=sampler,
            **self._loader_args(self.dataset, rank),
            persistent_workers=self.num_workers > 0,
            progress=progress if trainer is not None else None,
            adapt_state=adapt,
        )
        return self._loader

    def _onto_new_plan(self, state: dict[str, int]) -> dict[str, int]:
        """A checkpoint's loader position on this (changed, ``allow_plan_change``) plan: the same epoch and batch,
        with this seed, at most at the end of the epoch."""
        length = len(self.make_sampler().plan(int(state["epoch"])))
        return {**state, "seed": self.seed, "batches_yielded": min(int(state["batches_yielded"]), length)}

    def planned_steps(
        self, max_epochs: int | None, max_steps: int = -1, limit_batches: int | float = 1.0
    ) -> int:
        """Training steps a run will take (:func:`~hybrid_ir.data.planning.plan.count_planned_steps` over this
        data's epoch plans)."""
        return count_planned_steps(self._plan_length, max_epochs, max_steps, limit_batches)

    def transfer_batch_to_device(self, batch: Any, device: torch.device, dataloader_idx: int) -> Any:
        """Move only the tensors of a batch from :meth:`PairDataset.collate`; Lightning's default walks every
        element, including the per-pair lists of languages and ids (~0.3-1 ms per step in
        ``benchmarks/train_throughput``'s profile)."""
        if not isinstance(batch, dict):
            return super().transfer_batch_to_device(batch, device, dataloader_idx)
        return batch_to_device(batch, device)

    def state_dict(self) -> dict[str, Any]:
        """``{"plan": <plan_fingerprint()>, "loader": <the training loader's position>}`` for the checkpoint.

        Lightning also saves the loader's own state, but on resume it never loads it when
        ``configure_optimizers`` reads ``trainer.estimated_stepping_batches`` (which builds the loader before
        the checkpoint's loop state is restored; Lightning issue #20550). The datamodule's state is restored
        before that, so :meth:`train_dataloader` positions the new loader itself."""
        state: dict[str, Any] = {"plan": self.plan_fingerprint()}
        if self._loader is not None:
            state["loader"] = self._loader.state_dict()
        return state

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Check that the checkpoint's batch plan is this one (:meth:`check_resume`, unless done already) and keep
        its loader position for the next :meth:`train_dataloader`."""
        if not self._resume_checked:
            self.check_resume(state)
        self._pending_loader_state = state.get("loader")

    def plan_fingerprint(self) -> dict[str, Any]:
        """What the batch plan of every epoch depends on (:func:`~hybrid_ir.data.planning.fingerprint.fingerprint`):
        the global batch size, the sampler's settings, the seed, the hard negatives per pair, the held-out
        validation split and a hash of each training dataset."""
        if self._plan_fingerprint is None:
            fraction = float((self.val or {}).get("fraction") or 0.0)
            settings: dict[str, Any] = {
                "data.batch_size": self.batch_size,
                "sampler.mode": self.mode,
                "sampler.alpha": self.alpha,
                "sampler.temperature": self.temperature,
                "sampler.epoch_steps": self.epoch_steps,
                "seed": self.seed,
                "data.negatives_per_query": self.negatives_per_query,
                "data.val.fraction": fraction,
            }
            if fraction:
                settings["data.val.seed"] = self.val["seed"]
            self._plan_fingerprint = fingerprint(settings, self.load_corpora())
        return self._plan_fingerprint

    def check_resume(self, state: Mapping[str, Any]) -> None:
        """Compare the batch plan a checkpoint was trained on (its DataModule ``state``, see :meth:`state_dict`)
        with this one before resuming (:func:`~hybrid_ir.data.planning.fingerprint.check_resume`).

        Raises:
            ConfigError: a setting differs, unless ``allow_plan_change``."""
        self._resume_checked = True
        self._plan_changed = check_resume(state.get("plan"), self.plan_fingerprint(), self.allow_plan_change)

    def preview(self, epoch: int = 0) -> dict[str, Any]:
        """Plan one epoch without any model and summarise it (batch kinds, language-pair counts, duplicates, the
        ids each dataset uses and drops, and why); the same checks as :meth:`check_plan`. With a validation set,
        ``stats["validation"]`` summarises :meth:`val_plan` the same way (plus its settings)."""
        plan = self.check_plan() if epoch == 0 else self.make_sampler().plan(epoch)
        stats = batch_stats(plan, self.languages, self.corpora)
        settings = {"mode": self.mode, "alpha": self.alpha, "batch_size": self.batch_size, "seed": self.seed}
        stats.update(settings, epoch=epoch, datasets=[c.name for c in self.corpora])
        negatives = self.negative_stats(plan, epoch)
        if negatives is not None:
            stats["negatives"] = negatives
        if self.val is not None:
            stats["validation"] = validation_stats(self.val_plan(), self.val_corpora, self.val)
        return stats
