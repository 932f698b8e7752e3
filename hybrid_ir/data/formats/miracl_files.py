"""Reader for MIRACL v1.0 dev topics, qrels and (optionally) a passage corpus.

Files (as in Anserini/Pyserini's ``tools`` repository):

* ``<root>/miracl/topics/topics.miracl-v1.0-<lang>-dev.tsv``: ``qid<TAB>query`` per line;
* ``<root>/miracl/qrels/qrels.miracl-v1.0-<lang>-dev.tsv``: TREC qrels ``qid Q0 docid rel`` (rel 0 or 1;
  0 = judged non-relevant, kept so that metrics can tell judged from unjudged);
* a corpus in MIRACL's JSONL format (``miracl-corpus-v1.0-<lang>``, optionally gzip-compressed), one
  ``{"docid": str, "title": str, "text": str}`` per line. A passage's text is ``title + " " + text``
  (just ``text`` when the title is empty), as Pyserini's MIRACL dense baselines encode it. MIRACL ships its
  large languages in several files (``docs-0.jsonl.gz``, ``docs-1.jsonl.gz``, ...): a corpus is given as a
  file, a directory (its ``*.jsonl`` and ``*.jsonl.gz`` files), a glob, or a list of these
  (:func:`corpus_files`).

See docs/data.md.
"""

from __future__ import annotations

import glob
import re
from collections.abc import Sequence
from pathlib import Path

from hybrid_ir.data.formats.textfile import parse_json_object, read_lines
from hybrid_ir.data.languages import check_lang
from hybrid_ir.utils.errors import DataError

Topics = dict[str, str]
Qrels = dict[str, dict[str, int]]


def topics_file(root: str | Path, lang: str) -> Path:
    """``<root>/miracl/topics/topics.miracl-v1.0-<lang>-dev.tsv``."""
    return Path(root) / "miracl" / "topics" / f"topics.miracl-v1.0-{lang}-dev.tsv"


def qrels_file(root: str | Path, lang: str) -> Path:
    """``<root>/miracl/qrels/qrels.miracl-v1.0-<lang>-dev.tsv``."""
    return Path(root) / "miracl" / "qrels" / f"qrels.miracl-v1.0-{lang}-dev.tsv"


def read_topics(path: str | Path) -> Topics:
    """Parse a topics TSV: ``qid<TAB>query`` per line -> ``{qid: query}``."""
    path = Path(path)
    topics: Topics = {}
    for lineno, text in read_lines(path, "MIRACL topics TSV (qid<TAB>query)"):
        qid, sep, query = text.partition("\t")
        if not sep or not qid.strip() or not query.strip():
            raise DataError(
                path, f"line {lineno}", f"expected 'qid<TAB>query' with both non-empty, got {text!r}"
            )
        if qid in topics:
            raise DataError(path, f"line {lineno}", f"duplicate query id {qid!r}")
        topics[qid] = query
    return topics


def read_qrels(path: str | Path) -> Qrels:
    """Parse TREC qrels: ``qid Q0 docid rel`` per line -> ``{qid: {docid: rel}}``."""
    path = Path(path)
    qrels: Qrels = {}
    for lineno, text in read_lines(path, "TREC qrels file (qid Q0 docid rel)"):
        fields = text.split()
        record = f"line {lineno}"
        if len(fields) != 4:
            raise DataError(
                path, record, f"expected 4 fields 'qid Q0 docid rel', got {len(fields)}: {text!r}"
            )
        qid, _, docid, rel = fields
        try:
            grade = int(rel)
        except ValueError:
            raise DataError(path, record, f"relevance {rel!r} is not an integer") from None
        by_doc = qrels.setdefault(qid, {})
        if docid in by_doc:
            raise DataError(path, record, f"duplicate judgement for query {qid!r}, document {docid!r}")
        by_doc[docid] = grade
    return qrels


CORPUS_FORMS = (
    "a JSONL file, a directory of *.jsonl[.gz] files, a glob such as docs-*.jsonl.gz, or a list of these"
)
CorpusSpec = str | Path | Sequence[str | Path]


