"""``batch_stats`` on the plan's arrays equals a count over every pair of the plan's batches, for in-memory and
table corpora whose language lists differ."""

from __future__ import annotations

import json
import re
from collections import Counter
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from hybrid_ir.data.corpus import ParallelCorpus
from hybrid_ir.data.formats.load_corpus import load_corpus
from hybrid_ir.data.planning.plan import EpochPlan
from hybrid_ir.data.planning.planner import plan_epoch
from hybrid_ir.data.planning.stats import batch_stats, dataset_usage
from tests.helpers.corpora import make_corpus
from tests.helpers.jsonl import table_records, write_jsonl


def pairwise_stats(
    plan: EpochPlan, languages: Sequence[str], corpora: Sequence[ParallelCorpus]
) -> dict[str, Any]:
    """The statistics of ``batch_stats`` counted pair by pair on the plan's batches (strings, not indices)."""
    matrix = [[0] * len(languages) for _ in languages]
    kinds = {"mono": 0, "cross": 0}
    per_dataset: Counter[str] = Counter()
    per_lang = dict.fromkeys(languages, 0)
    batches_of: Counter[tuple[int, str]] = Counter()
    impure = duplicates = clashes = pairs = 0
    for info, batch in plan:
        kinds[info.kind] += 1
        per_dataset[str(info.dataset)] += 1
        if info.kind == "mono":
            per_lang[info.lang] += 1
        ids = [(ref.dataset, ref.parallel_id) for ref in batch]
        duplicates += len(ids) - len(set(ids))
        batches_of.update(set(ids))
        groups = [corpora[ref.dataset].group[ref.parallel_id] for ref in batch]
        clashes += len(groups) - len(set(groups))
        for ref in batch:
            matrix[languages.index(ref.q_lang)][languages.index(ref.p_lang)] += 1
            if info.kind == "mono":
                impure += not ref.q_lang == ref.p_lang == info.lang
            else:
                impure += ref.q_lang == ref.p_lang
            pairs += 1
    return {
        "batches": len(plan),
        "pairs": pairs,
        "kinds": kinds,
        "mono_share": kinds["mono"] / len(plan),
        "batches_per_dataset": dict(sorted(per_dataset.items())),
        "mono_batches_per_lang": per_lang,
        "languages": list(languages),
        "lang_pairs": matrix,
        "impure_pairs": impure,
        "duplicate_ids": duplicates,
        "reused_ids": sum(n > 1 for n in batches_of.values()),
        "group_clashes": clashes,
        "dropped_ids": sum(plan.dropped),
        "dataset_usage": dataset_usage(plan, corpora),
    }


@pytest.fixture
def corpora(tmp_path: Path) -> list[ParallelCorpus]:
    """Three datasets with three language lists: in memory (de, en, fr; ids in random subsets of them, groups of
    up to 3), in memory (ar, en), and a record table (en, fr of the table test's records)."""
    table = load_corpus(
        {
            "name": "table",
            "format": "jsonl",
            "path": str(write_jsonl(tmp_path / "t.jsonl", table_records(120))),
            "languages": ["en", "fr"],
        },
        None,
    )
    return [
        make_corpus(400, ["de", "en", "fr"], name="subsets", group_sizes=[1, 3, 2], subsets=True),
        make_corpus(300, ["ar", "en"], name="two", group_sizes=[1, 2]),
        table,
    ]


LANGUAGES = ["ar", "de", "en", "fr"]


@pytest.mark.parametrize("mode", ["mono", "cross", "hybrid"])
def test_the_array_statistics_equal_a_count_over_the_pairs(mode: str, corpora: list[ParallelCorpus]) -> None:
    assert [c.languages for c in corpora] == [["de", "en", "fr"], ["ar", "en"], ["en", "fr"]]
    plan = plan_epoch(corpora, mode, 4, 0.5, seed=1, epoch=2)
    assert set(plan.dataset.tolist()) == {0, 1, 2}
    stats = batch_stats(plan, LANGUAGES, corpora)
    assert stats == pairwise_stats(plan, LANGUAGES, corpora)
    wider = [*LANGUAGES, "zh"]  # a language no dataset has: its row and column stay 0
    assert batch_stats(plan, wider, corpora) == pairwise_stats(plan, wider, corpora)
    assert batch_stats(plan, LANGUAGES)["group_clashes"] is None


def test_reused_ids_of_an_epoch_of_steps_and_a_table_subset(corpora: list[ParallelCorpus]) -> None:
    """An epoch of steps repeats the ids of a small dataset; a held-out subset of the table keeps the table's
    ids as positions in the subset."""
    small = corpora[2].subset(np.arange(0, 120, 2), "table-even")
    assert small.languages == ["en", "fr"]
    plan = plan_epoch([corpora[1], small], "hybrid", 4, 0.5, seed=3, epoch=0, epoch_steps=150)
    stats = batch_stats(plan, LANGUAGES, [corpora[1], small])
    assert stats["reused_ids"] > 0
    assert stats == pairwise_stats(plan, LANGUAGES, [corpora[1], small])


def test_a_language_outside_the_list_names_the_first_such_pair(corpora: list[ParallelCorpus]) -> None:
    plan = plan_epoch(corpora, "hybrid", 4, 0.5, seed=1, epoch=0)
    first_ar = next(ref for _, batch in plan for ref in batch if "ar" in (ref.q_lang, ref.p_lang))
    with pytest.raises(
        ValueError, match=re.escape(f"pair {first_ar} uses a language outside ['de', 'en', 'fr']")
    ):
        batch_stats(plan, ["de", "en", "fr"], corpora)


def test_batch_stats_detects_violations_and_is_json(grouped):
    """A plan made by hand with a parallel_id twice in a batch, two ids of one group, impure pairs and a reused
    parallel_id."""
    parallel_ids = grouped.parallel_ids
    same_group = [
        i
        for i, parallel_id in enumerate(parallel_ids)
        if grouped.group[parallel_id] == grouped.group[parallel_ids[1]]
    ]
    assert len(same_group) >= 2
    de, en, fr = (grouped.languages.index(lang) for lang in ("de", "en", "fr"))
    plan = EpochPlan(
        [grouped],
        kind=np.array([0, 0, 1], dtype=np.int8),
        dataset=np.zeros(3, dtype=np.int32),
        lang=np.array([en, en, -1], dtype=np.int16),
        parallel_id=np.array([[0, 0], same_group[:2], [0, 9]], dtype=np.int32),
        q_lang=np.array([[en, en], [en, en], [de, fr]], dtype=np.int8),
        p_lang=np.array([[en, en], [de, en], [de, en]], dtype=np.int8),
        dropped=[len(grouped) - 4],
        drop_reasons=[{}],
    )
    stats = batch_stats(plan, grouped.languages, [grouped])
    json.dumps(stats)
    assert stats["duplicate_ids"] == 1
    assert stats["group_clashes"] == 2
    assert stats["impure_pairs"] == 2
    assert stats["reused_ids"] == 1
    assert stats["kinds"] == {"mono": 2, "cross": 1}
    assert stats["dropped_ids"] == len(grouped) - 4
    languages = grouped.languages
    assert stats["lang_pairs"][languages.index("fr")][languages.index("en")] == 1
    with pytest.raises(
        ValueError,
        match=r"pair PairRef\(dataset=0, parallel_id='grouped-000001', q_lang='en', p_lang='de', .* outside",
    ):
        batch_stats(plan, ["en"])
