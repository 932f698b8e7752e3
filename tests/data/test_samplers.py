"""Tests for the hybrid / mono / cross batch planner and the distributed batch sampler."""

from __future__ import annotations

import hashlib
import json
import math
import random
from collections import Counter

import numpy as np
import pytest
from torch.utils.data import DataLoader

from hybrid_ir.data.corpus import ParallelCorpus, QAPair
from hybrid_ir.data.lareqa_loader import load_lareqa_corpus
from hybrid_ir.data.plan import (
    DROP_REASONS,
    BatchInfo,
    EpochPlan,
    PairRef,
    batch_capacity,
    check_global_batch_size,
    check_training_length,
)
from hybrid_ir.data.plan_stats import batch_stats, dataset_usage
from hybrid_ir.data.planner import _first_of_group, _isin, plan_epoch
from hybrid_ir.data.samplers import HybridBatchSampler
from hybrid_ir.utils.errors import ConfigError
from hybrid_ir.utils.paths import default_data_root

NINE = ["ar", "de", "en", "es", "hi", "ru", "th", "tr", "zh"]
MLQA_LANGS = ["ar", "de", "en", "es", "hi", "vi", "zh"]


def make_corpus(
    n: int,
    langs: list[str],
    name: str = "gen",
    group_sizes: list[int] | None = None,
    subsets: bool = False,
    seed: int = 0,
) -> ParallelCorpus:
    """``n`` pids in all of ``langs`` (or, with ``subsets``, in a random non-empty subset of them).
    ``group_sizes`` cycles through the sizes of consecutive groups (default: every pid alone)."""
    rng = np.random.default_rng(seed)
    pairs: dict[str, dict[str, QAPair]] = {lang: {} for lang in langs}
    group: dict[str, int] = {}
    sizes = group_sizes or [1]
    g, left, k = 0, sizes[0], 0
    for i in range(n):
        pid = f"{name}-{i:06d}"
        present = langs
        if subsets:
            present = [lang for lang in langs if rng.random() < 0.5] or [langs[int(rng.integers(len(langs)))]]
        for lang in present:
            pairs[lang][pid] = QAPair(pid, lang, f"q {pid} {lang}", f"p {pid} {lang}")
        if left == 0:
            g, k = g + 1, k + 1
            left = sizes[k % len(sizes)]
        group[pid] = g
        left -= 1
    return ParallelCorpus(name=name, languages=sorted(langs), pairs=pairs, group=group)


def binomial_ok(successes: int, trials: int, p: float, z: float = 4.5) -> bool:
    """``|successes / trials - p| <= z * sqrt(p (1 - p) / trials)``."""
    return abs(successes / trials - p) <= z * math.sqrt(p * (1 - p) / trials)


def check_batch(info: BatchInfo, batch: list[PairRef], corpora: list[ParallelCorpus], size: int) -> None:
    """Assert the invariants of one batch, independently of ``batch_stats``."""
    assert len(batch) == size
    corpus = corpora[info.dataset]
    assert all(ref.dataset == info.dataset for ref in batch)
    assert len({ref.pid for ref in batch}) == size, "a pid twice in one batch"
    assert len({corpus.group[ref.pid] for ref in batch}) == size, "two pids of one group in one batch"
    for ref in batch:
        langs = corpus.langs_of(ref.pid)
        assert ref.q_lang in langs and ref.p_lang in langs
        if info.kind == "mono":
            assert ref.q_lang == ref.p_lang == info.lang
        else:
            assert info.lang is None and ref.q_lang != ref.p_lang


def check_plan(plan, corpora: list[ParallelCorpus], size: int) -> None:
    """Every batch valid, every pid at most once, used + dropped = all pids."""
    used = Counter()
    for info, batch in plan:
        check_batch(info, batch, corpora, size)
        used.update((ref.dataset, ref.pid) for ref in batch)
    assert max(used.values()) == 1
    for d, corpus in enumerate(corpora):
        n_used = sum(1 for key in used if key[0] == d)
        assert n_used + plan.dropped[d] == len(corpus)


