"""plan_epoch, the epoch planner: small hand-built corpora whose plans can be worked out by hand (batch counts,
which ids a batch must hold, drop reasons, passes), properties that every batch of a plan keeps (one dataset, one
id per answer group, the languages of its kind), the shares that α and the temperature set on generated corpora,
determinism in ``(seed, epoch)``, and the real XQuAD-R."""

from __future__ import annotations

import hashlib
import json
import math
import random
from collections import Counter

import numpy as np
import pytest

from hybrid_ir.data.corpus import ParallelCorpus, QAPair
from hybrid_ir.data.planning.plan import DROP_REASONS, EpochPlan, batch_capacity
from hybrid_ir.data.planning.planner import _first_of_group, _isin, plan_epoch
from hybrid_ir.data.planning.stats import batch_stats, dataset_usage
from tests.helpers.corpora import langs_of, make_corpus
from tests.helpers.plans import binomial_ok, check_batch, check_plan

SEEDS = range(8)


def hand_corpus(
    langs: dict[str, list[str]], groups: dict[str, int] | None = None, name: str = "hand"
) -> ParallelCorpus:
    """A corpus whose id ``i`` exists in the languages ``langs[i]``; ``groups`` gives the answer group of some ids
    (every other id is its own group)."""
    groups = groups or {}
    languages = sorted({lang for present in langs.values() for lang in present})
    pairs: dict[str, dict[str, QAPair]] = {lang: {} for lang in languages}
    for parallel_id, present in langs.items():
        for lang in present:
            pairs[lang][parallel_id] = QAPair(
                parallel_id, lang, f"q {parallel_id} {lang}", f"p {parallel_id} {lang}"
            )
    group = {parallel_id: groups.get(parallel_id, 1000 + i) for i, parallel_id in enumerate(langs)}
    return ParallelCorpus(name=name, languages=languages, pairs=pairs, group=group)


def ids_of(batch: list) -> set[str]:
    return {ref.parallel_id for ref in batch}


# -------------------------------------------------- hand-built corpora


@pytest.mark.parametrize(("n", "batches", "left"), [(12, 3, 0), (10, 2, 2), (4, 1, 0)])
def test_one_language_mono_uses_each_id_once_and_drops_the_remainder(n: int, batches: int, left: int) -> None:
    """``n`` ids in English alone, batches of 4: ``n // 4`` batches, the ``n % 4`` left over are a partial batch."""
    corpus = hand_corpus({f"e{i}": ["en"] for i in range(n)})
    for seed in SEEDS:
        plan = plan_epoch([corpus], "mono", 4, 0.5, seed, epoch=0)
        check_plan(plan, [corpus], 4)
        assert len(plan) == batches and plan.dropped == [left] and plan.passes == [1]
        assert plan.drop_reasons == [{"one_language": 0, "group_clash": 0, "partial_batch": left}]
        assert all(info.kind == "mono" and info.lang == "en" for info, _ in plan)


def test_a_batch_holds_one_id_of_an_answer_group() -> None:
    """a, b, c share an answer; d, e, f do not: a batch of 4 holds one of a, b, c and all of d, e, f, and the two
    left over (one group) are one partial batch plus one group clash. A batch of 5 cannot be filled at all."""
    corpus = hand_corpus({i: ["en", "de"] for i in "abcdef"}, groups={"a": 0, "b": 0, "c": 0})
    assert batch_capacity(corpus, "mono") == batch_capacity(corpus, "cross") == 4
    for mode in ("mono", "cross", "hybrid"):
        for seed in SEEDS:
            plan = plan_epoch([corpus], mode, 4, 0.5, seed, epoch=0)
            check_plan(plan, [corpus], 4)
            (_, batch), *rest = plan
            assert not rest and len(ids_of(batch) & set("abc")) == 1 and ids_of(batch) >= set("def")
            assert plan.drop_reasons == [{"one_language": 0, "group_clash": 1, "partial_batch": 1}]
        with pytest.raises(ValueError, match=r"no full batch of 5 .*6 ids, at most 4 pairs per"):
            plan_epoch([corpus], mode, 5, 0.5, 0, 0)


