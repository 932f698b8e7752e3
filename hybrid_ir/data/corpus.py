"""Data structures shared by the loaders, the samplers and the evaluation.

Two views of a parallel QA dataset:

* :class:`ParallelCorpus` (training): question/passage pairs keyed by a *parallel id* ``pid``;
  the same ``pid`` in several languages means the same question (and its answer passage)
  translated. ``group[pid]`` clusters ids whose answer passages coincide in some language (in
  LAReQA data several questions share one answer sentence), so a batch never holds two pairs
  whose passages are the same or translations of each other. Its integer view
  :attr:`ParallelCorpus.arrays` (:class:`CorpusArrays`), built once per corpus, is what the batch
  planner works on.
* :class:`RetrievalBenchmark` (evaluation): LAReQA-style queries, a candidate pool of every sentence
  of every context in every language, and for each query id the relevant candidate per language.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from functools import cached_property

import numpy as np


@dataclass(frozen=True)
class QAPair:
    """One question and its relevant passage in one language."""

    pid: str
    lang: str
    question: str
    passage: str
    context: str = ""


@dataclass
class ParallelCorpus:
    """Training pairs of one dataset.

    Attributes:
        name: dataset name (e.g. ``xquad-r``).
        languages: the languages used, sorted.
        pairs: ``pairs[lang][pid]`` -> :class:`QAPair`.
        group: ``group[pid]`` -> int; ids in one group must not share a batch.
        source: where the data was read from (for messages).
        negative_ids: ``negative_ids[lang][pid]`` -> ids of other records whose passage is a hard negative
            for ``pid``'s question in ``lang`` (only records that list any; the strings are the ids' own).
        negatives: ``negatives[lang][pid]`` -> hard-negative passage texts in ``lang`` (only records that
            list any).
    """

    name: str
    languages: list[str]
    pairs: dict[str, dict[str, QAPair]]
    group: dict[str, int]
    source: str = ""
    negative_ids: dict[str, dict[str, tuple[str, ...]]] = field(default_factory=dict)
    negatives: dict[str, dict[str, tuple[str, ...]]] = field(default_factory=dict)
    pids: list[str] = field(init=False)

    def __post_init__(self) -> None:
        ids: set[str] = set()
        for by_pid in self.pairs.values():
            ids.update(by_pid)
        self.pids = sorted(ids)

    def __len__(self) -> int:
        return len(self.pids)

    def langs_of(self, pid: str) -> list[str]:
        """The languages (sorted) in which ``pid`` exists."""
        return [lang for lang in self.languages if pid in self.pairs[lang]]

    @cached_property
    def index_of(self) -> dict[str, int]:
        """``index_of[pid]`` -> the position of ``pid`` in :attr:`pids` (built on first use and kept)."""
        return {pid: i for i, pid in enumerate(self.pids)}

    @cached_property
    def arrays(self) -> CorpusArrays:
        """The integer view of this corpus, built on first use and kept (the corpus must not change after)."""
        return CorpusArrays.of(self)


@dataclass(frozen=True)
class CorpusArrays:
    """A :class:`ParallelCorpus` as integer arrays indexed by pid index ``i`` (position in ``corpus.pids``).

    Attributes:
        group: ``group[i]`` -> group number (int64) of ``pids[i]``; equal numbers must not share a batch.
        has_lang: ``has_lang[i, l]`` -> whether ``pids[i]`` exists in ``languages[l]`` (bool, ids x languages).
        n_langs: ``n_langs[i]`` -> number of languages of ``pids[i]`` (int8).
    """

    group: np.ndarray
    has_lang: np.ndarray
    n_langs: np.ndarray

    @classmethod
    def of(cls, corpus: ParallelCorpus) -> CorpusArrays:
        """Build the view; raises ValueError naming the corpus when a pid has no entry in ``corpus.group``."""
        index = corpus.index_of
        has_lang = np.zeros((len(corpus.pids), len(corpus.languages)), dtype=bool)
        for col, lang in enumerate(corpus.languages):
            rows = np.fromiter((index[pid] for pid in corpus.pairs.get(lang, ())), dtype=np.int64)
            has_lang[rows, col] = True
        missing = next((pid for pid in corpus.pids if pid not in corpus.group), None)
        if missing is not None:
            raise ValueError(f"corpus {corpus.name!r}: pid {missing!r} has no entry in corpus.group")
        group = np.fromiter(
            (corpus.group[pid] for pid in corpus.pids), dtype=np.int64, count=len(corpus.pids)
        )
        return cls(group=group, has_lang=has_lang, n_langs=has_lang.sum(axis=1, dtype=np.int8))


@dataclass(frozen=True)
class Candidate:
    """One retrieval candidate (a sentence of a context paragraph) in one language."""

    lang: str
    text: str
    context: str = ""


@dataclass(frozen=True)
class Query:
    """One question. ``qid`` is the parallel id shared by its translations."""

    qid: str
    lang: str
    text: str


@dataclass
class RetrievalBenchmark:
    """A LAReQA-style retrieval benchmark.

    Attributes:
        name: dataset name (e.g. ``mlqa-r``).
        languages: languages, sorted.
        queries: all questions of all languages.
        candidates: the pool: every sentence of every context in every language.
        relevant: ``relevant[qid][lang]`` -> index into ``candidates`` of the answer sentence of ``qid``
            in ``lang`` (only for languages where ``qid`` exists).
    """

    name: str
    languages: list[str]
    queries: list[Query]
    candidates: list[Candidate]
    relevant: dict[str, dict[str, int]]
