"""Readers for the LAReQA datasets XQuAD-R and MLQA-R (``<root>/<dataset>/<lang>.json``).

Each file is SQuAD-style JSON with sentence splits per paragraph::

    {"data": [{"title": str,
               "paragraphs": [{"context": str, "sentences": [str], "sentence_breaks": [[start, end]],
                               "qas": [{"id": str, "question": str,
                                        "answers": [{"text": str, "answer_start": int}]}]}]}]}

The answer sentence of a question is the sentence whose ``[start, end)`` span in ``sentence_breaks``
contains the (first) answer's ``answer_start``. Question ids are shared across languages.

Two views are built from the same parsed files:

* :func:`load_lareqa_corpus` -> :class:`ParallelCorpus` for training (parallel_id = question id,
  passage = answer sentence, context = its paragraph);
* :func:`load_lareqa_benchmark` -> :class:`RetrievalBenchmark` for LAReQA-style evaluation
  (pool = every sentence of every paragraph of every language).

See docs/data.md.
"""

from __future__ import annotations

import functools
import json
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from hybrid_ir.data.corpus import Candidate, ParallelCorpus, QAPair, Query, RetrievalBenchmark, group_ids
from hybrid_ir.data.languages import check_langs
from hybrid_ir.utils.errors import DataError


@dataclass(frozen=True)
class LQuestion:
    """One question of a paragraph; ``sentence`` is the index of its answer sentence in the paragraph."""

    qid: str
    text: str
    sentence: int


@dataclass(frozen=True)
class LParagraph:
    """One paragraph: position ``(article, index)`` in the file, text, sentence split and questions."""

    article: int
    index: int
    context: str
    sentences: tuple[str, ...]
    questions: tuple[LQuestion, ...]


def dataset_file(root: str | Path, dataset: str, lang: str) -> Path:
    """The path ``<root>/<dataset>/<lang>.json``."""
    return Path(root) / dataset / f"{lang}.json"


def _field(obj: Any, key: str, kind: type | tuple[type, ...], path: Path, record: str) -> Any:
    """``obj[key]`` checked to be an instance of ``kind``; a :class:`DataError` otherwise."""
    if not isinstance(obj, dict):
        raise DataError(path, record, f"expected a JSON object, got {type(obj).__name__}")
    if key not in obj:
        raise DataError(path, record, f"missing key {key!r}")
    value = obj[key]
    if not isinstance(value, kind) or isinstance(value, bool):
        want = kind.__name__ if isinstance(kind, type) else "/".join(k.__name__ for k in kind)
        raise DataError(path, record, f"key {key!r} must be {want}, got {type(value).__name__}")
    return value


def _breaks(raw: list, n_sentences: int, context: str, path: Path, record: str) -> list[tuple[int, int]]:
    """Check ``sentence_breaks``: ``n_sentences`` pairs ``[start, end]``, 0 <= start < end <= len(context)."""
    if len(raw) != n_sentences:
        raise DataError(
            path, record, f"{len(raw)} sentence_breaks for {n_sentences} sentences; expected one per sentence"
        )
    spans = []
    for i, span in enumerate(raw):
        ok = isinstance(span, list) and len(span) == 2 and all(type(x) is int for x in span)
        if not ok or not 0 <= span[0] < span[1] <= len(context):
            raise DataError(
                path,
                record,
                f"sentence_breaks[{i}] = {span!r}; expected [start, end] with 0 <= start < end <= "
                f"{len(context)} (the context length)",
            )
        spans.append((span[0], span[1]))
    return spans