@pytest.fixture(scope="module")
def full4() -> ParallelCorpus:
    return make_corpus(12000, ["de", "en", "es", "fr"], name="full4")


@pytest.fixture(scope="module")
def grouped() -> ParallelCorpus:
    return make_corpus(3000, ["de", "en", "fr"], name="grouped", group_sizes=[1, 3, 2, 6, 1, 4])


@pytest.fixture(scope="module")
def sparse() -> ParallelCorpus:
    """MLQA-R-like: each pid exists in a random subset of the languages (some in only one)."""
    return make_corpus(3000, ["ar", "de", "en", "hi"], name="sparse", group_sizes=[1, 2, 3], subsets=True)


@pytest.fixture(scope="module")
def xquad() -> ParallelCorpus:
    root = default_data_root()
    if not (root / "xquad-r" / "en.json").is_file():
        pytest.skip(f"XQuAD-R not found under {root}")
    return load_lareqa_corpus(root, "xquad-r", NINE)


@pytest.fixture(scope="module")
def mlqa() -> ParallelCorpus:
    root = default_data_root()
    if not (root / "mlqa-r" / "en.json").is_file():
        pytest.skip(f"MLQA-R not found under {root}")
    return load_lareqa_corpus(root, "mlqa-r", MLQA_LANGS)


@pytest.mark.parametrize("mode", ["mono", "cross", "hybrid"])
def test_batch_purity_and_invariants_on_generated_data(mode, grouped):
    plan = plan_epoch([grouped], mode, 16, 0.5, seed=3, epoch=0)
    check_plan(plan, [grouped], 16)
    stats = batch_stats(plan, grouped.languages, [grouped])
    matrix = np.array(stats["lang_pairs"])
    diagonal, total = int(np.trace(matrix)), int(matrix.sum())
    if mode == "mono":
        assert diagonal == total > 0 and stats["kinds"]["cross"] == 0
    elif mode == "cross":
        assert diagonal == 0 < total and stats["kinds"]["mono"] == 0
    else:
        assert 0 < diagonal < total
    assert (
        stats["impure_pairs"]
        == stats["duplicate_pids"]
        == stats["reused_pids"]
        == stats["group_clashes"]
        == 0
    )


@pytest.mark.parametrize("alpha", [0.2, 0.5, 0.8])
def test_alpha_is_the_share_of_mono_batches(alpha, full4):
    plan = plan_epoch([full4], "hybrid", 8, alpha, seed=1, epoch=0)
    mono = sum(info.kind == "mono" for info, _ in plan)
    assert len(plan) == 1500
    assert binomial_ok(mono, len(plan), alpha)


def test_alpha_one_is_mono_and_zero_is_cross(grouped):
    assert plan_epoch([grouped], "hybrid", 8, 1.0, 5, 2) == plan_epoch([grouped], "mono", 8, 0.5, 5, 2)
    assert plan_epoch([grouped], "hybrid", 8, 0.0, 5, 2) == plan_epoch([grouped], "cross", 8, 0.5, 5, 2)


def test_mono_language_and_cross_language_pair_are_uniform(full4):
    langs = full4.languages
    mono = plan_epoch([full4], "mono", 8, 0.5, seed=2, epoch=0)
    per_lang = Counter(info.lang for info, _ in mono)
    assert all(binomial_ok(per_lang[lang], len(mono), 1 / len(langs)) for lang in langs)
    cross = plan_epoch([full4], "cross", 8, 0.5, seed=2, epoch=0)
    counts = Counter((ref.q_lang, ref.p_lang) for _, batch in cross for ref in batch)
    n_pairs = sum(counts.values())
    ordered = [(q, p) for q in langs for p in langs if q != p]
    assert set(counts) == set(ordered)
    assert all(binomial_ok(counts[key], n_pairs, 1 / len(ordered)) for key in ordered)