def test_cross_batches_leave_out_the_ids_in_one_language() -> None:
    """x0..x3 in en and de, y0 and y1 in en only: cross batches of 2 use exactly the x ids, each pair en->de or
    de->en, and drop the y ids as one-language; mono batches may use the y ids, so none is dropped for that."""
    corpus = hand_corpus({**{f"x{i}": ["de", "en"] for i in range(4)}, "y0": ["en"], "y1": ["en"]})
    for seed in SEEDS:
        cross = plan_epoch([corpus], "cross", 2, 0.5, seed, epoch=0)
        check_plan(cross, [corpus], 2)
        assert len(cross) == 2 and set().union(*(ids_of(batch) for _, batch in cross)) == {
            "x0",
            "x1",
            "x2",
            "x3",
        }
        assert {(ref.q_lang, ref.p_lang) for _, batch in cross for ref in batch} <= {
            ("en", "de"),
            ("de", "en"),
        }
        assert cross.drop_reasons == [{"one_language": 2, "group_clash": 0, "partial_batch": 0}]
        mono = plan_epoch([corpus], "mono", 2, 0.5, seed, epoch=0)
        check_plan(mono, [corpus], 2)
        assert (
            mono.drop_reasons[0]["one_language"] == 0
            and sum(mono.drop_reasons[0].values()) == mono.dropped[0]
        )


def test_a_mono_batch_takes_a_language_that_can_still_fill_one() -> None:
    """e0..e3 exist in English only, d0..d3 in German only: batches of 4 give exactly one English batch of the e ids
    and one German batch of the d ids, whichever language is drawn first."""
    corpus = hand_corpus({**{f"e{i}": ["en"] for i in range(4)}, **{f"d{i}": ["de"] for i in range(4)}})
    first = set()
    for seed in SEEDS:
        plan = plan_epoch([corpus], "mono", 4, 0.5, seed, epoch=0)
        check_plan(plan, [corpus], 4)
        by_lang = {info.lang: ids_of(batch) for info, batch in plan}
        assert len(plan) == 2 and by_lang == {"en": {"e0", "e1", "e2", "e3"}, "de": {"d0", "d1", "d2", "d3"}}
        first.add(plan[0][0].lang)
    assert first == {"en", "de"}, "the language is drawn, not fixed"


def test_hybrid_falls_back_to_the_kind_that_can_be_filled() -> None:
    """An English-only dataset cannot fill a cross batch: in hybrid mode every batch is mono, whatever 0 < α < 1; with
    α = 0 hybrid is cross, which it cannot fill at all."""
    corpus = hand_corpus({f"e{i}": ["en"] for i in range(8)})
    for alpha in (0.01, 0.3, 0.9):
        plan = plan_epoch([corpus], "hybrid", 2, alpha, 1, epoch=0)
        check_plan(plan, [corpus], 2)
        assert len(plan) == 4 and plan.mono_share() == 1.0
    for mode, alpha in (("cross", 0.5), ("hybrid", 0.0)):
        with pytest.raises(ValueError, match=f"no full batch of 2 {mode} pairs"):
            plan_epoch([corpus], mode, 2, alpha, 1, 0)


@pytest.mark.parametrize("temperature", [0.0, 1.0, 3.0])
def test_an_exhaustive_epoch_is_one_pass_over_every_dataset(temperature: float) -> None:
    """Two datasets of 8 and 6 ids, batches of 2: 4 + 3 batches, each from one dataset, whatever the temperature."""
    a = hand_corpus({f"a{i}": ["de", "en"] for i in range(8)}, name="a")
    b = hand_corpus({f"b{i}": ["de", "en"] for i in range(6)}, name="b")
    for seed in SEEDS:
        plan = plan_epoch([a, b], "hybrid", 2, 0.5, seed, epoch=0, temperature=temperature)
        check_plan(plan, [a, b], 2)
        assert plan.batches_per_dataset(2) == [4, 3] and plan.dropped == [0, 0] and plan.passes == [1, 1]


