"""Hard negatives from the data (data.negatives_per_query): placement, exclusions, determinism, sharding, collation."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import lightning as L
import numpy as np
import pytest
import torch

from hybrid_ir.data.corpus import ParallelCorpus, QAPair
from hybrid_ir.data.formats.load_corpus import load_corpus
from hybrid_ir.data.planning import negatives as negatives_module
from hybrid_ir.data.planning.negatives import (
    SOURCES,
    choose_negatives,
    negative_stats,
    short_batches,
    spread,
    with_negatives,
)
from hybrid_ir.data.planning.plan import EpochPlan, PairRef
from hybrid_ir.data.planning.planner import plan_epoch
from hybrid_ir.data.planning.sampler import HybridBatchSampler
from hybrid_ir.data.runtime.datamodule import ParallelQADataModule
from hybrid_ir.data.runtime.dataset import PairDataset
from hybrid_ir.models.tokenizer import TextTokenizer
from hybrid_ir.utils.errors import ConfigError
from tests.helpers.corpora import make_corpus
from tests.helpers.fakes import CountingTokenizer
from tests.helpers.jsonl import pair_records, text_negative_records, write_jsonl
from tests.helpers.repo import REPO

LANGS = ["de", "en", "es"]
N = 24


def write_parallel(path: Path) -> Path:
    """``N`` ids in de/en/es (id 5 has no es; ids 0 and 1 share a passage_id, so one group), each listing the
    four next ids as negative_ids; id 3 also lists negative texts in en."""
    records = []
    for i in range(N):
        for lang in LANGS:
            if i == 5 and lang == "es":
                continue
            rec: dict[str, Any] = {
                "id": f"x{i}",
                "lang": lang,
                "question": f"question {i} {lang}?",
                "passage": f"passage {i} {lang}.",
                "negative_ids": [f"x{(i + j) % N}" for j in range(1, 5)],
            }
            if i in (0, 1):
                rec["passage_id"] = "shared"
            if i == 3 and lang == "en":
                rec["negatives"] = ["a listed negative text.", "another listed negative."]
            records.append(rec)
    return write_jsonl(path, records)


@pytest.fixture
def corpus(tmp_path: Path) -> ParallelCorpus:
    return load_corpus(
        {"name": "par", "format": "jsonl", "path": str(write_parallel(tmp_path / "p.jsonl"))}, None
    )


@pytest.fixture
def tokenizer(e5_tokenizer) -> TextTokenizer:
    return TextTokenizer(e5_tokenizer, "query: ", "passage: ", max_length=32)


def sampler(
    corpus: ParallelCorpus, k: int, mode: str = "hybrid", seed: int = 0, batch_size: int = 8, **kw: Any
) -> HybridBatchSampler:
    return HybridBatchSampler([corpus], mode, batch_size, alpha=0.5, seed=seed, negatives_per_query=k, **kw)


def epoch_batches(s: HybridBatchSampler, epoch: int = 0) -> list[list]:
    s.set_epoch(epoch)
    return list(s)


@pytest.mark.parametrize("mode", ["mono", "cross", "hybrid"])
@pytest.mark.parametrize("k", [1, 2])
def test_negatives_are_in_the_passage_language_and_clash_with_no_positive(
    corpus: ParallelCorpus, k: int, mode: str
) -> None:
    listed = 0
    for epoch in range(3):
        for batch in epoch_batches(sampler(corpus, k, mode), epoch):
            groups = {corpus.group[ref.parallel_id] for ref in batch}
            for ref in batch:
                assert len(ref.negatives) == k
                for neg in ref.negatives:
                    assert neg.lang == ref.p_lang
                    if neg.parallel_id is None:
                        assert neg.source == "text" and (ref.parallel_id, ref.p_lang) == ("x3", "en")
                        continue
                    assert neg.parallel_id in corpus.pairs[ref.p_lang]
                    assert corpus.group[neg.parallel_id] not in groups
                    listed += neg.source == "listed"
                    if neg.source == "listed":
                        assert neg.parallel_id in corpus.negative_ids[ref.p_lang][ref.parallel_id]
    assert listed > 0


def test_listed_ids_that_are_in_the_batch_or_missing_in_the_language_are_skipped(
    corpus: ParallelCorpus,
) -> None:
    """x4 lists x5..x8; in es, x5 does not exist and x6 is a positive of the batch: the listed candidates left
    are x7 and x8, and with k=3 the third negative falls back to a random id outside the batch's groups."""
    refs = [PairRef(0, "x4", "de", "es"), PairRef(0, "x6", "en", "es"), PairRef(0, "x0", "en", "es")]
    for seed in range(5):
        negs = choose_negatives(corpus, refs, 3, seed, 0, 0)[0]
        assert {n.parallel_id for n in negs if n.source == "listed"} == {"x7", "x8"}
        (extra,) = [n for n in negs if n.source == "random"]
        assert extra.parallel_id not in {"x0", "x1", "x4", "x5", "x6", "x7", "x8"} and extra.lang == "es"