def _natural_key(path: Path) -> list[str | int]:
    """Sort key that orders ``docs-2`` before ``docs-10``."""
    return [int(part) if part.isdigit() else part for part in re.split(r"(\d+)", str(path))]


def corpus_files(spec: CorpusSpec) -> list[Path]:
    """The corpus files of ``spec`` (see :data:`CORPUS_FORMS`), in order: the entries of a list in their order;
    within a directory or a glob, in natural order (``docs-2`` before ``docs-10``). A file named twice counts once.

    Raises:
        DataError: an entry matches no file (the message names it and the accepted forms).
    """
    entries = [spec] if isinstance(spec, str | Path) else list(spec)
    files: list[Path] = []
    for entry in entries:
        path = Path(entry)
        if path.is_file():
            found = [path]
        elif path.is_dir():
            found = [p for p in path.iterdir() if p.is_file() and p.name.endswith((".jsonl", ".jsonl.gz"))]
        else:
            found = [Path(p) for p in glob.glob(str(entry)) if Path(p).is_file()]
        if not found:
            what = (
                "directory has no *.jsonl or *.jsonl.gz file"
                if path.is_dir()
                else "not found (no such file or glob match)"
            )
            raise DataError(entry, "corpus", f"{what}; give {CORPUS_FORMS}")
        files.extend(sorted(found, key=_natural_key))
    return list(dict.fromkeys(files))


def read_corpus(spec: CorpusSpec) -> dict[str, str]:
    """Parse a MIRACL JSONL corpus, in one or several files (:func:`corpus_files`) -> ``{docid: title + " " +
    text}`` (see the module docstring). A docid may appear once in all the files together."""
    corpus: dict[str, str] = {}
    where: dict[str, str] = {}
    for path in corpus_files(spec):
        _read_corpus_file(path, corpus, where)
    return corpus


def _read_corpus_file(path: Path, corpus: dict[str, str], where: dict[str, str]) -> None:
    """Add the passages of one corpus file to ``corpus``; ``where[docid]`` records the file and line."""
    for lineno, text in read_lines(path, 'MIRACL corpus JSONL ({"docid", "title", "text"} per line)'):
        record = f"line {lineno}"
        obj = parse_json_object(text, path, lineno, ("docid", "title", "text"))
        for key in ("docid", "text"):
            if not isinstance(obj.get(key), str) or not obj[key].strip():
                raise DataError(path, record, f"key {key!r} missing or not a non-empty string")
        title = obj.get("title", "")
        if not isinstance(title, str):
            raise DataError(path, record, f"key 'title' must be a string, got {type(title).__name__}")
        docid = obj["docid"]
        if docid in corpus:
            raise DataError(path, record, f"duplicate docid {docid!r} (first at {where[docid]})")
        corpus[docid] = f"{title} {obj['text']}" if title.strip() else obj["text"]
        where[docid] = f"{path}:{lineno}"


def load_miracl(
    root: str | Path, lang: str, corpus_path: CorpusSpec | None = None
) -> tuple[Topics, Qrels, dict[str, str] | None]:
    """Load MIRACL v1.0 dev data for one language: ``(topics, qrels, corpus)``.

    ``topics[qid]`` = query text; ``qrels[qid][docid]`` = 0/1 judgement; ``corpus[docid]`` = passage text
    (from one or several files, :func:`corpus_files`), or ``None`` when ``corpus_path`` is not given. Every
    qrels query id must be a topic.
    """
    check_lang(lang, Path(root) / "miracl", "lang")
    tfile = topics_file(root, lang)
    if not tfile.is_file():
        have = sorted(p.name.split("-")[2] for p in tfile.parent.glob("topics.miracl-v1.0-*-dev.tsv"))
        raise DataError(
            tfile,
            f"miracl [{lang}]",
            f"not found under data root {Path(root)} (languages present: {have or 'none'})",
        )
    topics = read_topics(tfile)
    qfile = qrels_file(root, lang)
    qrels = read_qrels(qfile)
    unknown = sorted(set(qrels) - set(topics))
    if unknown:
        raise DataError(qfile, f"query {unknown[0]!r}", f"{len(unknown)} judged query ids are not in {tfile}")
    corpus = None if corpus_path is None else read_corpus(corpus_path)
    return topics, qrels, corpus