@pytest.mark.parametrize("mode", ["mono", "cross", "hybrid"])
def test_leftover_pids_cannot_fill_another_batch(mode, grouped, sparse):
    """Deferred pids are not lost: after the epoch, no batch key has B distinct groups left."""
    size = 32
    corpora = [grouped, sparse]
    plan = plan_epoch(corpora, mode, size, 0.5, seed=7, epoch=0)
    check_plan(plan, corpora, size)
    used = {(ref.dataset, ref.pid) for _, batch in plan for ref in batch}
    for d, corpus in enumerate(corpora):
        left = [pid for pid in corpus.pids if (d, pid) not in used]
        if mode != "cross":
            for lang in corpus.languages:
                groups = {corpus.group[pid] for pid in left if lang in corpus.langs_of(pid)}
                assert len(groups) < size
        if mode != "mono":
            groups = {corpus.group[pid] for pid in left if len(corpus.langs_of(pid)) >= 2}
            assert len(groups) < size


def test_languages_missing_for_some_pids(sparse):
    single = {pid for pid in sparse.pids if len(sparse.langs_of(pid)) == 1}
    assert single, "the fixture should contain single-language pids"
    cross = plan_epoch([sparse], "cross", 16, 0.5, seed=0, epoch=0)
    check_plan(cross, [sparse], 16)
    assert not single & {ref.pid for _, batch in cross for ref in batch}
    assert cross.dropped[0] >= len(single)
    assert cross.drop_reasons[0]["one_language"] == len(single)
    mono = plan_epoch([sparse], "mono", 16, 0.5, seed=0, epoch=0)
    check_plan(mono, [sparse], 16)
    assert single & {ref.pid for _, batch in mono for ref in batch}


@pytest.mark.parametrize(
    ("temperature", "expected"), [(1.0, 0.75), (0.5, math.sqrt(3) / (math.sqrt(3) + 1)), (0.0, 0.5)]
)
def test_dataset_choice_follows_tempered_size(temperature, expected):
    big = make_corpus(6000, ["en"], name="big")
    small = make_corpus(2000, ["en"], name="small")
    plan = plan_epoch([big, small], "mono", 2, 0.5, seed=4, epoch=0, temperature=temperature)
    head = plan[:1500]
    assert binomial_ok(sum(info.dataset == 0 for info, _ in head), len(head), expected)
    assert plan.dropped == [0, 0]


def test_exhausted_dataset_leaves_the_rest_to_the_others():
    tiny = make_corpus(40, ["en", "de"], name="tiny")
    large = make_corpus(4000, ["en", "de"], name="large")
    plan = plan_epoch([tiny, large], "hybrid", 4, 0.5, seed=0, epoch=0, temperature=0.0)
    datasets = [info.dataset for info, _ in plan]
    assert Counter(datasets) == {0: 10, 1: 1000}
    last_tiny = max(i for i, d in enumerate(datasets) if d == 0)
    assert last_tiny < len(plan) // 2
    assert plan.dropped == [0, 0]


