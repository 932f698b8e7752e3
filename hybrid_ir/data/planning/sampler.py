"""The distributed batch sampler that plays the epoch plans of :func:`hybrid_ir.data.planning.planner.plan_epoch`.
See docs/method.md (the samplers)."""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping, MutableMapping, Sequence
from typing import Any

from torch.utils.data import Sampler

from hybrid_ir.data.corpus import ParallelCorpus
from hybrid_ir.data.planning.negatives import with_negatives
from hybrid_ir.data.planning.plan import EpochPlan, PairRef, check_global_batch_size, check_sampler_args
from hybrid_ir.data.planning.planner import plan_epoch

# Epoch plans a sampler keeps (an epoch's plan holds arrays of every pair it uses).
KEPT_PLANS = 2


class HybridBatchSampler(Sampler[list[PairRef]]):
    """Distributed batch sampler over :func:`plan_epoch` (use it as a DataLoader ``batch_sampler``).

    Rank ``r`` of ``W`` yields ``batch[r * B / W : (r + 1) * B / W]`` of each global batch of size ``B``,
    so the ranks' slices, concatenated, are the global batch. ``len()`` = number of batches in the
    current epoch. Handing out the last batch of an epoch advances the position (:attr:`epoch`,
    :attr:`batches_yielded`, :meth:`state_dict`) to the next epoch (batch 0), so iterating again gives the next
    epoch, whether the previous iterator was exhausted or dropped right after its last batch (as Lightning does,
    knowing the length); ``len()`` stays that of the epoch just played until the next pass or :meth:`set_epoch`
    starts the next one, so asking for the length after the run's last epoch (Lightning does, at the end of
    ``fit``) plans no epoch that is never played. An iterator abandoned mid-epoch
    (``limit_train_batches``, a stop) leaves the position there: call :meth:`set_epoch` with the next
    epoch to start it from its first batch (the DataModule's loader does so before every pass).
    ``state_dict`` / ``load_state_dict`` resume in the middle of an epoch at the next batch (batches
    already handed to a DataLoader's prefetch queue count as yielded). The sampler does its own
    sharding, so with Lightning set ``Trainer(use_distributed_sampler=False)``.
    ``epoch_steps``: see :func:`plan_epoch` (``None``: one pass over every dataset per epoch).
    ``on_plan(epoch, plan)``, when given, is called once for every epoch plan the sampler computes (e.g. to
    log what the epoch uses and drops).
    ``negatives_per_query`` (k): each pair carries k hard negatives chosen on the global batch by
    :func:`~hybrid_ir.data.planning.negatives.with_negatives` (0: none).
    ``plans``: where computed plans are kept, by ``(seed, epoch)``, the last :data:`KEPT_PLANS` of them; samplers
    of the same data and settings may share one (a DataModule's samplers do), so an epoch one of them planned
    is not planned again (default: the sampler's own).
    """

    def __init__(
        self,
        corpora: Sequence[ParallelCorpus],
        mode: str,
        global_batch_size: int,
        alpha: float = 0.5,
        seed: int = 0,
        temperature: float = 1.0,
        rank: int = 0,
        world_size: int = 1,
        on_plan: Callable[[int, EpochPlan], None] | None = None,
        epoch_steps: int | None = None,
        negatives_per_query: int = 0,
        plans: MutableMapping[tuple[int, int], EpochPlan] | None = None,
    ) -> None:
        check_sampler_args(
            mode, global_batch_size, alpha, temperature, seed, epoch_steps, negatives_per_query
        )
        if not isinstance(world_size, int) or world_size < 1:
            raise ValueError(f"world_size must be a positive integer, got {world_size!r}")
        check_global_batch_size(global_batch_size, world_size)
        if not isinstance(rank, int) or not 0 <= rank < world_size:
            raise ValueError(f"rank must be in [0, {world_size}), got {rank!r}")
        if not corpora:
            raise ValueError("no training datasets given")
        super().__init__()
        self.corpora = list(corpora)
        self.mode = mode
        self.global_batch_size = global_batch_size
        self.alpha = alpha
        self.seed = seed
        self.temperature = temperature
        self.epoch_steps = epoch_steps
        self.negatives_per_query = negatives_per_query
        self.rank = rank
        self.world_size = world_size
        self.on_plan = on_plan
        # The epoch being played and the batches of it handed out; ``_ended``: its last batch has been handed out
        # (the position is then the next epoch's batch 0, which is planned only when its pass starts).
        self._epoch = 0
        self._yielded = 0
        self._ended = False
        self._plans = {} if plans is None else plans

    @property
    def epoch(self) -> int:
        """The epoch the next batch belongs to."""
        return self._epoch + 1 if self._ended else self._epoch

    @property
    def batches_yielded(self) -> int:
        """The batches of :attr:`epoch` handed out so far."""
        return 0 if self._ended else self._yielded

    def plan(self, epoch: int | None = None) -> EpochPlan:
        """The global plan of ``epoch`` (default: the epoch being played, or just played until the next one
        starts); the last :data:`KEPT_PLANS` plans are kept."""
        epoch = self._epoch if epoch is None else epoch
        key = (self.seed, epoch)
        if key not in self._plans:
            plan = plan_epoch(
                self.corpora,
                self.mode,
                self.global_batch_size,
                self.alpha,
                self.seed,
                epoch,
                self.temperature,
                self.epoch_steps,
            )
            while len(self._plans) >= KEPT_PLANS:
                del self._plans[next(iter(self._plans))]
            self._plans[key] = plan
            if self.on_plan is not None:
                self.on_plan(epoch, plan)
        return self._plans[key]

    def __len__(self) -> int:
        return len(self.plan())

    def set_epoch(self, epoch: int) -> None:
        """Select the epoch; a different epoch than the current one restarts at its first batch (and so does
        selecting the next epoch once the previous one has ended: ``len()`` is then that epoch's)."""
        if epoch != self.epoch or self._ended:
            self._epoch, self._yielded, self._ended = epoch, 0, False

    def __iter__(self) -> Iterator[list[PairRef]]:
        self.set_epoch(self.epoch)
        epoch, plan = self._epoch, self.plan()
        per_rank = self.global_batch_size // self.world_size
        lo, hi = self.rank * per_rank, (self.rank + 1) * per_rank
        for index in range(self._yielded, len(plan)):
            # Count a batch before handing it out: a consumer that stops after the last one (without asking
            # for one more) must still find the sampler at the start of the next epoch.
            self._yielded, self._ended = index + 1, index + 1 == len(plan)
            if self.negatives_per_query:
                refs = plan.pairs(index)
                k = self.negatives_per_query
                yield with_negatives(self.corpora, refs, k, self.seed, epoch, index)[lo:hi]
            else:
                yield plan.pairs(index, lo, hi)

    def state_dict(self) -> dict[str, int]:
        """``{"epoch", "batches_yielded", "seed"}``: enough to continue at the next batch."""
        return {"epoch": self.epoch, "batches_yielded": self.batches_yielded, "seed": self.seed}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        """Restore :meth:`state_dict` output (its seed replaces the constructor's, for an exact resume)."""
        missing = {"epoch", "batches_yielded", "seed"} - set(state)
        if missing:
            raise ValueError(
                f"sampler state lacks {sorted(missing)}; expected keys epoch, batches_yielded, seed"
            )
        self.seed, epoch = int(state["seed"]), int(state["epoch"])
        done, n = int(state["batches_yielded"]), len(self.plan(epoch))
        if not 0 <= done <= n:
            raise ValueError(f"batches_yielded={done} is outside [0, {n}] for epoch {epoch}")
        # A state at an epoch's end is the next epoch's start: that epoch is the one to be played (and measured).
        self._epoch, self._yielded, self._ended = (epoch + 1, 0, False) if done == n else (epoch, done, False)
