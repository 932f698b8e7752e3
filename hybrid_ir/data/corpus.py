"""Data structures shared by the loaders, the samplers and the evaluation.

Two views of a parallel QA dataset:

* :class:`ParallelCorpus` (training): question/passage pairs keyed by a *parallel id* ``parallel_id``;
  the same ``parallel_id`` in several languages means the same question (and its answer passage)
  translated. ``group[parallel_id]`` clusters ids whose answer passages coincide in some language (in
  LAReQA data several questions share one answer sentence), so a batch never holds two pairs
  whose passages are the same or translations of each other. Its integer view
  :attr:`ParallelCorpus.arrays` (:class:`CorpusArrays`), built once per corpus, is what the batch
  planner works on. Built from dicts (the LAReQA loader, tests) it holds its pairs in memory; read from a
  training input it is a :class:`~hybrid_ir.data.formats.table_corpus.TableCorpus` over a memory-mapped record table,
  with the same accessors.
* :class:`RetrievalBenchmark` (evaluation): LAReQA-style queries, a candidate pool of every sentence
  of every context in every language, and for each query id the relevant candidate per language.

See docs/data.md.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable
from dataclasses import dataclass, field
from functools import cached_property

import numpy as np
import pyarrow as pa

# ids hashed at once by :meth:`ParallelCorpus.plan_key`
PLAN_KEY_CHUNK = 65536


@dataclass(frozen=True)
class QAPair:
    """One question and its relevant passage in one language."""

    parallel_id: str
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
        pairs: ``pairs[lang][parallel_id]`` -> :class:`QAPair`.
        group: ``group[parallel_id]`` -> int; ids in one group must not share a batch.
        source: where the data was read from (for messages).
        negative_ids: ``negative_ids[lang][parallel_id]`` -> ids of other records whose passage is a hard negative
            for ``parallel_id``'s question in ``lang`` (only records that list any; the strings are the ids' own).
        negatives: ``negatives[lang][parallel_id]`` -> hard-negative passage texts in ``lang`` (only records that
            list any).
    """

    name: str
    languages: list[str]
    pairs: dict[str, dict[str, QAPair]]
    group: dict[str, int]
    source: str = ""
    negative_ids: dict[str, dict[str, tuple[str, ...]]] = field(default_factory=dict)
    negatives: dict[str, dict[str, tuple[str, ...]]] = field(default_factory=dict)
    parallel_ids: list[str] = field(init=False)

    def __post_init__(self) -> None:
        ids: set[str] = set()
        for by_id in self.pairs.values():
            ids.update(by_id)
        self.parallel_ids = sorted(ids)

    def __len__(self) -> int:
        return len(self.parallel_ids)

    @cached_property
    def index_of(self) -> dict[str, int]:
        """``index_of[parallel_id]`` -> the position of ``parallel_id`` in :attr:`parallel_ids` (built on first use and
        kept)."""
        return {parallel_id: i for i, parallel_id in enumerate(self.parallel_ids)}

    @cached_property
    def arrays(self) -> CorpusArrays:
        """The integer view of this corpus, built on first use and kept (the corpus must not change after)."""
        return CorpusArrays.of(self)

    def text_rows(self) -> tuple[pa.Table, np.ndarray]:
        """The texts as a table with ``question``, ``passage`` and ``negatives`` (the listed negative texts, null
        for none) columns and ``rows[i, l]``, the row of ``parallel_ids[i]`` in ``languages[l]`` (``-1`` where
        absent): what the token store tokenises."""
        index = self.index_of
        rows = np.full((len(self.parallel_ids), len(self.languages)), -1, dtype=np.int64)
        questions: list[str] = []
        passages: list[str] = []
        negatives: list[list[str] | None] = []
        for col, lang in enumerate(self.languages):
            listed = self.negatives.get(lang, {})
            for parallel_id, pair in self.pairs.get(lang, {}).items():
                rows[index[parallel_id], col] = len(questions)
                questions.append(pair.question)
                passages.append(pair.passage)
                negatives.append(list(listed.get(parallel_id, ())) or None)
        texts = {
            "question": pa.array(questions, pa.string()),
            "passage": pa.array(passages, pa.string()),
            "negatives": pa.array(negatives, pa.list_(pa.string())),
        }
        return pa.table(texts), rows

    def content_key(self) -> str:
        """A hash of the corpus's languages and every id with its texts and listed negative texts (what a token
        store depends on)."""
        digest = hashlib.sha256(json.dumps(self.languages).encode())
        for parallel_id in self.parallel_ids:
            digest.update(f"\0{parallel_id}".encode())
            for lang in self.languages:
                pair = self.pairs[lang].get(parallel_id)
                if pair is not None:
                    digest.update(f"\1{lang}\1{pair.question}\1{pair.passage}".encode())
                    for text in self.negatives.get(lang, {}).get(parallel_id, ()):
                        digest.update(f"\2{text}".encode())
        return digest.hexdigest()[:24]

    def plan_key(self) -> str:
        """A hash of what the batch planner reads of the corpus: its languages, ids, the languages of every id and
        the answer groups (a resume checks that its batch plan is the checkpoint's)."""
        arrays = self.arrays
        digest = hashlib.sha256(json.dumps(self.languages).encode())
        for start in range(0, len(self.parallel_ids), PLAN_KEY_CHUNK):
            digest.update("\0".join(self.parallel_ids[start : start + PLAN_KEY_CHUNK]).encode() + b"\1")
        for array in (arrays.group, arrays.has_lang):
            digest.update(np.ascontiguousarray(array).tobytes())
        return digest.hexdigest()[:24]

    def subset(self, index: np.ndarray, name: str) -> ParallelCorpus:
        """The corpus limited to the ids at positions ``index`` of :attr:`parallel_ids` (every language), named
        ``name``; languages left without an id are dropped.

        The kept ids keep their hard negatives: their ``negatives`` texts as they are, their ``negative_ids``
        limited to the ids the subset keeps (an id left out is no negative here: the training part of
        :func:`~hybrid_ir.data.planning.split.hold_out` never trains on a validation passage as a negative); a
        record whose listed ids are all left out lists none."""
        keep = {self.parallel_ids[i] for i in np.asarray(index).tolist()}
        pairs = {
            lang: {parallel_id: pair for parallel_id, pair in by_id.items() if parallel_id in keep}
            for lang, by_id in self.pairs.items()
        }
        pairs = {lang: by_id for lang, by_id in pairs.items() if by_id}
        return ParallelCorpus(
            name=name,
            languages=sorted(pairs),
            pairs=pairs,
            group={parallel_id: g for parallel_id, g in self.group.items() if parallel_id in keep},
            source=self.source,
            negative_ids=_kept_lists(self.negative_ids, keep, keep),
            negatives=_kept_lists(self.negatives, keep),
        )