def test_plans_are_deterministic_and_use_no_global_rng(grouped):
    np.random.seed(1)
    random.seed(1)
    state = np.random.get_state()[1].copy()
    a = plan_epoch([grouped], "hybrid", 8, 0.5, seed=11, epoch=3)
    assert np.array_equal(np.random.get_state()[1], state)
    np.random.seed(2)
    random.seed(2)
    b = plan_epoch([grouped], "hybrid", 8, 0.5, seed=11, epoch=3)
    assert a == b and a.dropped == b.dropped
    assert plan_epoch([grouped], "hybrid", 8, 0.5, seed=11, epoch=4) != a
    assert plan_epoch([grouped], "hybrid", 8, 0.5, seed=12, epoch=3) != a


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
            return pairs[ref.q_lang][ref.pid].question, pairs[ref.p_lang][ref.pid].passage

    sampler = HybridBatchSampler([grouped], "cross", 8, seed=2, rank=0, world_size=2)
    loader = DataLoader(Pairs(), batch_sampler=sampler, collate_fn=list)
    plan = plan_epoch([grouped], "cross", 8, 0.5, seed=2, epoch=0)
    batches = list(loader)
    assert len(loader) == len(batches) == len(plan)
    first = plan[0][1][:4]
    assert batches[0] == [(f"q {r.pid} {r.q_lang}", f"p {r.pid} {r.p_lang}") for r in first]


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
        plan_epoch([grouped], "hybrid", 8, 1.5, 0, 0)
    with pytest.raises(ValueError, match="alpha"):
        HybridBatchSampler([grouped], "hybrid", 8, alpha=-0.1)
    with pytest.raises(ValueError, match="mode"):
        plan_epoch([grouped], "bilingual", 8, 0.5, 0, 0)
    with pytest.raises(ConfigError, match="multiple of the number of ranks"):
        HybridBatchSampler([grouped], "hybrid", 10, world_size=4)
    with pytest.raises(ConfigError, match="multiple of the number of ranks"):
        HybridBatchSampler([grouped], "hybrid", 2, world_size=4)
    with pytest.raises(ValueError, match="rank"):
        HybridBatchSampler([grouped], "hybrid", 8, rank=2, world_size=2)
    with pytest.raises(ValueError, match="temperature"):
        plan_epoch([grouped], "hybrid", 8, 0.5, 0, 0, temperature=-1.0)
    with pytest.raises(ValueError, match="no full batch"):
        plan_epoch([make_corpus(50, ["en"])], "cross", 4, 0.5, 0, 0)
    with pytest.raises(ValueError, match="batches_yielded"):
        HybridBatchSampler([grouped], "hybrid", 8).load_state_dict(
            {"epoch": 0, "batches_yielded": 10**6, "seed": 0}
        )


def test_batch_stats_detects_violations_and_is_json(grouped):
    """A plan made by hand with a pid twice in a batch, two ids of one group, impure pairs and a reused pid."""
    pids = grouped.pids
    same_group = [i for i, pid in enumerate(pids) if grouped.group[pid] == grouped.group[pids[1]]]
    assert len(same_group) >= 2
    de, en, fr = (grouped.languages.index(lang) for lang in ("de", "en", "fr"))
    plan = EpochPlan(
        [grouped],
        kind=np.array([0, 0, 1], dtype=np.int8),
        dataset=np.zeros(3, dtype=np.int32),
        lang=np.array([en, en, -1], dtype=np.int16),
        pid=np.array([[0, 0], same_group[:2], [0, 9]], dtype=np.int32),
        q_lang=np.array([[en, en], [en, en], [de, fr]], dtype=np.int8),
        p_lang=np.array([[en, en], [de, en], [de, en]], dtype=np.int8),
        dropped=[len(grouped) - 4],
        drop_reasons=[{}],
    )
    stats = batch_stats(plan, grouped.languages, [grouped])
    json.dumps(stats)
    assert stats["duplicate_pids"] == 1
    assert stats["group_clashes"] == 2
    assert stats["impure_pairs"] == 2
    assert stats["reused_pids"] == 1
    assert stats["kinds"] == {"mono": 2, "cross": 1}
    assert stats["dropped_pids"] == len(grouped) - 4
    languages = grouped.languages
    assert stats["lang_pairs"][languages.index("fr")][languages.index("en")] == 1
    with pytest.raises(
        ValueError,
        match=r"pair PairRef\(dataset=0, pid='grouped-000001', q_lang='en', p_lang='de', .* outside",
    ):
        batch_stats(plan, ["en"])


@pytest.mark.parametrize("mode", ["mono", "cross", "hybrid"])
def test_real_xquad_r_nine_languages(mode, xquad):
    assert xquad.languages == NINE and len(xquad) == 1190
    plan = plan_epoch([xquad], mode, 32, 0.5, seed=0, epoch=0)
    check_plan(plan, [xquad], 32)
    stats = batch_stats(plan, NINE, [xquad])
    json.dumps(stats)
    assert stats["batches"] == len(plan) >= 1190 // 32 - 1
    assert stats["dropped_pids"] == 1190 - 32 * len(plan)
    assert (
        stats["duplicate_pids"]
        == stats["group_clashes"]
        == stats["reused_pids"]
        == stats["impure_pairs"]
        == 0
    )
    matrix = np.array(stats["lang_pairs"])
    off_diagonal = int(matrix.sum() - np.trace(matrix))
    assert (off_diagonal == 0) == (mode == "mono")
    assert (np.trace(matrix) == 0) == (mode == "cross")


