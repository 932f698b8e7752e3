"""subset_pool: a smaller LAReQA pool with whole answer paragraphs, relevance remapped, deterministic."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import pytest

from hybrid_ir.data.formats.lareqa_files import dataset_file, load_lareqa_benchmark, parse_lareqa_file
from hybrid_ir.evaluation.subset import subset_pool
from tests.helpers.lareqa import shared_lareqa_root

LANGS = ["ar", "de", "en", "es", "hi", "vi", "zh"]


@pytest.fixture(scope="module")
def root() -> Path:
    return shared_lareqa_root("mlqa-r")


@pytest.fixture(scope="module")
def bench(root):
    return load_lareqa_benchmark(root, "mlqa-r", LANGS)


def test_relevance_points_at_the_same_sentences(bench):
    sub = subset_pool(bench, 25, seed=3)
    assert len(sub.relevant) == 25
    assert set(sub.relevant) <= set(bench.relevant)
    for qid, per_lang in sub.relevant.items():
        assert per_lang.keys() == bench.relevant[qid].keys()
        for lang, index in per_lang.items():
            old = bench.candidates[bench.relevant[qid][lang]]
            new = sub.candidates[index]
            assert (new.lang, new.text, new.context) == (old.lang, old.text, old.context)


def test_queries_are_those_of_the_kept_ids(bench):
    sub = subset_pool(bench, 25, seed=3)
    expected = [(q.qid, q.lang, q.text) for q in bench.queries if q.qid in sub.relevant]
    assert [(q.qid, q.lang, q.text) for q in sub.queries] == expected
    assert {q.qid for q in sub.queries} == set(sub.relevant)
    assert sub.languages == bench.languages


def test_pool_holds_every_sentence_of_the_answer_paragraphs(root, bench):
    """Counted from the raw files: per language, the sentences of the paragraphs that hold a kept question."""
    sub = subset_pool(bench, 25, seed=3)
    expected: Counter[tuple[str, str]] = Counter()
    for lang in LANGS:
        for par in parse_lareqa_file(dataset_file(root, "mlqa-r", lang)):
            if any(q.qid in sub.relevant for q in par.questions):
                expected.update((lang, sentence) for sentence in par.sentences)
    assert Counter((c.lang, c.text) for c in sub.candidates) == expected
    assert len(sub.candidates) < len(bench.candidates)


def test_deterministic_and_seeded(bench):
    a, b = subset_pool(bench, 10, seed=1), subset_pool(bench, 10, seed=1)
    assert a.relevant == b.relevant and a.candidates == b.candidates and a.queries == b.queries
    assert subset_pool(bench, 10, seed=2).relevant.keys() != a.relevant.keys()


def test_full_benchmark_unchanged_when_asking_for_all_ids(bench):
    assert subset_pool(bench, len(bench.relevant)) is bench
    assert subset_pool(bench, 10**9) is bench


def test_rejects_non_positive(bench):
    with pytest.raises(ValueError, match="max_qids"):
        subset_pool(bench, 0)