def test_epoch_steps_starts_a_new_pass_when_a_dataset_runs_out() -> None:
    """4 ids, batches of 2, an epoch of 5 steps: passes of 2 batches each, so 3 passes begin; each pass uses every
    id at most once (the first two use all four), and no id is left out."""
    corpus = hand_corpus({f"e{i}": ["en"] for i in range(4)})
    everyone = {"e0", "e1", "e2", "e3"}
    for seed in SEEDS:
        plan = plan_epoch([corpus], "mono", 2, 0.5, seed, epoch=0, epoch_steps=5)
        assert len(plan) == 5 and plan.passes == [3] and plan.dropped == [0]
        assert plan.drop_reasons == [{"one_language": 0, "not_drawn": 0}]
        batches = [ids_of(batch) for _, batch in plan]
        for info, batch in plan:
            check_batch(info, batch, [corpus], 2)
        assert batches[0] | batches[1] == batches[2] | batches[3] == everyone
    short = plan_epoch([corpus], "mono", 2, 0.5, 0, epoch=0, epoch_steps=1)
    assert short.passes == [1] and short.dropped == [2]
    assert short.drop_reasons == [{"one_language": 0, "not_drawn": 2}]


def test_epoch_steps_names_the_one_language_ids_cross_batches_cannot_use() -> None:
    corpus = hand_corpus({**{f"x{i}": ["de", "en"] for i in range(4)}, "y0": ["en"], "y1": ["en"]})
    plan = plan_epoch([corpus], "cross", 2, 0.5, 3, epoch=0, epoch_steps=2)
    assert plan.passes == [1] and plan.dropped == [2]
    assert plan.drop_reasons == [{"one_language": 2, "not_drawn": 0}]


def test_every_seed_and_epoch_plays_every_id_in_another_order() -> None:
    """12 English ids in batches of 4: every (seed, epoch) uses each id once; the same (seed, epoch) gives the same
    plan, and the orders of different epochs and seeds are not all the same."""
    corpus = hand_corpus({f"e{i:02d}": ["en"] for i in range(12)})
    orders = set()
    for seed in (0, 1):
        for epoch in (0, 1, 2):
            plan = plan_epoch([corpus], "mono", 4, 0.5, seed, epoch)
            check_plan(plan, [corpus], 4)
            assert plan.dropped == [0] and plan == plan_epoch([corpus], "mono", 4, 0.5, seed, epoch)
            orders.add(tuple(ref.parallel_id for _, batch in plan for ref in batch))
    assert len(orders) > 1


def test_the_arguments_are_checked() -> None:
    corpus = hand_corpus({f"e{i}": ["en", "de"] for i in range(8)})
    with pytest.raises(ValueError, match="no training datasets given"):
        plan_epoch([], "mono", 2, 0.5, 0, 0)
    for epoch in (-1, 1.5):
        with pytest.raises(ValueError, match="epoch must be a non-negative integer"):
            plan_epoch([corpus], "mono", 2, 0.5, 0, epoch)
    with pytest.raises(ValueError, match="alpha"):
        plan_epoch([corpus], "hybrid", 2, 1.5, 0, 0)
    with pytest.raises(ValueError, match="mode"):
        plan_epoch([corpus], "bilingual", 2, 0.5, 0, 0)
    with pytest.raises(ValueError, match="temperature"):
        plan_epoch([corpus], "hybrid", 2, 0.5, 0, 0, temperature=-1.0)
    for bad in (0, -3, 2.5, True):
        with pytest.raises(ValueError, match="epoch_steps"):
            plan_epoch([corpus], "hybrid", 2, 0.5, 0, 0, epoch_steps=bad)