def test_real_xquad_and_mlqa_together(xquad, mlqa):
    corpora = [xquad, mlqa]
    languages = sorted(set(NINE) | set(MLQA_LANGS))
    sampler = HybridBatchSampler(corpora, "hybrid", 32, alpha=0.5, seed=3)
    plan = sampler.plan()
    check_plan(plan, corpora, 32)
    stats = batch_stats(plan, languages, corpora)
    assert set(stats["batches_per_dataset"]) == {"0", "1"}
    assert stats["kinds"]["mono"] > 0 and stats["kinds"]["cross"] > 0
    assert len(list(sampler)) == len(plan)


@pytest.mark.parametrize(("mode", "alpha"), [("mono", 0.5), ("cross", 0.5), ("hybrid", 0.5), ("hybrid", 0.0)])
def test_drop_reasons_account_for_every_unused_pid(mode, alpha, grouped, sparse):
    """The reasons sum to the dropped count and match a recount from the plan: single-language ids when only
    cross batches are drawn, then one ``partial_batch`` per distinct left-over group and ``group_clash`` for the
    rest, and the partial rest spans fewer groups than a batch."""
    corpora = [grouped, sparse]
    plan = plan_epoch(corpora, mode, 16, alpha, seed=4, epoch=0)
    for d, corpus in enumerate(corpora):
        reasons = plan.drop_reasons[d]
        assert set(reasons) == set(DROP_REASONS)
        assert sum(reasons.values()) == plan.dropped[d]
        used = {ref.pid for info, batch in plan if info.dataset == d for ref in batch}
        left = [pid for pid in corpus.pids if pid not in used]
        cross_only = mode == "cross" or alpha == 0.0
        single = [pid for pid in left if len(corpus.langs_of(pid)) < 2] if cross_only else []
        usable = [pid for pid in left if pid not in single]
        groups = {corpus.group[pid] for pid in usable}
        assert reasons == {
            "one_language": len(single),
            "group_clash": len(usable) - len(groups),
            "partial_batch": len(groups),
        }
    usage = dataset_usage(plan, corpora)
    assert [u["used_ids"] + u["dropped_ids"] for u in usage] == [len(grouped), len(sparse)]
    assert sum(u["batches"] for u in usage) == len(plan)
    languages = sorted({lang for c in corpora for lang in c.languages})
    assert batch_stats(plan, languages, corpora)["dataset_usage"] == usage


def test_batch_capacity_counts_distinct_groups():
    """Three ids share one answer group, so a corpus of 6 ids fills at most 4 pairs per batch; an id in one
    language only counts for mono batches in that language."""
    corpus = make_corpus(6, ["de", "en"], group_sizes=[3, 1, 1, 1])
    assert batch_capacity(corpus, "mono") == batch_capacity(corpus, "cross") == 4
    with pytest.raises(
        ValueError, match=r"no full batch of 5 mono pairs.*6 ids, at most 4 pairs per mono batch"
    ):
        plan_epoch([corpus], "mono", 5, 0.5, 0, 0)
    assert len(plan_epoch([corpus], "mono", 4, 0.5, 0, 0)) == 1


def test_no_full_batch_names_the_real_cap_on_xquad_r(xquad):
    """XQuAD-R's 1190 ids form 491 answer groups: 1000 < 1190 ids, yet no batch of 1000 exists."""
    assert batch_capacity(xquad, "mono") == batch_capacity(xquad, "cross") == 491
    with pytest.raises(ValueError, match="1190 ids, at most 491 pairs per mono batch"):
        plan_epoch([xquad], "hybrid", 1000, 0.5, 0, 0)
    plan = plan_epoch([xquad], "hybrid", 400, 0.5, 0, 0)
    assert len(plan) == 1 and plan.dropped == [790]


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
    if batch_size == 0:  # the sampler's argument check names a non-positive size first
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


