"""load_corpus, PairDataset, ResumableDataLoader and ParallelQADataModule on real XQuAD-R (3 languages)."""

from __future__ import annotations

import functools
import json
import logging
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
import torch

from hybrid_ir.data.corpus import ParallelCorpus
from hybrid_ir.data.formats.load_corpus import load_corpus
from hybrid_ir.data.planning import sampler as samplers_module
from hybrid_ir.data.planning.plan import DROP_REASONS, PairRef, check_training_length
from hybrid_ir.data.planning.sampler import HybridBatchSampler
from hybrid_ir.data.planning.split import check_val_config
from hybrid_ir.data.planning.stats import dataset_usage
from hybrid_ir.data.runtime.datamodule import ParallelQADataModule
from hybrid_ir.data.runtime.dataset import PairDataset, ResumableDataLoader
from hybrid_ir.models.tokenizer import TextTokenizer
from hybrid_ir.utils.errors import ConfigError
from hybrid_ir.utils.hardware import worker_init
from tests.helpers.fakes import CountingTokenizer
from tests.helpers.jsonl import pair_records, text_negative_records, write_jsonl
from tests.helpers.lareqa import shared_lareqa_root

LANGS = ["de", "en", "es"]
SPEC = {"name": "xquad-r", "format": "lareqa", "languages": LANGS}
BATCH = 32


def _root() -> Path:
    return shared_lareqa_root("xquad-r", langs=LANGS)


@pytest.fixture(scope="module")
def tokenizer(e5_tokenizer) -> TextTokenizer:
    return TextTokenizer(e5_tokenizer, "query: ", "passage: ", max_length=64)


@pytest.fixture(scope="module")
def corpus() -> ParallelCorpus:
    return load_corpus(SPEC, _root(), download=False)


@pytest.fixture(scope="module")
def dataset(corpus: ParallelCorpus, tokenizer: TextTokenizer) -> PairDataset:
    return PairDataset([corpus], tokenizer, use_cache=False)


@functools.lru_cache(maxsize=len(LANGS))
def _raw(lang: str) -> dict[str, Any]:
    return json.loads((_root() / "xquad-r" / f"{lang}.json").read_text(encoding="utf-8"))


def raw_pair(lang: str, qid: str) -> tuple[str, str]:
    """(question, answer sentence) of ``qid`` in ``lang``, read straight from the XQuAD-R file: the answer
    sentence is the one whose ``sentence_breaks`` span holds the answer's start."""
    for article in _raw(lang)["data"]:
        for par in article["paragraphs"]:
            for qa in par["qas"]:
                if qa["id"] == qid:
                    start = qa["answers"][0]["answer_start"]
                    spans = par["sentence_breaks"]
                    (k,) = [i for i, (a, b) in enumerate(spans) if a <= start < b]
                    return qa["question"], par["sentences"][k]
    raise KeyError(qid)