def test_text_negatives_for_data_that_is_not_parallel(tmp_path: Path) -> None:
    path = write_jsonl(tmp_path / "t.jsonl", text_negative_records())
    texts = load_corpus({"name": "txt", "format": "jsonl", "path": str(path)}, None)
    for batch in epoch_batches(HybridBatchSampler([texts], "mono", 4, negatives_per_query=2)):
        for ref in batch:
            assert [n.source for n in ref.negatives] == ["text", "text"]
            positions = [n.position for n in ref.negatives]
            assert len(set(positions)) == 2 and set(positions) <= set(range(3))


def test_negatives_are_deterministic_for_a_seed(corpus: ParallelCorpus) -> None:
    assert epoch_batches(sampler(corpus, 2, seed=4), 1) == epoch_batches(sampler(corpus, 2, seed=4), 1)
    assert epoch_batches(sampler(corpus, 2, seed=4), 1) != epoch_batches(sampler(corpus, 2, seed=5), 1)


def test_two_ranks_slices_concatenate_to_the_one_rank_batch(corpus: ParallelCorpus) -> None:
    whole = epoch_batches(sampler(corpus, 2))
    ranks = [epoch_batches(sampler(corpus, 2, rank=r, world_size=2)) for r in range(2)]
    assert [a + b for a, b in zip(*ranks, strict=True)] == whole


def test_k0_batches_are_those_of_the_plan_without_negatives(corpus: ParallelCorpus, tokenizer) -> None:
    s = sampler(corpus, 0, rank=1, world_size=2)
    batches = epoch_batches(s)
    assert batches == [s.plan(0).pairs(i, 4, 8) for i in range(len(s.plan(0)))]
    dataset = PairDataset([corpus], tokenizer, use_cache=False)
    batch = dataset.collate([dataset[ref] for ref in batches[0]])
    assert not any(key.startswith("n_") for key in batch)


def test_collated_negatives_are_query_major_passage_tokens(corpus: ParallelCorpus, tokenizer) -> None:
    dataset = PairDataset([corpus], tokenizer, use_cache=False)
    (refs, *_) = epoch_batches(sampler(corpus, 2, rank=0, world_size=2))
    batch = dataset.collate([dataset[ref] for ref in refs])
    assert batch["n_input_ids"].shape[0] == 2 * len(refs) == batch["n_attention_mask"].shape[0]
    for i, ref in enumerate(refs):
        for j, neg in enumerate(ref.negatives):
            text = (
                corpus.pairs[neg.lang][neg.parallel_id].passage
                if neg.parallel_id is not None
                else corpus.negatives[neg.lang][ref.parallel_id][neg.position]
            )
            expected = tokenizer([text], "passage")[0]
            row = batch["n_input_ids"][i * 2 + j]
            assert row[: len(expected)].tolist() == expected
            assert batch["n_attention_mask"][i * 2 + j].sum().item() == len(expected)