def _question(qa: Any, spans: list[tuple[int, int]], path: Path, where: str) -> LQuestion:
    """Validate one ``qas`` entry and locate its answer sentence."""
    qid = _field(qa, "id", str, path, where)
    if not qid.strip():
        raise DataError(path, where, "empty question id")
    record = f"question {qid!r} ({where})"
    text = _field(qa, "question", str, path, record)
    if not text.strip():
        raise DataError(path, record, "empty question text")
    answers = _field(qa, "answers", list, path, record)
    if not answers:
        raise DataError(path, record, "empty 'answers'; expected at least one answer")
    start = _field(answers[0], "answer_start", int, path, f"{record} answers[0]")
    for i, (lo, hi) in enumerate(spans):
        if lo <= start < hi:
            return LQuestion(qid=qid, text=text, sentence=i)
    raise DataError(path, record, f"answer_start {start} lies outside every sentence span {spans}")


def _paragraph(par: Any, article: int, index: int, path: Path) -> LParagraph:
    """Validate one paragraph object."""
    record = f"data[{article}].paragraphs[{index}]"
    context = _field(par, "context", str, path, record)
    sentences = _field(par, "sentences", list, path, record)
    for i, sentence in enumerate(sentences):
        if not isinstance(sentence, str) or not sentence.strip():
            raise DataError(path, record, f"sentences[{i}] = {sentence!r}; expected non-empty text")
    spans = _breaks(_field(par, "sentence_breaks", list, path, record), len(sentences), context, path, record)
    qas = _field(par, "qas", list, path, record)
    questions = tuple(_question(qa, spans, path, f"{record}.qas[{q}]") for q, qa in enumerate(qas))
    return LParagraph(article, index, context, tuple(sentences), questions)


@functools.lru_cache(maxsize=64)
def _parse_cached(path: str, mtime_ns: int, size: int) -> tuple[LParagraph, ...]:
    """Parse a LAReQA file; cached on (path, modification time, size) so an edited file is re-read."""
    file = Path(path)
    try:
        with open(file, encoding="utf-8") as fh:
            doc = json.load(fh)
    except json.JSONDecodeError as exc:
        raise DataError(file, f"line {exc.lineno}, column {exc.colno}", f"invalid JSON: {exc.msg}") from None
    except UnicodeDecodeError as exc:
        raise DataError(file, f"byte {exc.start}", f"not valid UTF-8 ({exc.reason})") from None
    articles = _field(doc, "data", list, file, "top level")
    paragraphs = []
    seen: dict[str, str] = {}
    for a, article in enumerate(articles):
        for p, par in enumerate(_field(article, "paragraphs", list, file, f"data[{a}]")):
            parsed = _paragraph(par, a, p, file)
            for question in parsed.questions:
                where = f"data[{a}].paragraphs[{p}]"
                if question.qid in seen:
                    raise DataError(
                        file,
                        f"question {question.qid!r} ({where})",
                        f"duplicate question id, first in {seen[question.qid]}",
                    )
                seen[question.qid] = where
            paragraphs.append(parsed)
    return tuple(paragraphs)


def parse_lareqa_file(path: str | Path) -> tuple[LParagraph, ...]:
    """All paragraphs of one LAReQA file in file order, validated (cached in-process per file version)."""
    path = Path(path).resolve()
    stat = path.stat()
    return _parse_cached(str(path), stat.st_mtime_ns, stat.st_size)


def _load_files(
    root: str | Path, dataset: str, languages: str | Iterable[str]
) -> dict[str, tuple[LParagraph, ...]]:
    """Validate ``languages``; parse ``<root>/<dataset>/<lang>.json`` for each, keyed by sorted language."""
    folder = Path(root) / dataset
    langs = check_langs(languages, folder)
    if not langs:
        raise DataError(folder, "languages", "no languages requested; expected at least one ISO 639-1 code")
    parsed = {}
    for lang in langs:
        file = dataset_file(root, dataset, lang)
        if not file.is_file():
            have = sorted(f.stem for f in folder.glob("*.json")) if folder.is_dir() else []
            raise DataError(
                file,
                f"{dataset} [{lang}]",
                f"file not found under data root {Path(root)} (languages present: {have or 'none'}); "
                "set the data root with HYBRID_IR_DATA or data.root=, "
                "or fetch the file with hybrid_ir.data.formats.download.ensure_dataset",
            )
        parsed[lang] = parse_lareqa_file(file)
    return parsed