def test_corpus_arrays_match_the_corpus_and_are_built_once(sparse, grouped):
    arrays = sparse.arrays
    assert sparse.arrays is arrays
    for i, pid in enumerate(sparse.pids):
        assert [lang for lang, has in zip(sparse.languages, arrays.has_lang[i], strict=True) if has] == (
            sparse.langs_of(pid)
        )
        assert arrays.n_langs[i] == len(sparse.langs_of(pid))
        assert arrays.group[i] == sparse.group[pid]
    for groups in ([0], [5, 2, 40], list(range(0, 300, 7)), []):
        members = arrays.members(np.array(groups, dtype=np.int64))
        assert sorted(members.tolist()) == [
            i for i, pid in enumerate(sparse.pids) if sparse.group[pid] in groups
        ]
    broken = make_corpus(4, ["en"], name="broken")
    del broken.group[broken.pids[2]]
    with pytest.raises(
        ValueError, match=r"corpus 'broken': pid 'broken-000002' has no entry in corpus.group"
    ):
        plan_epoch([broken], "mono", 2, 0.5, 0, 0)


def test_plan_arrays_build_batches_on_demand(grouped, sparse):
    """``plan[i]``, slices, iteration and a rank's :meth:`EpochPlan.pairs` all read the same arrays."""
    corpora = [grouped, sparse]
    plan = plan_epoch(corpora, "hybrid", 8, 0.5, seed=2, epoch=1)
    assert plan.pid.shape == plan.q_lang.shape == plan.p_lang.shape == (len(plan), 8)
    batches = list(plan)
    assert plan[3:6] == batches[3:6] and plan[-1] == batches[-1]
    for i in (0, len(plan) // 2, len(plan) - 1):
        info, pairs = plan[i]
        assert plan.info(i) == info and plan.pairs(i, 2, 6) == pairs[2:6]
        corpus = corpora[info.dataset]
        assert [ref.pid for ref in pairs] == [corpus.pids[j] for j in plan.pid[i]]
    assert plan == batches and plan != batches[:-1]
    mono = sum(info.kind == "mono" for info, _ in batches)
    assert plan.mono_share() == mono / len(plan)


def test_a_one_language_dataset_gives_mono_batches_only(full4):
    """α is the mono probability of a batch of a dataset that can fill both kinds; an English-only dataset gives
    mono batches only, so the realised share over the epoch is α for the multilingual dataset's batches and above
    α overall, and the plan reports it."""
    english = make_corpus(6000, ["en"], name="english")
    plan = plan_epoch([full4, english], "hybrid", 8, 0.3, seed=6, epoch=0)
    check_plan(plan, [full4, english], 8)
    batches, mono = plan.batches_per_dataset(2), plan.mono_batches_per_dataset(2)
    assert mono[1] == batches[1] == 750
    assert binomial_ok(mono[0], batches[0], 0.3)
    assert plan.mono_share() == sum(mono) / len(plan) > 0.5
    stats = batch_stats(plan, sorted(set(full4.languages) | {"en"}), [full4, english])
    assert stats["mono_share"] == plan.mono_share()
    assert [u["mono_batches"] for u in stats["dataset_usage"]] == mono


@pytest.mark.parametrize("temperature", [0.0, 0.5, 1.0])
def test_epoch_steps_shares_follow_tempered_size(temperature):
    """With an epoch of N steps the datasets' shares of the whole epoch follow size**T (in one pass over each
    they always follow size): the small dataset repeats (in a new pass), the large one is partly used."""
    big = make_corpus(6000, ["en", "de"], name="big", group_sizes=[1, 2])
    small = make_corpus(300, ["en", "de"], name="small", group_sizes=[1, 3])
    steps = 1200
    plan = plan_epoch(
        [big, small], "hybrid", 4, 0.5, seed=8, epoch=0, temperature=temperature, epoch_steps=steps
    )
    assert len(plan) == steps
    expected = 300**temperature / (6000**temperature + 300**temperature)
    assert binomial_ok(plan.batches_per_dataset(2)[1], steps, expected)
    for info, batch in plan:
        check_batch(info, batch, [big, small], 4)
    used = [Counter(ref.pid for info, batch in plan if info.dataset == d for ref in batch) for d in (0, 1)]
    assert max(used[1].values()) <= plan.passes[1]
    if expected * steps * 4 > 2 * len(small):
        assert plan.passes[1] > 1 and max(used[1].values()) > 1
    assert plan.passes[0] == 1 and plan.dropped[0] == len(big) - len(used[0]) > 0
    assert plan.drop_reasons[0] == {"one_language": 0, "not_drawn": plan.dropped[0]}
    again = plan_epoch(
        [big, small], "hybrid", 4, 0.5, seed=8, epoch=0, temperature=temperature, epoch_steps=steps
    )
    assert again == plan


def test_epoch_steps_leaves_the_exhaustive_epoch_unchanged_when_none(grouped, sparse):
    corpora = [grouped, sparse]
    plan = plan_epoch(corpora, "hybrid", 16, 0.5, seed=1, epoch=0)
    assert plan.passes == [1, 1]
    assert plan == plan_epoch(corpora, "hybrid", 16, 0.5, seed=1, epoch=0, epoch_steps=None)
    sampler = HybridBatchSampler(corpora, "hybrid", 16, seed=1, epoch_steps=50)
    assert len(sampler) == 50 == len(list(sampler))
    for bad in (0, -3, 2.5, True):
        with pytest.raises(ValueError, match="epoch_steps"):
            plan_epoch(corpora, "hybrid", 16, 0.5, 0, 0, epoch_steps=bad)


@pytest.mark.parametrize("n", [0, 1, 2, 50, 600, 5000])
def test_the_planners_group_helpers_match_numpy(n: int) -> None:
    rng = np.random.default_rng(n)
    groups = rng.integers(0, max(1, n // 3), size=n)
    first = np.zeros(n, dtype=bool)
    first[np.unique(groups, return_index=True)[1]] = True
    assert np.array_equal(_first_of_group(groups), first)
    for among in (groups[:0], groups[: min(n, 32)], rng.integers(0, max(1, n // 3), size=40)):
        assert np.array_equal(_isin(groups, among), np.isin(groups, among))


def _plan_digest(plan: EpochPlan) -> str:
    digest = hashlib.sha256()
    for key in ("kind", "dataset", "lang", "pid", "q_lang", "p_lang"):
        digest.update(getattr(plan, key).astype(np.int64).tobytes())
    digest.update(repr((plan.dropped, plan.drop_reasons, plan.passes)).encode())
    return digest.hexdigest()[:16]


@pytest.mark.parametrize(
    ("mode", "alpha", "batch", "steps", "expected"),
    [
        ("hybrid", 0.5, 32, None, "3c773e395abeb90e"),
        ("mono", 0.5, 16, None, "20cb4b7503e7b05e"),
        ("cross", 0.5, 64, None, "303339fee4fa3105"),
        ("hybrid", 0.3, 24, 150, "ca28ee4af0347c0c"),
    ],
)
def test_plans_are_those_of_the_planner_before_its_speed_up(
    mode: str, alpha: float, batch: int, steps: int | None, expected: str
) -> None:
    """The digests were computed with the planner as it was before ``_first_of_group`` / ``_isin`` replaced
    ``np.unique`` / ``np.isin`` and the empty deferred list was skipped (issue 25): a seed keeps its plans."""
    corpora = [
        make_corpus(3000, NINE, "a", group_sizes=[1, 1, 3, 1, 2], subsets=True, seed=1),
        make_corpus(700, ["en", "de"], "b", group_sizes=[2, 1], seed=2),
    ]
    assert _plan_digest(plan_epoch(corpora, mode, batch, alpha, 7, 3, 0.7, steps)) == expected