def repeating_texts(n: int = 8) -> ParallelCorpus:
    """``n`` ids in en whose records list negative texts only: two of their own (one of them twice), one that every
    record lists, and the next id's passage (left out where that id is a positive of the batch)."""
    ids = [f"t{i}" for i in range(n)]
    pairs = {"en": {p: QAPair(p, "en", f"question {i}?", f"passage {i}.") for i, p in enumerate(ids)}}
    listed = {
        p: (
            f"own {i} a.",
            "every record's negative.",
            f"passage {(i + 1) % n}.",
            f"own {i} a.",
            f"own {i} b.",
        )
        for i, p in enumerate(ids)
    }
    return ParallelCorpus(
        "repeats", ["en"], pairs, {p: i for i, p in enumerate(ids)}, negatives={"en": listed}
    )


def texts_chosen_per_batch(
    corpus: ParallelCorpus, refs: list[PairRef], k: int, seed: int, epoch: int, batch: int
) -> list[list[str]]:
    """The negative texts of the global batch ``refs`` as the choice drew them when the dataset tokenised each
    chosen text per batch: by text, for a corpus of negative texts only with at least ``k`` per pair."""
    rng = np.random.default_rng([seed, epoch, batch, negatives_module._SALT])
    positives = {(ref.p_lang, corpus.pairs[ref.p_lang][ref.parallel_id].passage) for ref in refs}
    out = []
    for ref in refs:
        rng.permutation(0)  # the pair's listed ids: none
        listed = dict.fromkeys(corpus.negatives[ref.p_lang][ref.parallel_id])
        texts = [t for t in listed if (ref.p_lang, t) not in positives]
        out.append([texts[i] for i in rng.permutation(len(texts))[:k]])
    return out


def test_text_negatives_give_the_token_ids_of_the_texts_drawn_per_batch(e5_tokenizer) -> None:
    """The batches' negative token ids are those of tokenising, per batch, the texts the choice draws by text (the
    path before the token store held them), for two epochs of two ranks; no tokenizer call after the store's
    build. Some pairs have the next id, whose passage they list, in their batch, so the positives' filter acts."""
    corpus, k, seed, per_rank = repeating_texts(), 3, 7, 2
    tokenizer = CountingTokenizer(e5_tokenizer, "query: ", "passage: ", max_length=32)
    dataset = PairDataset([corpus], tokenizer, use_cache=False)
    calls = tokenizer.calls
    reference = TextTokenizer(e5_tokenizer, "query: ", "passage: ", max_length=32)
    next_in_batch = 0
    for epoch in range(2):
        ranks = [sampler(corpus, k, "mono", seed, 2 * per_rank, rank=r, world_size=2) for r in range(2)]
        plan = ranks[0].plan(epoch)
        for index, slices in enumerate(zip(*(epoch_batches(r, epoch) for r in ranks), strict=True)):
            refs = plan.pairs(index)
            in_batch = {ref.parallel_id for ref in refs}
            next_in_batch += sum(f"t{(int(ref.parallel_id[1:]) + 1) % 8}" in in_batch for ref in refs)
            texts = texts_chosen_per_batch(corpus, refs, k, seed, epoch, index)
            for rank, rank_refs in enumerate(slices):
                batch = dataset.collate([dataset[ref] for ref in rank_refs])
                mine = texts[rank * per_rank : (rank + 1) * per_rank]
                ids, mask = reference.pad([ids for chosen in mine for ids in reference(chosen, "passage")])
                assert torch.equal(batch["n_input_ids"], ids) and torch.equal(batch["n_attention_mask"], mask)
    assert tokenizer.calls == calls
    assert next_in_batch > 0


def datamodule(path: Path, k: Any) -> ParallelQADataModule:
    spec = {"name": "par", "format": "jsonl", "path": str(path)}
    return ParallelQADataModule(
        [spec], batch_size=8, cache_tokens=False, download=False, negatives_per_query=k
    )