def load_lareqa_corpus(root: str | Path, dataset: str, languages: str | Iterable[str]) -> ParallelCorpus:
    """Training view of a LAReQA dataset.

    ``pairs[lang][qid]`` = (question, answer sentence, paragraph). ``group`` = connected components
    of the relation "answer sentences coincide in some language", where two answer sentences coincide
    if they are the same position (lang, article, paragraph, sentence index) or have identical text
    in one language; ids of one component never share a batch.
    """
    files = _load_files(root, dataset, languages)
    pairs: dict[str, dict[str, QAPair]] = {}
    clusters: dict[tuple, list[str]] = {}
    for lang, paragraphs in files.items():
        by_id = pairs[lang] = {}
        for par in paragraphs:
            for q in par.questions:
                sentence = par.sentences[q.sentence]
                by_id[q.qid] = QAPair(
                    parallel_id=q.qid, lang=lang, question=q.text, passage=sentence, context=par.context
                )
                clusters.setdefault((lang, par.article, par.index, q.sentence), []).append(q.qid)
                clusters.setdefault((lang, sentence), []).append(q.qid)
    ids = {parallel_id for by_id in pairs.values() for parallel_id in by_id}
    return ParallelCorpus(
        name=dataset,
        languages=sorted(pairs),
        pairs=pairs,
        group=group_ids(ids, clusters.values()),
        source=str(Path(root) / dataset),
    )


def _kept_qids(qids: Iterable[str], limit: int | None, seed: int) -> set[str]:
    """The first ``limit`` ids of a seeded permutation of the sorted ids (all ids when ``limit`` is None)."""
    ordered = sorted(set(qids))
    if limit is None:
        return set(ordered)
    if limit < 1:
        raise ValueError(f"max_queries_per_language must be >= 1 or None, got {limit}")
    perm = np.random.default_rng(seed).permutation(len(ordered))
    return {ordered[i] for i in perm[:limit]}


def load_lareqa_benchmark(
    root: str | Path,
    dataset: str,
    languages: str | Iterable[str],
    max_queries_per_language: int | None = None,
    seed: int = 0,
    with_context: bool = False,
) -> RetrievalBenchmark:
    """Evaluation view of a LAReQA dataset.

    Candidates: every sentence of every paragraph of every language (languages sorted, then file
    order), one candidate per position even when texts repeat, so the pool sizes match the
    SOURCE.md tables. Candidate text = sentence, or ``sentence + " " + context`` when ``with_context``.
    ``relevant[qid][lang]`` = candidate index of the answer sentence of ``qid`` in ``lang``.

    ``max_queries_per_language``: keep only the first N ids of a permutation (seeded by ``seed``) of
    all question ids, the same ids in every language, so each language keeps at most N queries
    (fewer where a language lacks some of those ids, as in MLQA-R). The pool stays complete.
    """
    files = _load_files(root, dataset, languages)
    keep = _kept_qids(
        (q.qid for pars in files.values() for p in pars for q in p.questions), max_queries_per_language, seed
    )
    candidates: list[Candidate] = []
    queries: list[Query] = []
    relevant: dict[str, dict[str, int]] = {}
    for lang, paragraphs in files.items():
        for par in paragraphs:
            first = len(candidates)
            for sentence in par.sentences:
                text = f"{sentence} {par.context}" if with_context else sentence
                candidates.append(Candidate(lang=lang, text=text, context=par.context))
            for q in par.questions:
                if q.qid in keep:
                    queries.append(Query(qid=q.qid, lang=lang, text=q.text))
                    relevant.setdefault(q.qid, {})[lang] = first + q.sentence
    return RetrievalBenchmark(
        name=dataset, languages=sorted(files), queries=queries, candidates=candidates, relevant=relevant
    )
