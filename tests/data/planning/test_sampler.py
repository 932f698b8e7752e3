"""The distributed batch sampler: each rank's slice of the planner's global batches, epochs and their lengths, the
resumable state, the checks of the global batch size and the training length (the planner itself:
``test_planner.py``)."""

from __future__ import annotations

import json

import pytest
from torch.utils.data import DataLoader

from hybrid_ir.data.planning.plan import PairRef, check_global_batch_size, check_training_length
from hybrid_ir.data.planning.planner import plan_epoch
from hybrid_ir.data.planning.sampler import HybridBatchSampler
from hybrid_ir.data.planning.stats import batch_stats
from hybrid_ir.utils.errors import ConfigError
from tests.helpers.corpora import make_corpus
from tests.helpers.plans import check_plan


@pytest.mark.parametrize("world_size", [2, 4])
def test_ddp_slices_concatenate_to_the_global_batch(world_size, grouped, sparse):
    corpora = [grouped, sparse]
    whole = list(HybridBatchSampler(corpora, "hybrid", 16, seed=9))
    ranks = [
        list(HybridBatchSampler(corpora, "hybrid", 16, seed=9, rank=r, world_size=world_size))
        for r in range(world_size)
    ]
    assert all(len(batches) == len(whole) for batches in ranks)
    for i, batch in enumerate(whole):
        assert all(len(batches[i]) == 16 // world_size for batches in ranks)
        assert [ref for batches in ranks for ref in batches[i]] == batch


def test_sampler_length_epochs_and_set_epoch(grouped):
    sampler = HybridBatchSampler([grouped], "hybrid", 16, seed=1)
    first = list(sampler)
    assert len(first) == len(sampler.plan(0)) == len(plan_epoch([grouped], "hybrid", 16, 0.5, 1, 0))
    assert first == [batch for _, batch in plan_epoch([grouped], "hybrid", 16, 0.5, 1, 0)]
    assert sampler.state_dict() == {"epoch": 1, "batches_yielded": 0, "seed": 1}
    second = list(sampler)
    assert second == [batch for _, batch in sampler.plan(1)] and second != first
    sampler.set_epoch(0)
    assert list(sampler) == first
    assert len(sampler) == len(first), "the epoch just played, until the next one starts"
    sampler.set_epoch(1)
    assert len(sampler) == len(sampler.plan(1))


def test_the_length_after_the_last_epoch_plans_no_further_epoch(grouped):
    # Lightning asks for the loader's length once more when fit ends (its data fetcher's teardown): that must not
    # plan (and log) an epoch after the run's last one.
    planned: list[int] = []
    sampler = HybridBatchSampler(
        [grouped], "hybrid", 16, seed=1, on_plan=lambda epoch, plan: planned.append(epoch)
    )
    first = list(sampler)
    assert len(sampler) == len(first)
    assert sampler.state_dict() == {"epoch": 1, "batches_yielded": 0, "seed": 1}
    assert planned == [0]
    assert list(sampler) == [batch for _, batch in sampler.plan(1)]
    assert planned == [0, 1]


def test_a_pass_dropped_after_its_last_batch_still_advances_the_epoch(grouped):
    # Lightning knows the length and never asks for one more batch, so the generator is not exhausted.
    sampler = HybridBatchSampler([grouped], "hybrid", 16, seed=1)
    n = len(sampler.plan(0))
    it = iter(sampler)
    for _ in range(n):
        next(it)
    assert sampler.state_dict() == {"epoch": 1, "batches_yielded": 0, "seed": 1}
    assert list(sampler) == [batch for _, batch in sampler.plan(1)]


def test_state_at_the_end_of_an_epoch_loads_as_the_next_epoch(grouped):
    sampler = HybridBatchSampler([grouped], "hybrid", 16, seed=1)
    sampler.load_state_dict({"epoch": 3, "batches_yielded": len(sampler.plan(3)), "seed": 1})
    assert sampler.state_dict() == {"epoch": 4, "batches_yielded": 0, "seed": 1}
    assert len(sampler) == len(sampler.plan(4)), "the length of the epoch to be played"
    assert list(sampler) == [batch for _, batch in sampler.plan(4)]


def test_sampler_drives_a_torch_dataloader(grouped):
    class Pairs:
        def __getitem__(self, ref: PairRef) -> tuple[str, str]:
            pairs = grouped.pairs
            return pairs[ref.q_lang][ref.parallel_id].question, pairs[ref.p_lang][ref.parallel_id].passage

    sampler = HybridBatchSampler([grouped], "cross", 8, seed=2, rank=0, world_size=2)
    loader = DataLoader(Pairs(), batch_sampler=sampler, collate_fn=list)
    plan = plan_epoch([grouped], "cross", 8, 0.5, seed=2, epoch=0)
    batches = list(loader)
    assert len(loader) == len(batches) == len(plan)
    first = plan[0][1][:4]
    assert batches[0] == [(f"q {r.parallel_id} {r.q_lang}", f"p {r.parallel_id} {r.p_lang}") for r in first]


def test_state_restore_mid_epoch_gives_the_remaining_batches(grouped, sparse):
    corpora = [grouped, sparse]
    sampler = HybridBatchSampler(corpora, "hybrid", 8, seed=5, rank=1, world_size=2)
    sampler.set_epoch(2)
    it = iter(sampler)
    head = [next(it) for _ in range(7)]
    state = sampler.state_dict()
    assert state == {"epoch": 2, "batches_yielded": 7, "seed": 5}
    rest = list(it)
    resumed = HybridBatchSampler(corpora, "hybrid", 8, seed=0, rank=1, world_size=2)
    resumed.load_state_dict(json.loads(json.dumps(state)))
    resumed.set_epoch(2)
    assert list(resumed) == rest
    assert head + rest == [batch[4:8] for _, batch in plan_epoch(corpora, "hybrid", 8, 0.5, seed=5, epoch=2)]


def test_invalid_arguments_raise_clear_errors(grouped):
    with pytest.raises(ValueError, match="alpha"):
        HybridBatchSampler([grouped], "hybrid", 8, alpha=-0.1)
    with pytest.raises(ValueError, match="mode"):
        HybridBatchSampler([grouped], "bilingual", 8)
    with pytest.raises(ConfigError, match="multiple of the number of ranks"):
        HybridBatchSampler([grouped], "hybrid", 10, world_size=4)
    with pytest.raises(ConfigError, match="multiple of the number of ranks"):
        HybridBatchSampler([grouped], "hybrid", 2, world_size=4)
    with pytest.raises(ValueError, match="rank"):
        HybridBatchSampler([grouped], "hybrid", 8, rank=2, world_size=2)
    with pytest.raises(ValueError, match="temperature"):
        HybridBatchSampler([grouped], "hybrid", 8, temperature=-1.0)
    with pytest.raises(ValueError, match="epoch_steps"):
        HybridBatchSampler([grouped], "hybrid", 8, epoch_steps=0)
    with pytest.raises(ValueError, match="batches_yielded"):
        HybridBatchSampler([grouped], "hybrid", 8).load_state_dict(
            {"epoch": 0, "batches_yielded": 10**6, "seed": 0}
        )


def test_real_xquad_and_mlqa_together(xquad, mlqa):
    corpora = [xquad, mlqa]
    languages = sorted(set(xquad.languages) | set(mlqa.languages))
    sampler = HybridBatchSampler(corpora, "hybrid", 32, alpha=0.5, seed=3)
    plan = sampler.plan()
    check_plan(plan, corpora, 32)
    stats = batch_stats(plan, languages, corpora)
    assert set(stats["batches_per_dataset"]) == {"0", "1"}
    assert stats["kinds"]["mono"] > 0 and stats["kinds"]["cross"] > 0
    assert len(list(sampler)) == len(plan)


@pytest.mark.parametrize(
    ("batch_size", "world_size", "message"),
    [
        (1, 1, "at least 2 pairs, because InfoNCE"),
        (0, 1, "positive multiple"),
        (True, 1, "positive multiple"),
        (6, 4, r"multiple of the number of ranks \(devices × num_nodes = 4\)"),
        (2, 4, "and at least that"),
    ],
)
def test_global_batch_rule(batch_size, world_size, message):
    with pytest.raises(ConfigError, match=message):
        check_global_batch_size(batch_size, world_size)
    if batch_size == 0 or batch_size is True:  # the sampler's argument check names a non-integer first
        return
    with pytest.raises(ConfigError, match=message):
        HybridBatchSampler([make_corpus(8, ["en"])], "mono", batch_size, world_size=world_size)


def test_global_batch_rule_accepts_valid_sizes():
    for batch_size, world_size in [(2, 1), (2, 2), (8, 4)]:
        check_global_batch_size(batch_size, world_size)


@pytest.mark.parametrize(("max_epochs", "shown"), [(-1, "-1"), (None, "null")])
def test_an_endless_run_needs_max_steps(max_epochs: int | None, shown: str) -> None:
    with pytest.raises(
        ConfigError, match=rf"trainer\.max_epochs={shown} .* needs a finite trainer\.max_steps"
    ):
        check_training_length(max_epochs, -1)
    for bounded in [(max_epochs, 0), (max_epochs, 10), (0, -1), (3, None)]:
        check_training_length(*bounded)


def test_an_epoch_of_epoch_steps_batches(grouped, sparse):
    sampler = HybridBatchSampler([grouped, sparse], "hybrid", 16, seed=1, epoch_steps=50)
    assert len(sampler) == 50 == len(list(sampler))
    assert sampler.plan(0) == plan_epoch([grouped, sparse], "hybrid", 16, 0.5, 1, 0, epoch_steps=50)