# -------------------------------------------------- generated corpora: shares and properties of every batch


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
        stats["impure_pairs"] == stats["duplicate_ids"] == stats["reused_ids"] == stats["group_clashes"] == 0
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
def test_leftover_ids_cannot_fill_another_batch(mode, grouped, sparse):
    """Deferred parallel_ids are not lost: after the epoch, no batch key has B distinct groups left."""
    size = 32
    corpora = [grouped, sparse]
    plan = plan_epoch(corpora, mode, size, 0.5, seed=7, epoch=0)
    check_plan(plan, corpora, size)
    used = {(ref.dataset, ref.parallel_id) for _, batch in plan for ref in batch}
    for d, corpus in enumerate(corpora):
        left = [parallel_id for parallel_id in corpus.parallel_ids if (d, parallel_id) not in used]
        if mode != "cross":
            for lang in corpus.languages:
                groups = {
                    corpus.group[parallel_id] for parallel_id in left if lang in langs_of(corpus, parallel_id)
                }
                assert len(groups) < size
        if mode != "mono":
            groups = {
                corpus.group[parallel_id] for parallel_id in left if len(langs_of(corpus, parallel_id)) >= 2
            }
            assert len(groups) < size


def test_languages_missing_for_some_ids(sparse):
    single = {parallel_id for parallel_id in sparse.parallel_ids if len(langs_of(sparse, parallel_id)) == 1}
    assert single, "the fixture should contain single-language parallel_ids"
    cross = plan_epoch([sparse], "cross", 16, 0.5, seed=0, epoch=0)
    check_plan(cross, [sparse], 16)
    assert not single & {ref.parallel_id for _, batch in cross for ref in batch}
    assert cross.dropped[0] >= len(single)
    assert cross.drop_reasons[0]["one_language"] == len(single)
    mono = plan_epoch([sparse], "mono", 16, 0.5, seed=0, epoch=0)
    check_plan(mono, [sparse], 16)
    assert single & {ref.parallel_id for _, batch in mono for ref in batch}


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


@pytest.mark.parametrize(("mode", "alpha"), [("mono", 0.5), ("cross", 0.5), ("hybrid", 0.5), ("hybrid", 0.0)])
def test_drop_reasons_account_for_every_unused_id(mode, alpha, grouped, sparse):
    """The reasons sum to the dropped count and match a recount from the plan: single-language ids when only
    cross batches are drawn, then one ``partial_batch`` per distinct left-over group and ``group_clash`` for the
    rest, and the partial rest spans fewer groups than a batch."""
    corpora = [grouped, sparse]
    plan = plan_epoch(corpora, mode, 16, alpha, seed=4, epoch=0)
    for d, corpus in enumerate(corpora):
        reasons = plan.drop_reasons[d]
        assert set(reasons) == set(DROP_REASONS)
        assert sum(reasons.values()) == plan.dropped[d]
        used = {ref.parallel_id for info, batch in plan if info.dataset == d for ref in batch}
        left = [parallel_id for parallel_id in corpus.parallel_ids if parallel_id not in used]
        cross_only = mode == "cross" or alpha == 0.0
        single = (
            [parallel_id for parallel_id in left if len(langs_of(corpus, parallel_id)) < 2]
            if cross_only
            else []
        )
        usable = [parallel_id for parallel_id in left if parallel_id not in single]
        groups = {corpus.group[parallel_id] for parallel_id in usable}
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


@pytest.mark.parametrize("mode", ["mono", "cross", "hybrid"])
def test_real_xquad_r_nine_languages(mode, xquad):
    assert len(xquad.languages) == 9 and len(xquad) == 1190
    plan = plan_epoch([xquad], mode, 32, 0.5, seed=0, epoch=0)
    check_plan(plan, [xquad], 32)
    stats = batch_stats(plan, xquad.languages, [xquad])
    json.dumps(stats)
    assert stats["batches"] == len(plan) >= 1190 // 32 - 1
    assert stats["dropped_ids"] == 1190 - 32 * len(plan)
    assert (
        stats["duplicate_ids"] == stats["group_clashes"] == stats["reused_ids"] == stats["impure_pairs"] == 0
    )
    matrix = np.array(stats["lang_pairs"])
    off_diagonal = int(matrix.sum() - np.trace(matrix))
    assert (off_diagonal == 0) == (mode == "mono")
    assert (np.trace(matrix) == 0) == (mode == "cross")