def _first_qids(n: int) -> list[str]:
    qids = [qa["id"] for art in _raw("en")["data"] for par in art["paragraphs"] for qa in par["qas"]]
    return [qids[0], qids[len(qids) // 2], qids[-1]][:n]


def test_corpus_has_the_three_languages(corpus: ParallelCorpus) -> None:
    assert corpus.name == "xquad-r"
    assert corpus.languages == LANGS
    assert len(corpus) == 1190
    assert all(len(corpus.pairs[lang]) == 1190 for lang in LANGS)


@pytest.mark.parametrize(("q_lang", "p_lang"), [("de", "es"), ("en", "en"), ("es", "en")])
def test_item_holds_exactly_that_question_and_passage(
    dataset: PairDataset, e5_tokenizer, q_lang: str, p_lang: str
) -> None:
    for parallel_id in _first_qids(3):
        item = dataset[PairRef(0, parallel_id, q_lang, p_lang)]
        question, _ = raw_pair(q_lang, parallel_id)
        _, passage = raw_pair(p_lang, parallel_id)
        expected_q = e5_tokenizer("query: " + question.strip(), truncation=True, max_length=64)["input_ids"]
        expected_p = e5_tokenizer("passage: " + passage.strip(), truncation=True, max_length=64)["input_ids"]
        assert item["q"] == expected_q
        assert item["p"] == expected_p
        assert (item["q_lang"], item["p_lang"], item["parallel_id"]) == (q_lang, p_lang, parallel_id)


def test_collate_pads_and_sets_mono(dataset: PairDataset, e5_tokenizer) -> None:
    parallel_ids = _first_qids(3)
    cross = dataset.collate(
        [
            dataset[PairRef(0, parallel_id, "de", lang)]
            for parallel_id, lang in zip(parallel_ids, LANGS, strict=True)
        ]
    )
    mono = dataset.collate([dataset[PairRef(0, parallel_id, "es", "es")] for parallel_id in parallel_ids])
    assert cross["mono"] is False and mono["mono"] is True
    assert cross["q_lang"] == ["de"] * 3 and cross["p_lang"] == LANGS and cross["parallel_id"] == parallel_ids

    items = [dataset[PairRef(0, parallel_id, "es", "es")] for parallel_id in parallel_ids]
    for side in ("q", "p"):
        ids, mask = mono[f"{side}_input_ids"], mono[f"{side}_attention_mask"]
        lengths = [len(it[side]) for it in items]
        assert ids.shape == mask.shape == (3, max(lengths))
        assert len(set(lengths)) > 1, "the items must differ in length for padding to show"
        for row, (item, n) in enumerate(zip(items, lengths, strict=True)):
            assert ids[row, :n].tolist() == item[side]
            assert mask[row].tolist() == [1] * n + [0] * (ids.shape[1] - n)
            assert (ids[row, n:] == e5_tokenizer.pad_token_id).all()


def test_transfer_moves_the_tensors_and_keeps_the_lists(dataset: PairDataset) -> None:
    batch = dataset.collate([dataset[PairRef(0, parallel_id, "es", "de")] for parallel_id in _first_qids(2)])
    moved = _datamodule().transfer_batch_to_device(batch, torch.device("meta"), 0)
    assert moved.keys() == batch.keys()
    for key, value in batch.items():
        if isinstance(value, torch.Tensor):
            assert moved[key].device.type == "meta" and moved[key].shape == value.shape
        else:
            assert moved[key] is value


def _jsonl(path: Path, question: str, passage: str) -> Path:
    records = [
        {"id": "a", "lang": "de", "question": "Wo liegt Köln?", "passage": "Köln liegt am Rhein."},
        {"id": "a", "lang": "en", "question": question, "passage": passage},
    ]
    return write_jsonl(path, records)


def test_second_dataset_is_indexed_by_ref_dataset(tokenizer: TextTokenizer, tmp_path: Path) -> None:
    first = _jsonl(tmp_path / "one.jsonl", "Where is Cologne?", "Cologne is on the Rhine.")
    second = _jsonl(tmp_path / "two.jsonl", "In which city is the cathedral?", "The cathedral is in Cologne.")
    corpora = [
        load_corpus({"name": n, "format": "jsonl", "path": str(f)}, root=None)
        for n, f in (("one", first), ("two", second))
    ]
    ds = PairDataset(corpora, tokenizer, use_cache=False)
    item = ds[PairRef(1, "a", "en", "de")]
    assert item["q"] == tokenizer(["In which city is the cathedral?"], "query")[0]
    assert item["p"] == tokenizer(["Köln liegt am Rhein."], "passage")[0]
    assert ds[PairRef(0, "a", "en", "en")]["p"] == tokenizer(["Cologne is on the Rhine."], "passage")[0]
    assert len(ds) == 2


def test_text_negatives_reach_the_batches_from_the_store_without_a_tokenizer_call(
    tmp_path: Path, e5_tokenizer, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Hard negatives given as texts are tokenised with the store at setup: playing the training loader then calls
    the tokenizer no more, and each pair's negative rows are the token ids of texts its record lists."""
    monkeypatch.setenv("HYBRID_IR_CACHE", str(tmp_path / "cache"))
    path = write_jsonl(tmp_path / "texts.jsonl", text_negative_records(8, negatives=3))
    spec = {"name": "texts", "format": "jsonl", "path": str(path)}
    dm = ParallelQADataModule([spec], mode="mono", batch_size=4, download=False, negatives_per_query=2)
    tokenizer = CountingTokenizer(e5_tokenizer, "query: ", "passage: ", max_length=32)
    dm.attach_tokenizer(tokenizer)
    dm.setup("fit")
    calls = tokenizer.calls
    batches = list(dm.train_dataloader())
    assert tokenizer.calls == calls and len(batches) == 2
    for batch in batches:
        rows = [
            row[mask.bool()].tolist()
            for row, mask in zip(batch["n_input_ids"], batch["n_attention_mask"], strict=True)
        ]
        assert len(rows) == 2 * len(batch["parallel_id"])
        for i, parallel_id in enumerate(batch["parallel_id"]):
            listed = tokenizer([f"n {parallel_id[1:]} {j}." for j in range(3)], "passage")
            assert rows[2 * i] != rows[2 * i + 1] and rows[2 * i] in listed and rows[2 * i + 1] in listed


def _loader(corpus: ParallelCorpus, dataset: PairDataset, progress=None) -> ResumableDataLoader:
    sampler = HybridBatchSampler([corpus], "hybrid", BATCH, alpha=0.5, seed=3)
    return ResumableDataLoader(dataset, batch_sampler=sampler, collate_fn=dataset.collate, progress=progress)


def _keys(batch: dict[str, Any]) -> list[tuple[str, str, str]]:
    return list(zip(batch["parallel_id"], batch["q_lang"], batch["p_lang"], strict=True))


def test_state_dict_reports_consumed_batches(corpus: ParallelCorpus, dataset: PairDataset) -> None:
    consumed = {"epoch": 0, "n": 0}
    loader = _loader(corpus, dataset, progress=lambda: (consumed["epoch"], consumed["n"]))
    n_batches = len(loader.batch_sampler)
    assert n_batches == len(loader.batch_sampler.plan(0)) > 5

    seen = []
    it = iter(loader)
    for _ in range(5):
        seen.append(_keys(next(it)))
    consumed["n"] = 3
    state = loader.state_dict()
    assert state == {"epoch": 0, "batches_yielded": 3, "seed": 3}
    assert loader.batch_sampler.batches_yielded >= 5, "the loader itself is further than what was consumed"

    consumed["n"] = n_batches
    assert loader.state_dict() == {"epoch": 1, "batches_yielded": 0, "seed": 3}


def test_loaded_state_continues_with_the_remaining_batches(
    corpus: ParallelCorpus, dataset: PairDataset
) -> None:
    reference = [_keys(b) for b in _loader(corpus, dataset)]
    assert len({k for batch in reference for k in batch}) == len(reference) * BATCH

    consumed = {"n": 0}
    loader = _loader(corpus, dataset, progress=lambda: (0, consumed["n"]))
    it = iter(loader)
    for _ in range(4):
        next(it)
    consumed["n"] = 4
    state = loader.state_dict()

    fresh = _loader(corpus, dataset)
    fresh.load_state_dict(state)
    assert [_keys(b) for b in fresh] == reference[4:]


def test_rolled_over_state_starts_the_next_epoch(corpus: ParallelCorpus, dataset: PairDataset) -> None:
    loader = _loader(corpus, dataset, progress=lambda: (0, len(loader.batch_sampler.plan(0))))
    state = loader.state_dict()
    fresh = _loader(corpus, dataset)
    fresh.load_state_dict(state)
    first = _keys(next(iter(fresh)))
    plan1 = fresh.batch_sampler.plan(1)
    assert first == [(ref.parallel_id, ref.q_lang, ref.p_lang) for ref in plan1[0][1]]
    assert first != [(ref.parallel_id, ref.q_lang, ref.p_lang) for ref in fresh.batch_sampler.plan(0)[0][1]]


def test_each_pass_plays_the_loops_epoch_from_its_first_batch(
    corpus: ParallelCorpus, dataset: PairDataset
) -> None:
    # A pass abandoned mid-epoch (limit_train_batches, a stop) must not leak into the next epoch.
    loop = {"epoch": 0}
    loader = _loader(corpus, dataset, progress=lambda: (loop["epoch"], 0))
    plans = [loader.batch_sampler.plan(e) for e in range(3)]
    it = iter(loader)
    assert [_keys(next(it)) for _ in range(2)] == [
        [(r.parallel_id, r.q_lang, r.p_lang) for r in b] for _, b in plans[0][:2]
    ]
    for epoch in (1, 2):
        loop["epoch"] = epoch
        assert [_keys(b) for b in loader] == [
            [(r.parallel_id, r.q_lang, r.p_lang) for r in b] for _, b in plans[epoch]
        ]


@pytest.mark.parametrize(
    ("max_epochs", "max_steps", "limit", "expected"),
    [(3, -1, 1.0, "sum"), (3, -1, 2, 6), (3, -1, 0.5, "half"), (3, 5, 1.0, 5), (-1, 7, 1.0, 7)],
)
def test_planned_steps_follow_the_epoch_plans(
    max_epochs: int, max_steps: int, limit: Any, expected: Any
) -> None:
    dm = _datamodule()
    sampler = dm.make_sampler()
    lengths = [len(sampler.plan(e)) for e in range(3)]
    want = {"sum": sum(lengths), "half": sum(n // 2 for n in lengths)}.get(expected, expected)
    assert dm.planned_steps(max_epochs, max_steps, limit) == want


def test_planned_steps_of_epochs_in_steps_need_no_plan(monkeypatch: pytest.MonkeyPatch) -> None:
    dm = _datamodule(epoch_steps=5)
    assert len(dm.make_sampler().plan(0)) == 5

    def refuse(*args: Any, **kwargs: Any) -> None:
        raise AssertionError("planned an epoch only to count its batches")

    monkeypatch.setattr(dm, "make_sampler", refuse)
    assert dm.planned_steps(3, -1, 1.0) == 15
    assert dm.planned_steps(3, -1, 2) == 6
    assert dm.planned_steps(3, 12, 1.0) == 12


def test_an_exhaustive_epoch_is_planned_once(monkeypatch: pytest.MonkeyPatch) -> None:
    # sampler.epoch_steps=null: counting an epoch's batches needs its plan; the checks, the schedule's step
    # count (computed more than once) and the training sampler share it.
    planned: list[int] = []
    plan_epoch = samplers_module.plan_epoch

    def counting(*args: Any) -> Any:
        planned.append(args[5])  # the epoch
        return plan_epoch(*args)

    monkeypatch.setattr(samplers_module, "plan_epoch", counting)
    dm = _datamodule()
    dm.check_plan()
    steps = dm.planned_steps(2, -1, 1.0)
    assert dm.planned_steps(2, -1, 1.0) == steps
    sampler = dm.make_sampler()
    assert steps == len(sampler.plan(0)) + len(sampler.plan(1))
    assert planned == [0, 1]
    # Counting more epochs than the samplers keep plans plans each once; the counts are kept.
    assert dm.planned_steps(4, -1, 1.0) == dm.planned_steps(4, -1, 1.0)
    assert planned == [0, 1, 2, 3]


@pytest.mark.parametrize("max_epochs", [-1, None])
def test_planned_steps_need_a_bound_with_the_config_checks_message(max_epochs: int | None) -> None:
    with pytest.raises(ConfigError, match=r"e\.g\. trainer\.max_steps=10000") as planned:
        _datamodule().planned_steps(max_epochs, -1)
    with pytest.raises(ConfigError) as checked:
        check_training_length(max_epochs, -1)
    assert str(planned.value) == str(checked.value)


def _datamodule(**kwargs: Any) -> ParallelQADataModule:
    settings: dict[str, Any] = {
        "datasets": [SPEC],
        "root": str(_root()),
        "batch_size": BATCH,
        "cache_tokens": False,
        "download": False,
        "seed": 3,
        **kwargs,
    }
    return ParallelQADataModule(**settings)


def _fake_trainer(rank: int, world: int, epoch: int, processed: int) -> SimpleNamespace:
    current = SimpleNamespace(processed=processed)
    fit_loop = SimpleNamespace(epoch_loop=SimpleNamespace(batch_progress=SimpleNamespace(current=current)))
    return SimpleNamespace(global_rank=rank, world_size=world, current_epoch=epoch, fit_loop=fit_loop)


def test_datamodule_loader_shards_and_tracks_trainer_progress(
    dataset: PairDataset, tokenizer: TextTokenizer
) -> None:
    dm = _datamodule()
    dm.attach_tokenizer(tokenizer)
    dm.setup("fit")
    assert dm.languages == LANGS
    plan = dm.make_sampler().plan(0)

    dm.trainer = _fake_trainer(rank=1, world=2, epoch=0, processed=2)
    loader = dm.train_dataloader()
    batch = next(iter(loader))
    assert _keys(batch) == [(r.parallel_id, r.q_lang, r.p_lang) for r in plan[0][1][BATCH // 2 :]]
    assert batch["q_input_ids"].shape[0] == BATCH // 2
    assert loader.state_dict() == {"epoch": 0, "batches_yielded": 2, "seed": 3}


def test_setup_needs_a_tokenizer() -> None:
    with pytest.raises(RuntimeError, match="attach_tokenizer"):
        _datamodule().setup("fit")


def test_preview_stats() -> None:
    dm = _datamodule(alpha=0.5)
    stats = dm.preview()
    assert stats["mode"] == "hybrid" and stats["alpha"] == 0.5 and stats["batch_size"] == BATCH
    assert stats["datasets"] == ["xquad-r"] and stats["languages"] == LANGS and stats["epoch"] == 0
    assert stats["pairs"] == stats["batches"] * BATCH
    assert stats["kinds"]["mono"] + stats["kinds"]["cross"] == stats["batches"]
    assert stats["kinds"]["mono"] > 0 and stats["kinds"]["cross"] > 0
    matrix = stats["lang_pairs"]
    assert sum(map(sum, matrix)) == stats["pairs"]
    assert sum(matrix[i][i] for i in range(len(LANGS))) == stats["kinds"]["mono"] * BATCH
    assert stats["impure_pairs"] == stats["duplicate_ids"] == stats["group_clashes"] == 0
    assert stats["reused_ids"] == 0
    assert stats["pairs"] + stats["dropped_ids"] == 1190

    mono_only = _datamodule(alpha=1.0).preview()
    assert mono_only["kinds"]["cross"] == 0


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"mode": "hybird"}, "mono, cross, hybrid"),
        ({"alpha": 1.5}, r"alpha .* must be in \[0, 1\]"),
        ({"batch_size": 0}, "batch_size=0: expected an integer >= 1"),
        ({"datasets": []}, "no training dataset"),
    ],
)
def test_invalid_datamodule_settings(kwargs: dict[str, Any], message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        _datamodule(**kwargs)


def test_batch_not_divisible_by_world_size() -> None:
    dm = _datamodule(batch_size=BATCH)
    with pytest.raises(ConfigError, match=r"multiple of the number of ranks \(devices × num_nodes = 3\)"):
        dm.make_sampler(rank=0, world_size=3)
    with pytest.raises(ConfigError, match=r"multiple of the number of ranks \(devices × num_nodes = 64\)"):
        dm.make_sampler(rank=0, world_size=64)
    with pytest.raises(ConfigError, match=r"= 3\) and at least that"):
        dm.check_plan(world_size=3)


def _pairs_file(path: Path, n: int, langs: list[str]) -> Path:
    """A JSONL training file with ``n`` ids ``<stem>0`` …, each in every language of ``langs``."""
    return write_jsonl(path, pair_records(n, langs, prefix=path.stem))


def test_a_dataset_that_contributes_no_batch_is_an_error(tmp_path: Path) -> None:
    """A 5-id dataset next to XQuAD-R never fills a batch of 32: it would be silently left out."""
    small = _pairs_file(tmp_path / "small.jsonl", 5, ["de", "en"])
    dm = _datamodule(datasets=[SPEC, {"name": "small", "format": "jsonl", "path": str(small)}])
    with pytest.raises(ConfigError) as info:
        dm.check_plan()
    message = str(info.value)
    assert "training dataset 'small' (data.train.1) contributes no batch of data.batch_size=32" in message
    assert "small: 5 ids, at most 5 pairs per mono batch" in message and "Lower data.batch_size" in message
    assert len(_datamodule(datasets=[SPEC, {"name": "small", "format": "jsonl", "path": str(small)}],
                           batch_size=4).check_plan()) > 0  # fmt: skip


def test_an_epoch_of_steps_may_skip_a_small_dataset_but_not_one_that_cannot_fill_a_batch(
    tmp_path: Path,
) -> None:
    small = _pairs_file(tmp_path / "small.jsonl", 40, ["de", "en"])
    dm = _datamodule(datasets=[SPEC, {"name": "small", "format": "jsonl", "path": str(small)}], epoch_steps=1)
    assert dm.check_plan().batches_per_dataset(2) == [1, 0]
    tiny = _pairs_file(tmp_path / "tiny.jsonl", 5, ["de", "en"])
    dm = _datamodule(datasets=[SPEC, {"name": "tiny", "format": "jsonl", "path": str(tiny)}], epoch_steps=1)
    with pytest.raises(ConfigError, match=r"'tiny' \(data.train.1\) contributes no batch"):
        dm.check_plan()


def test_cross_batches_from_a_single_language_dataset_fail_with_the_reason(tmp_path: Path) -> None:
    one = _pairs_file(tmp_path / "one.jsonl", 40, ["en"])
    dm = _datamodule(
        datasets=[{"name": "one", "format": "jsonl", "path": str(one)}], mode="cross", batch_size=4
    )
    with pytest.raises(
        ConfigError, match=r"at most 0 pairs per cross batch .*among its 0 ids in >= 2 of its"
    ):
        dm.check_plan()


def test_each_epoch_plan_is_logged_with_used_and_dropped_ids(caplog: pytest.LogCaptureFixture) -> None:
    dm = _datamodule(batch_size=256)
    with caplog.at_level(logging.INFO, logger="hybrid_ir.data.runtime.datamodule"):
        plan = dm.make_sampler().plan(1)
    (usage,) = dataset_usage(plan, dm.corpora)
    assert usage["dropped_ids"] > 0 and usage["used_ids"] == len(plan) * 256
    reasons = "; ".join(f"{k}: {n}, {DROP_REASONS[k]}" for k, n in usage["drop_reasons"].items() if n)
    expected = (
        f"epoch 1: {len(plan)} batches; xquad-r: {usage['used_ids']} of {usage['ids']} ids used in "
        f"{len(plan)} batches, {usage['dropped_ids']} dropped ({reasons})"
    )
    assert expected in caplog.messages
    caplog.clear()
    with caplog.at_level(logging.INFO, logger="hybrid_ir.data.runtime.datamodule"):
        dm.make_sampler(rank=1, world_size=2).plan(1)
    assert not caplog.messages, "only rank 0 logs the plan"


@pytest.mark.parametrize("env", ["LOCAL_RANK", "NODE_RANK", "RANK", "SLURM_PROCID"])
def test_only_global_rank_zero_logs_the_plan_of_its_checks(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture, env: str
) -> None:
    """Every DDP process runs the checks (epoch 0's plan) before the Trainer knows its rank: a process its launcher
    placed elsewhere than global rank 0 (Lightning's launcher: LOCAL_RANK, NODE_RANK; torchrun: RANK; SLURM:
    SLURM_PROCID) logs no plan summary, so a run's log holds each epoch's once."""
    for name in ("LOCAL_RANK", "NODE_RANK", "RANK", "SLURM_PROCID", "GROUP_RANK"):
        monkeypatch.delenv(name, raising=False)
    with caplog.at_level(logging.INFO, logger="hybrid_ir.data.runtime.datamodule"):
        _datamodule().check_plan(world_size=2)
    assert sum(m.startswith("epoch 0: ") for m in caplog.messages) == 2  # the plan and its mono share
    caplog.clear()
    monkeypatch.setenv(env, "1")
    with caplog.at_level(logging.INFO, logger="hybrid_ir.data.runtime.datamodule"):
        _datamodule().check_plan(world_size=2)
    assert not [m for m in caplog.messages if m.startswith("epoch ")]


def test_each_epoch_logs_its_realised_mono_share(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    """An English-only dataset gives mono batches only, so the realised share is logged next to alpha, per dataset."""
    english = _pairs_file(tmp_path / "english.jsonl", 320, ["en"])
    dm = _datamodule(
        datasets=[SPEC, {"name": "english", "format": "jsonl", "path": str(english)}],
        alpha=0.25,
        epoch_steps=40,
    )
    with caplog.at_level(logging.INFO, logger="hybrid_ir.data.runtime.datamodule"):
        plan = dm.make_sampler().plan(2)
    (mono_xquad, mono_english) = plan.mono_batches_per_dataset(2)
    (n_xquad, n_english) = plan.batches_per_dataset(2)
    assert len(plan) == 40 and mono_english == n_english > 0
    expected = (
        f"epoch 2: mono share {plan.mono_share():.2f} of 40 batches (sampler.alpha=0.25); "
        f"xquad-r {mono_xquad / n_xquad:.2f} of {n_xquad}; english 1.00 of {n_english} (one language)"
    )
    assert expected in caplog.messages


def test_preview_reports_the_usage_of_each_dataset() -> None:
    stats = _datamodule(batch_size=256).preview()
    (usage,) = stats["dataset_usage"]
    assert usage["name"] == "xquad-r" and usage["ids"] == 1190 and usage["batches"] == stats["batches"]
    assert usage["dropped_ids"] == stats["dropped_ids"] == sum(usage["drop_reasons"].values())


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        ({"name": "own", "format": "jsonl"}, "needs a 'path'"),
        (
            {"name": "own", "format": "csv", "path": "x.csv"},
            r"format='csv'.*\('lareqa', 'jsonl', 'parquet', 'hf'\)",
        ),
        ({"name": "xquad-r", "format": "lareqa"}, "list its languages"),
    ],
)
def test_invalid_dataset_specs(spec: dict[str, Any], message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        load_corpus(spec, root=None, download=False)


def test_batches_read_before_fitting_do_not_shift_the_first_epoch(tokenizer: TextTokenizer) -> None:
    # The benchmarks collate the first batches up front from the same DataModule, then fit.
    dm = _datamodule()
    dm.attach_tokenizer(tokenizer)
    dm.setup("fit")
    plan = dm.make_sampler().plan(0)
    early = iter(dm.train_dataloader())
    for _ in range(3):
        next(early)
    dm.trainer = _fake_trainer(rank=0, world=1, epoch=0, processed=0)
    first = next(iter(dm.train_dataloader()))
    assert _keys(first) == [(r.parallel_id, r.q_lang, r.p_lang) for r in plan[0][1]]


# ---------------------------------------------------------------- validation set (data.val)


def test_held_out_ids_never_reach_the_training_batches() -> None:
    dm = _datamodule(val={"fraction": 0.2, "seed": 1})
    train = dm.load_corpora()[0]
    val = dm.val_corpora[0]
    assert val.name == "xquad-r-val" and set(train.parallel_ids).isdisjoint(val.parallel_ids)
    assert len(train) + len(val) == 1190
    trained = {
        ref.parallel_id for epoch in range(2) for _, refs in dm.make_sampler().plan(epoch) for ref in refs
    }
    assert trained and trained.isdisjoint(val.parallel_ids)


def test_the_training_part_of_a_held_out_split_keeps_its_listed_negatives(
    tokenizer: TextTokenizer,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """With data.val.fraction, the training pairs still get the hard negatives their records list (a listed id of
    the training part, or a listed text), never a held-out id, with no warning that the data lists none; the
    training batches carry them."""
    monkeypatch.setenv("HYBRID_IR_CACHE", str(tmp_path / "cache"))
    n = 40
    records = [
        {"id": f"r{i:02d}", "lang": "en", "question": f"q {i}?", "passage": f"p {i}."}
        | (
            {"negative_ids": [f"r{(i + j) % n:02d}" for j in (1, 2, 3)]}
            if i % 2
            else {"negatives": [f"n {i}."]}
        )
        for i in range(n)
    ]
    spec = {"name": "listed", "format": "jsonl", "path": str(write_jsonl(tmp_path / "listed.jsonl", records))}
    dm = ParallelQADataModule(
        [spec], mode="mono", batch_size=4, download=False, negatives_per_query=1, val={"fraction": 0.25}
    )
    with caplog.at_level(logging.WARNING):
        stats = dm.preview()["negatives"]
    assert "lists no negative_ids or negatives" not in caplog.text
    assert stats["sources"]["listed"] > 0 and stats["sources"]["text"] > 0
    train, held = set(dm.corpora[0].parallel_ids), set(dm.val_corpora[0].parallel_ids)
    by_id = {r["id"]: r for r in records}
    chosen = [(ref, neg) for refs in dm.make_sampler() for ref in refs for neg in ref.negatives]
    assert chosen and all(neg.parallel_id not in held for _, neg in chosen)
    for ref, neg in chosen:
        if neg.source == "listed":
            assert neg.parallel_id in set(by_id[ref.parallel_id]["negative_ids"]) & train
        elif neg.source == "text":
            assert "negatives" in by_id[ref.parallel_id] and neg.position == 0
    dm.attach_tokenizer(tokenizer)
    dm.setup("fit")
    batches = list(dm.train_dataloader())
    assert batches and all(len(b["n_input_ids"]) == len(b["parallel_id"]) for b in batches)


def test_validation_batches_are_fixed_and_sharded_over_ranks(tokenizer: TextTokenizer) -> None:
    dm = _datamodule(val={"fraction": 0.2, "batch_size": 16, "mode": "cross"})
    dm.attach_tokenizer(tokenizer)
    dm.setup("fit")
    plan = dm.val_plan()
    assert len(plan) > 1 and all(info.kind == "cross" for info, _ in plan)
    assert {ref.parallel_id for _, refs in plan for ref in refs} <= set(dm.val_corpora[0].parallel_ids)
    shards = []
    for rank in range(2):
        dm._val_loader = None
        dm.trainer = _fake_trainer(rank=rank, world=2, epoch=0, processed=0)
        loader = dm.val_dataloader()
        assert dm.val_dataloader() is loader  # asked again every epoch: the same batches
        first, again = [_keys(b) for b in loader], [_keys(b) for b in loader]
        assert first == again
        shards.append(first)
    expected = [[(r.parallel_id, r.q_lang, r.p_lang) for r in refs] for _, refs in plan]
    assert [a + b for a, b in zip(*shards, strict=True)] == expected


def test_the_loaders_workers_start_with_one_thread_and_lightnings_seeding(tokenizer: TextTokenizer) -> None:
    """Both loaders give their workers :func:`~hybrid_ir.utils.hardware.worker_init` with the trainer's rank (the
    rank Lightning's own worker seeding would get)."""
    dm = _datamodule(val={"fraction": 0.2, "batch_size": 16}, num_workers=2)
    dm.attach_tokenizer(tokenizer)
    dm.setup("fit")
    dm.trainer = _fake_trainer(rank=1, world=2, epoch=0, processed=0)
    for loader in (dm.train_dataloader(), dm.val_dataloader()):
        init = loader.worker_init_fn
        assert init.func is worker_init and init.args == () and init.keywords == {"rank": 1}


def test_validation_plan_does_not_depend_on_the_training_seed_or_sampler() -> None:
    a = _datamodule(val={"fraction": 0.2}, seed=1, mode="mono")
    b = _datamodule(val={"fraction": 0.2}, seed=2, mode="cross")
    assert a.val_plan() == b.val_plan()


def test_no_validation_set_gives_no_validation_loader() -> None:
    for val in (None, {"fraction": 0.0, "datasets": []}):
        dm = _datamodule(val=val)
        assert dm.val is None and dm.val_dataloader() == []


def test_separate_validation_dataset(tmp_path: Path) -> None:
    spec = {"name": "my-val", "format": "jsonl", "path": str(_pairs_file(tmp_path / "v.jsonl", 40, LANGS))}
    dm = _datamodule(val={"datasets": [spec], "batch_size": 8})
    assert len(dm.load_corpora()[0]) == 1190  # nothing held out of the training data
    assert [c.name for c in dm.val_corpora] == ["my-val"] and len(dm.val_corpora[0]) == 40
    assert len(dm.val_plan()) > 0


@pytest.mark.parametrize(
    "val, message",
    [
        ({"fraction": 1.5}, "data.val.fraction=1.5 must be in (0, 1)"),
        ({"fraction": 0.1, "datasets": [{"name": "x"}]}, "both fraction and datasets"),
        ({"fractoin": 0.1}, "data.val.fractoin is not a validation setting"),
        ({"datasets": [{"format": "jsonl"}]}, "data.val.datasets.0 has no name"),
        (
            {"datasets": [dict(SPEC, languages=["el"])]},
            "data.val.datasets.0 ('xquad-r') is the training dataset",
        ),
        (
            {"fraction": 0.1, "mode": "both"},
            "data.val: mode 'both' is not valid; choose one of mono, cross, hybrid",
        ),
        ({"fraction": 0.1, "alpha": 2}, "data.val: alpha"),
        ({"fraction": 0.1, "passes": 0}, "data.val.passes=0: expected an integer >= 1; the sampler epochs"),
    ],
)
def test_invalid_validation_settings(val: dict[str, Any], message: str) -> None:
    with pytest.raises(ConfigError) as info:
        check_val_config(val, BATCH, [SPEC])
    assert message in str(info.value)


def test_a_validation_set_too_small_for_one_batch_is_an_error() -> None:
    dm = _datamodule(val={"fraction": 0.01, "batch_size": 64})
    with pytest.raises(ConfigError, match=r"cannot fill a batch of data.val.batch_size=64"):
        dm.check_plan()
    with pytest.raises(ConfigError, match=r"data.val.batch_size=6 is the global batch"):
        _datamodule(val={"fraction": 0.2, "batch_size": 6}).check_plan(world_size=4)


def test_several_validation_passes_are_the_sampler_epochs_one_after_the_other() -> None:
    one = _datamodule(val={"fraction": 0.2, "batch_size": 16})
    three = _datamodule(val={"fraction": 0.2, "batch_size": 16, "passes": 3})
    plan = three.val_plan()
    one.load_corpora()
    sampler = HybridBatchSampler(one.val_corpora, "hybrid", 16, 0.5, 0)
    assert list(plan) == [batch for epoch in range(3) for batch in sampler.plan(epoch)]
    assert list(plan)[: len(one.val_plan())] == list(one.val_plan())
    used = {ref.parallel_id for _, refs in plan for ref in refs}
    assert plan.dropped == [len(three.val_corpora[0]) - len(used)]
    assert plan.dropped[0] < one.val_plan().dropped[0]  # more passes use more of the held-out ids


def test_preview_summarises_the_validation_batches() -> None:
    stats = _datamodule(val={"fraction": 0.2, "batch_size": 16, "passes": 2}).preview()
    val = stats["validation"]
    assert val["datasets"] == ["xquad-r-val"] and val["passes"] == 2 and val["fraction"] == 0.2
    assert val["pairs"] == val["batches"] * 16 and val["group_clashes"] == 0
    assert val["dataset_usage"][0]["ids"] + stats["dataset_usage"][0]["ids"] == 1190
    assert "validation" not in _datamodule().preview()