def _kept_lists(
    listed: dict[str, dict[str, tuple[str, ...]]], keep: set[str], among: set[str] | None = None
) -> dict[str, dict[str, tuple[str, ...]]]:
    """The lists of ``listed`` (``lang -> parallel_id -> values``) of the ids in ``keep``, each limited to the
    values in ``among`` (``None``: all); lists left empty, and languages left without one, are dropped."""
    out: dict[str, dict[str, tuple[str, ...]]] = {}
    for lang, by_id in listed.items():
        for parallel_id, values in by_id.items():
            if parallel_id in keep:
                kept = values if among is None else tuple(v for v in values if v in among)
                if kept:
                    out.setdefault(lang, {})[parallel_id] = kept
    return out


@dataclass(frozen=True)
class CorpusArrays:
    """A :class:`ParallelCorpus` as integer arrays indexed by parallel_id index ``i`` (position in
    ``corpus.parallel_ids``).

    Attributes:
        group: ``group[i]`` -> group number (int64) of ``parallel_ids[i]``; equal numbers must not share a batch.
        has_lang: ``has_lang[i, l]`` -> whether ``parallel_ids[i]`` exists in ``languages[l]`` (bool, ids x languages).
        n_langs: ``n_langs[i]`` -> number of languages of ``parallel_ids[i]`` (int8).
    """

    group: np.ndarray
    has_lang: np.ndarray
    n_langs: np.ndarray

    @cached_property
    def _by_group(self) -> tuple[np.ndarray, np.ndarray]:
        """The parallel_id indices ordered by group, and their groups in that order (sorted once, on first use)."""
        order = np.argsort(self.group, kind="stable")
        return order, self.group[order]

    def members(self, groups: np.ndarray) -> np.ndarray:
        """The parallel_id indices whose group is one of ``groups`` (distinct group numbers), without scanning every
        id."""
        order, sorted_groups = self._by_group
        lo = np.searchsorted(sorted_groups, groups, side="left").tolist()
        hi = np.searchsorted(sorted_groups, groups, side="right").tolist()
        return np.concatenate([order[a:b] for a, b in zip(lo, hi, strict=True)] or [order[:0]])

    @classmethod
    def of(cls, corpus: ParallelCorpus) -> CorpusArrays:
        """Build the view; raises ValueError naming the corpus when a parallel_id has no entry in ``corpus.group``."""
        index = corpus.index_of
        has_lang = np.zeros((len(corpus.parallel_ids), len(corpus.languages)), dtype=bool)
        for col, lang in enumerate(corpus.languages):
            rows = np.fromiter(
                (index[parallel_id] for parallel_id in corpus.pairs.get(lang, ())), dtype=np.int64
            )
            has_lang[rows, col] = True
        missing = next(
            (parallel_id for parallel_id in corpus.parallel_ids if parallel_id not in corpus.group), None
        )
        if missing is not None:
            raise ValueError(f"corpus {corpus.name!r}: parallel_id {missing!r} has no entry in corpus.group")
        group = np.fromiter(
            (corpus.group[parallel_id] for parallel_id in corpus.parallel_ids),
            dtype=np.int64,
            count=len(corpus.parallel_ids),
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


def group_ids(parallel_ids: Iterable[str], clusters: Iterable[Iterable[str]]) -> dict[str, int]:
    """Union-find: merge the ids of each cluster; return ``group[parallel_id]`` -> int.

    Every id of ``parallel_ids`` gets a group (alone if in no cluster); cluster members must be in ``parallel_ids``.
    Groups are numbered 0, 1, ... in the order of their smallest id, so the result does not depend
    on the order of ``clusters``.
    """
    parent = {parallel_id: parallel_id for parallel_id in parallel_ids}

    def find(x: str) -> str:
        root = x
        while parent[root] != root:
            root = parent[root]
        while parent[x] != root:
            parent[x], x = root, parent[x]
        return root

    for cluster in clusters:
        members = iter(cluster)
        first = next(members, None)
        if first is None:
            continue
        a = find(first)
        for other in members:
            b = find(other)
            if a != b:
                if b < a:
                    a, b = b, a
                parent[b] = a
    number: dict[str, int] = {}
    out: dict[str, int] = {}
    for parallel_id in sorted(parent):
        out[parallel_id] = number.setdefault(find(parallel_id), len(number))
    return out