def test_preview_reports_the_negatives(tmp_path: Path) -> None:
    preview = datamodule(write_parallel(tmp_path / "p.jsonl"), 2).preview()
    stats = preview["negatives"]
    assert stats["count"] == 2 * preview["pairs"] and stats["per_query"] == 2
    assert stats["in_passage_lang_share"] == 1.0 and stats["group_clashes"] == 0
    assert stats["sources"]["listed"] > 0 and sum(stats["sources"].values()) == stats["count"]
    assert stats["batches_sampled"] == stats["batches"] == preview["batches"]
    assert "negatives" not in datamodule(tmp_path / "p.jsonl", 0).preview()


@pytest.mark.parametrize("k", [-1, 1.5, True])
def test_a_bad_negatives_per_query_is_a_config_error(tmp_path: Path, k: Any) -> None:
    with pytest.raises(ConfigError, match=r"data\.negatives_per_query"):
        datamodule(tmp_path / "p.jsonl", k)


@pytest.mark.slow
@pytest.mark.usefixtures("shared_e5_tokenizer")
def test_train_with_one_negative_per_query_has_finite_loss(tmp_path: Path) -> None:
    from hybrid_ir.tasks.instantiate import compose_config
    from hybrid_ir.tasks.train import build_components

    conf = REPO / "conf"
    overrides = [
        f"paths.output_dir={tmp_path}",
        "model=tiny",
        "data=jsonl",
        f"data.train.0.path={write_parallel(tmp_path / 'p.jsonl')}",
        "data.batch_size=8",
        "data.negatives_per_query=1",
        "logger=none",
        "~callbacks.zero_shot_eval",
        "trainer.precision=32-true",
        "trainer.max_steps=3",
    ]
    run = build_components(compose_config(conf, "train", overrides))
    seen: list[dict[str, Any]] = []

    class Record(L.Callback):
        def on_train_batch_end(self, trainer, module, outputs, batch, batch_idx) -> None:
            seen.append({"loss": float(outputs["loss"]), "negatives": batch["n_input_ids"].shape[0]})

    run.trainer.callbacks.append(Record())
    run.trainer.fit(run.module, datamodule=run.datamodule)
    assert len(seen) == 3
    assert all(torch.isfinite(torch.tensor(s["loss"])) and s["negatives"] == 8 for s in seen)


def test_too_few_ids_for_random_negatives_is_a_config_error_before_training(tmp_path: Path) -> None:
    """8 ids without lists in batches of 4: at most 4 ids lie outside a batch's groups, so k=5 cannot be met."""
    path = write_jsonl(tmp_path / "plain.jsonl", pair_records(8, ["en"], prefix="i"))
    spec = {"name": "plain", "format": "jsonl", "path": str(path)}
    dm = ParallelQADataModule([spec], batch_size=4, cache_tokens=False, download=False, negatives_per_query=5)
    with pytest.raises(ConfigError, match=r"data\.negatives_per_query=5: dataset 'plain' has only 4 ids"):
        dm.check_plan()
    ok = ParallelQADataModule([spec], batch_size=4, cache_tokens=False, download=False, negatives_per_query=4)
    assert ok.preview()["negatives"]["sources"]["random"] == 4 * ok.preview()["pairs"]


def test_a_resumed_sampler_continues_with_the_same_negatives(corpus: ParallelCorpus) -> None:
    first = sampler(corpus, 2)
    first.set_epoch(1)
    it = iter(first)
    next(it)
    resumed = sampler(corpus, 2)
    resumed.load_state_dict(first.state_dict())
    assert list(resumed) == list(it)