def test_no_full_batch_names_the_real_cap_on_xquad_r(xquad):
    """XQuAD-R's 1190 ids form 491 answer groups: 1000 < 1190 ids, yet no batch of 1000 exists."""
    assert batch_capacity(xquad, "mono") == batch_capacity(xquad, "cross") == 491
    with pytest.raises(ValueError, match="1190 ids, at most 491 pairs per mono batch"):
        plan_epoch([xquad], "hybrid", 1000, 0.5, 0, 0)
    plan = plan_epoch([xquad], "hybrid", 400, 0.5, 0, 0)
    assert len(plan) == 1 and plan.dropped == [790]


def test_corpus_arrays_match_the_corpus_and_are_built_once(sparse, grouped):
    arrays = sparse.arrays
    assert sparse.arrays is arrays
    for i, parallel_id in enumerate(sparse.parallel_ids):
        assert [lang for lang, has in zip(sparse.languages, arrays.has_lang[i], strict=True) if has] == (
            langs_of(sparse, parallel_id)
        )
        assert arrays.n_langs[i] == len(langs_of(sparse, parallel_id))
        assert arrays.group[i] == sparse.group[parallel_id]
    for groups in ([0], [5, 2, 40], list(range(0, 300, 7)), []):
        members = arrays.members(np.array(groups, dtype=np.int64))
        assert sorted(members.tolist()) == [
            i for i, parallel_id in enumerate(sparse.parallel_ids) if sparse.group[parallel_id] in groups
        ]
    broken = make_corpus(4, ["en"], name="broken")
    del broken.group[broken.parallel_ids[2]]
    with pytest.raises(
        ValueError, match=r"corpus 'broken': parallel_id 'broken-000002' has no entry in corpus.group"
    ):
        plan_epoch([broken], "mono", 2, 0.5, 0, 0)


def test_plan_arrays_build_batches_on_demand(grouped, sparse):
    """``plan[i]``, slices, iteration and a rank's :meth:`EpochPlan.pairs` all read the same arrays."""
    corpora = [grouped, sparse]
    plan = plan_epoch(corpora, "hybrid", 8, 0.5, seed=2, epoch=1)
    assert plan.parallel_id.shape == plan.q_lang.shape == plan.p_lang.shape == (len(plan), 8)
    batches = list(plan)
    assert plan[3:6] == batches[3:6] and plan[-1] == batches[-1]
    for i in (0, len(plan) // 2, len(plan) - 1):
        info, pairs = plan[i]
        assert plan.info(i) == info and plan.pairs(i, 2, 6) == pairs[2:6]
        corpus = corpora[info.dataset]
        assert [ref.parallel_id for ref in pairs] == [corpus.parallel_ids[j] for j in plan.parallel_id[i]]
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
    used = [
        Counter(ref.parallel_id for info, batch in plan if info.dataset == d for ref in batch) for d in (0, 1)
    ]
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
    for key in ("kind", "dataset", "lang", "parallel_id", "q_lang", "p_lang"):
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
        make_corpus(
            3000,
            ["ar", "de", "en", "es", "hi", "ru", "th", "tr", "zh"],
            "a",
            group_sizes=[1, 1, 3, 1, 2],
            subsets=True,
            seed=1,
        ),
        make_corpus(700, ["en", "de"], "b", group_sizes=[2, 1], seed=2),
    ]
    assert _plan_digest(plan_epoch(corpora, mode, batch, alpha, 7, 3, 0.7, steps)) == expected
