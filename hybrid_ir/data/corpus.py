"""Data structures shared by the loaders, the samplers and the evaluation.

Two views of a parallel QA dataset:

* :class:`ParallelCorpus` (training): question/passage pairs keyed by a *parallel id* ``pid``;
  the same ``pid`` in several languages means the same question (and its answer passage)
  translated. ``group[pid]`` clusters ids whose answer passages coincide in some language (in
  LAReQA data several questions share one answer sentence), so a batch never holds two pairs
  whose passages are the same or translations of each other. Its integer view
  :attr:`ParallelCorpus.arrays` (:class:`CorpusArrays`), built once per corpus, is what the batch
  planner works on. Built from dicts (the LAReQA loader, tests) it holds its pairs in memory; read from a
  training input it is a :class:`~hybrid_ir.data.table.TableCorpus` over a memory-mapped record table, with the
  same accessors.
* :class:`RetrievalBenchmark` (evaluation): LAReQA-style queries, a candidate pool of every sentence
  of every context in every language, and for each query id the relevant candidate per language.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from functools import cached_property

import numpy as np
import pyarrow as pa

# ids hashed at once by :meth:`ParallelCorpus.plan_key`
PLAN_KEY_CHUNK = 65536


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

    def text_rows(self) -> tuple[pa.Table, np.ndarray]:
        """The texts as a table with ``question`` and ``passage`` columns and ``rows[i, l]``, the row of ``pids[i]``
        in ``languages[l]`` (``-1`` where absent): what the token store tokenises."""
        index = self.index_of
        rows = np.full((len(self.pids), len(self.languages)), -1, dtype=np.int64)
        questions: list[str] = []
        passages: list[str] = []
        for col, lang in enumerate(self.languages):
            for pid, pair in self.pairs.get(lang, {}).items():
                rows[index[pid], col] = len(questions)
                questions.append(pair.question)
                passages.append(pair.passage)
        texts = {"question": pa.array(questions, pa.string()), "passage": pa.array(passages, pa.string())}
        return pa.table(texts), rows

    def content_key(self) -> str:
        """A hash of the corpus's languages and every id with its texts (what a token store depends on)."""
        digest = hashlib.sha256(json.dumps(self.languages).encode())
        for pid in self.pids:
            digest.update(f"\0{pid}".encode())
            for lang in self.languages:
                pair = self.pairs[lang].get(pid)
                if pair is not None:
                    digest.update(f"\1{lang}\1{pair.question}\1{pair.passage}".encode())
        return digest.hexdigest()[:24]

    def plan_key(self) -> str:
        """A hash of what the batch planner reads of the corpus: its languages, ids, the languages of every id and
        the answer groups (a resume checks that its batch plan is the checkpoint's)."""
        arrays = self.arrays
        digest = hashlib.sha256(json.dumps(self.languages).encode())
        for start in range(0, len(self.pids), PLAN_KEY_CHUNK):
            digest.update("\0".join(self.pids[start : start + PLAN_KEY_CHUNK]).encode() + b"\1")
        for array in (arrays.group, arrays.has_lang):
            digest.update(np.ascontiguousarray(array).tobytes())
        return digest.hexdigest()[:24]

    def subset(self, index: np.ndarray, name: str) -> ParallelCorpus:
        """The corpus limited to the ids at positions ``index`` of :attr:`pids` (every language), named ``name``;
        languages left without an id are dropped, and so are the hard negatives."""
        keep = {self.pids[i] for i in np.asarray(index).tolist()}
        pairs = {
            lang: {pid: pair for pid, pair in by_pid.items() if pid in keep}
            for lang, by_pid in self.pairs.items()
        }
        pairs = {lang: by_pid for lang, by_pid in pairs.items() if by_pid}
        return ParallelCorpus(
            name=name,
            languages=sorted(pairs),
            pairs=pairs,
            group={pid: g for pid, g in self.group.items() if pid in keep},
            source=self.source,
        )


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

    @cached_property
    def _by_group(self) -> tuple[np.ndarray, np.ndarray]:
        """The pid indices ordered by group, and their groups in that order (sorted once, on first use)."""
        order = np.argsort(self.group, kind="stable")
        return order, self.group[order]

    def members(self, groups: np.ndarray) -> np.ndarray:
        """The pid indices whose group is one of ``groups`` (distinct group numbers), without scanning every id."""
        order, sorted_groups = self._by_group
        lo = np.searchsorted(sorted_groups, groups, side="left").tolist()
        hi = np.searchsorted(sorted_groups, groups, side="right").tolist()
        return np.concatenate([order[a:b] for a, b in zip(lo, hi, strict=True)] or [order[:0]])

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