def pairwise_negative_stats(
    plan: EpochPlan, corpus: ParallelCorpus, k: int, seed: int, epoch: int, batches: list[int]
) -> dict[str, Any]:
    """The statistics of ``negative_stats`` counted negative by negative over ``batches`` of ``plan``."""
    negatives = [
        (ref, neg, batch)
        for batch in batches
        for ref in with_negatives([corpus], plan.pairs(batch), k, seed, epoch, batch)
        for neg in ref.negatives
    ]
    clashes = 0
    for ref, neg, batch in negatives:
        positives = plan.pairs(batch)
        if neg.parallel_id is not None:
            clashes += corpus.group[neg.parallel_id] in {corpus.group[p.parallel_id] for p in positives}
        else:
            text = corpus.negatives[neg.lang][ref.parallel_id][neg.position]
            clashes += text in {corpus.pairs[p.p_lang][p.parallel_id].passage for p in positives}
    return {
        "per_query": k,
        "batches": len(plan),
        "batches_sampled": len(batches),
        "count": len(negatives),
        "in_passage_lang_share": sum(neg.lang == ref.p_lang for ref, neg, _ in negatives) / len(negatives),
        "group_clashes": clashes,
        "sources": {source: sum(neg.source == source for _, neg, _ in negatives) for source in SOURCES},
    }


@pytest.mark.parametrize("k", [1, 3])
def test_negative_stats_count_every_batch_or_a_sample_spread_over_the_epoch(
    corpus: ParallelCorpus, k: int
) -> None:
    plan = plan_epoch([corpus], "hybrid", 4, 0.5, seed=2, epoch=1)
    stats = negative_stats(plan, [corpus], k, 2, 1, sample=None)
    assert stats == pairwise_negative_stats(plan, corpus, k, 2, 1, list(range(len(plan))))
    assert negative_stats(plan, [corpus], k, 2, 1, sample=len(plan) + 5) == stats
    evenly = [0, round((len(plan) - 1) / 2), len(plan) - 1]
    assert spread(len(plan), 3).tolist() == evenly
    assert negative_stats(plan, [corpus], k, 2, 1, sample=3) == pairwise_negative_stats(
        plan, corpus, k, 2, 1, evenly
    )
    many = spread(1000, 64).tolist()
    assert len(set(many)) == 64 and many == sorted(many) and many[0] == 0 and many[-1] == 999


def test_short_batches_are_those_with_too_few_ids_outside_their_groups(corpus: ParallelCorpus) -> None:
    """Against a count per pair: ids in the pair's passage language whose group is none of the batch's."""
    sparse = make_corpus(60, ["de", "en", "fr"], name="sparse", group_sizes=[1, 3, 2], subsets=True)
    for data in (sparse, corpus):
        plan = plan_epoch([data], "hybrid", 8, 0.5, seed=5, epoch=0)
        outside = []
        for _, batch in plan:
            groups = {data.group[ref.parallel_id] for ref in batch}
            outside.append(
                min(
                    sum(data.group[parallel_id] not in groups for parallel_id in data.pairs[ref.p_lang])
                    for ref in batch
                )
            )
        found = set()
        for k in range(1, max(outside) + 2):
            short = short_batches(plan, [data], k).tolist()
            assert short == [b for b, n in enumerate(outside) if n < k]
            found.add(0 < len(short) < len(plan))
        assert True in found


def test_a_short_batch_outside_the_sample_is_still_an_error() -> None:
    """40 ids in en, 5 of them in de, no lists: a mono batch of 4 in de leaves 1 de id for 2 random negatives."""
    pairs: dict[str, dict[str, QAPair]] = {"de": {}, "en": {}}
    for i in range(40):
        for lang in ("de", "en") if i < 5 else ("en",):
            pairs[lang][f"i{i:02d}"] = QAPair(f"i{i:02d}", lang, f"q {i} {lang}?", f"p {i} {lang}.")
    data = ParallelCorpus(
        "rare", ["de", "en"], pairs, {parallel_id: n for n, parallel_id in enumerate(pairs["en"])}
    )
    plan = plan_epoch([data], "mono", 4, 0.5, seed=0, epoch=0)
    in_de = [b for b in range(len(plan)) if plan.info(b).lang == "de"]
    assert in_de and 0 not in in_de
    assert short_batches(plan, [data], 2).tolist() == in_de
    assert negative_stats(plan, [data], 1, 0, 0, sample=1)["batches_sampled"] == 1
    with pytest.raises(ValueError, match=r"negatives_per_query=2: dataset 'rare' has only 1 ids in 'de'"):
        negative_stats(plan, [data], 2, 0, 0, sample=1)
