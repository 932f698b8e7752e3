"""Generated and real corpora shared by the planner and sampler tests (built once per test module)."""

from __future__ import annotations

import pytest

from hybrid_ir.data.corpus import ParallelCorpus
from hybrid_ir.data.formats.lareqa_files import load_lareqa_corpus
from tests.helpers.corpora import make_corpus
from tests.helpers.lareqa import shared_lareqa_root

NINE = ["ar", "de", "en", "es", "hi", "ru", "th", "tr", "zh"]
MLQA_LANGS = ["ar", "de", "en", "es", "hi", "vi", "zh"]


@pytest.fixture(scope="module")
def full4() -> ParallelCorpus:
    """12000 ids, each in all of de, en, es, fr, each its own group."""
    return make_corpus(12000, ["de", "en", "es", "fr"], name="full4")


@pytest.fixture(scope="module")
def grouped() -> ParallelCorpus:
    """3000 ids in de, en, fr, in answer groups of 1 to 6 ids."""
    return make_corpus(3000, ["de", "en", "fr"], name="grouped", group_sizes=[1, 3, 2, 6, 1, 4])


@pytest.fixture(scope="module")
def sparse() -> ParallelCorpus:
    """MLQA-R-like: each parallel_id exists in a random subset of the languages (some in only one)."""
    return make_corpus(3000, ["ar", "de", "en", "hi"], name="sparse", group_sizes=[1, 2, 3], subsets=True)


@pytest.fixture(scope="module")
def xquad() -> ParallelCorpus:
    """The real XQuAD-R in nine languages (skipped without the shared data)."""
    return load_lareqa_corpus(shared_lareqa_root("xquad-r"), "xquad-r", NINE)


@pytest.fixture(scope="module")
def mlqa() -> ParallelCorpus:
    """The real MLQA-R (skipped without the shared data)."""
    return load_lareqa_corpus(shared_lareqa_root("mlqa-r"), "mlqa-r", MLQA_LANGS)
