"""A generic JSONL format for your own parallel training data.

One JSON object per line (UTF-8; blank lines are skipped), for example::

    {"id": "q17", "lang": "de", "question": "Wer ...?", "passage": "Der ...",
     "context": "...", "passage_id": "p5"}

Keys:

* ``id`` (str, required): parallel id; records with the same ``id`` in different languages are
  translations of one question (and its passage).
* ``lang`` (str, required): ISO 639-1 code of the question and the passage.
* ``question`` (str, required, non-empty): the query text.
* ``passage`` (str, required, non-empty): the relevant passage text.
* ``context`` (str, optional, default ``""``): text around the passage, e.g. its paragraph.
* ``passage_id`` (str, optional, non-empty): identifies the passage across languages; ids whose
  records share a ``passage_id`` are put in one group.
* ``negative_ids`` (list of str, optional): ids of *other* records whose passage is a hard negative for
  this question (parallel data: the negative exists in every language of its id), e.g. written by
  ``mine.py``. Each must be the ``id`` of a record of the file, listed once, and not the record's own id.
* ``negatives`` (list of str, optional): hard-negative passage texts in the record's language (for data
  that is not parallel), each non-empty.

Hard negatives are read into :attr:`ParallelCorpus.negative_ids` / :attr:`ParallelCorpus.negatives`
(training uses them with ``data.negatives_per_query``, see :mod:`hybrid_ir.data.negatives`). Other keys are
ignored. An ``(id, lang)`` pair may appear only once. Groups (see
:class:`~hybrid_ir.data.corpus.ParallelCorpus`) are the connected components of "same ``id``",
"same ``passage_id``" and "identical ``passage`` text" (in any language, compared with runs of
whitespace as one space; with or without a ``passage_id``, as the LAReQA loader groups identical
answer sentences): ids in one group never share a training batch, so a passage is never used as an
in-batch negative for a question it (or a translation or a copy of it) answers.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

from hybrid_ir.data.corpus import ParallelCorpus, QAPair
from hybrid_ir.data.languages import check_lang, check_langs
from hybrid_ir.data.textfile import parse_json_object, read_lines
from hybrid_ir.utils.errors import DataError
from hybrid_ir.utils.io import atomic_write

REQUIRED_KEYS = ("id", "lang", "question", "passage")
OPTIONAL_KEYS = ("context", "passage_id")
NEGATIVE_KEYS = ("negative_ids", "negatives")


def group_ids(pids: Iterable[str], clusters: Iterable[Iterable[str]]) -> dict[str, int]:
    """Union-find: merge the ids of each cluster; return ``group[pid]`` -> int.

    Every id of ``pids`` gets a group (alone if in no cluster); cluster members must be in ``pids``.
    Groups are numbered 0, 1, ... in the order of their smallest id, so the result does not depend
    on the order of ``clusters``.
    """
    parent = {pid: pid for pid in pids}

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
    for pid in sorted(parent):
        out[pid] = number.setdefault(find(pid), len(number))
    return out


def _parse_list(obj: dict[str, Any], key: str, path: Path, record: str) -> tuple[str, ...] | None:
    """The list of non-empty strings under ``key`` (``None`` if absent), each listed once."""
    if key not in obj:
        return None
    value = obj[key]
    what = "ids of other records" if key == "negative_ids" else "passage texts"
    if not isinstance(value, list):
        raise DataError(
            path, record, f"key {key!r} must be a list of strings ({what}), got {type(value).__name__}"
        )
    seen: set[str] = set()
    for i, item in enumerate(value):
        if not isinstance(item, str) or not item.strip():
            got = repr(item) if isinstance(item, str) else type(item).__name__
            raise DataError(path, record, f"{key}[{i}] must be a non-empty string ({what}), got {got}")
        if item in seen:
            raise DataError(path, record, f"{key} lists {item!r} twice; list each once")
        seen.add(item)
    return tuple(value)


def _passage_key(passage: str) -> str:
    """``passage`` with runs of whitespace as one space and no outer whitespace (the text itself when it has
    none to change, so the key shares its memory)."""
    key = " ".join(passage.split())
    return passage if key == passage else key


def _parse_record(line: str, path: Path, lineno: int) -> dict[str, Any]:
    """Parse and type-check one JSONL line; return its fields with ``context`` defaulted to ``""`` and the
    hard-negative lists (if given) as tuples."""
    record = f"line {lineno}"
    obj = parse_json_object(line, path, lineno, REQUIRED_KEYS)
    out: dict[str, Any] = {}
    for key in REQUIRED_KEYS:
        if key not in obj:
            raise DataError(path, record, f"missing key {key!r}; required keys: {list(REQUIRED_KEYS)}")
        value = obj[key]
        if not isinstance(value, str):
            raise DataError(path, record, f"key {key!r} must be a string, got {type(value).__name__}")
        if not value.strip():
            raise DataError(path, record, f"key {key!r} is empty; expected non-empty text")
        out[key] = value
    for key in OPTIONAL_KEYS:
        if key in obj:
            value = obj[key]
            if not isinstance(value, str):
                raise DataError(path, record, f"key {key!r} must be a string, got {type(value).__name__}")
            if key == "passage_id" and not value.strip():
                raise DataError(path, record, "key 'passage_id' is empty; omit it or give a non-empty id")
            out[key] = value
    out.setdefault("context", "")
    check_lang(out["lang"], path, record)
    for key in NEGATIVE_KEYS:
        values = _parse_list(obj, key, path, record)
        if values:
            out[key] = values
    if out["id"] in out.get("negative_ids", ()):
        raise DataError(path, record, f"negative_ids lists the record's own id {out['id']!r}")
    return out


def load_jsonl_corpus(
    path: str | Path, name: str, languages: str | Iterable[str] | None = None
) -> ParallelCorpus:
    """Read a JSONL training file (schema in the module docstring) into a :class:`ParallelCorpus`.

    ``languages`` keeps only records in those languages (each must occur in the file); ``None`` keeps all.
    Raises :class:`DataError` naming the file and line for any malformed record, and for ``negative_ids``
    naming ids that no record of the file has.
    """
    path = Path(path)
    wanted = None if languages is None else set(check_langs(languages, path))
    pairs: dict[str, dict[str, QAPair]] = {}
    first_line: dict[tuple[str, str], int] = {}
    passage_ids: dict[str, list[str]] = {}
    file_ids: dict[str, str] = {}  # every id of the file (all languages) -> its first string
    negative_ids: dict[str, dict[str, tuple[str, ...]]] = {}
    negatives: dict[str, dict[str, tuple[str, ...]]] = {}
    first_with_text: dict[str, str] = {}
    same_text: list[tuple[str, str]] = []
    for lineno, text in read_lines(path, "JSONL file of training records"):
        rec = _parse_record(text, path, lineno)
        key = (rec["id"], rec["lang"])
        if key in first_line:
            raise DataError(
                path,
                f"line {lineno}",
                f"duplicate (id, lang) = {key!r}, first seen on line {first_line[key]}",
            )
        first_line[key] = lineno
        file_ids.setdefault(rec["id"], rec["id"])
        if wanted is not None and rec["lang"] not in wanted:
            continue
        pairs.setdefault(rec["lang"], {})[rec["id"]] = QAPair(
            pid=rec["id"],
            lang=rec["lang"],
            question=rec["question"],
            passage=rec["passage"],
            context=rec["context"],
        )
        if "passage_id" in rec:
            passage_ids.setdefault(rec["passage_id"], []).append(rec["id"])
        if "negative_ids" in rec:
            negative_ids.setdefault(rec["lang"], {})[rec["id"]] = rec["negative_ids"]
        if "negatives" in rec:
            negatives.setdefault(rec["lang"], {})[rec["id"]] = rec["negatives"]
        text = _passage_key(rec["passage"])
        first = first_with_text.setdefault(text, rec["id"])
        if first != rec["id"]:
            same_text.append((first, rec["id"]))
    if not pairs:
        raise DataError(path, "file", "no records; expected one JSON object per line")
    if wanted is not None:
        missing = sorted(wanted - set(pairs))
        if missing:
            raise DataError(path, "languages", f"no records in {missing}; the file has {sorted(pairs)}")
    _resolve_negative_ids(negative_ids, file_ids, first_line, path)
    ids = {pid for by_pid in pairs.values() for pid in by_pid}
    return ParallelCorpus(
        name=name,
        languages=sorted(pairs),
        pairs=pairs,
        group=group_ids(ids, [*passage_ids.values(), *same_text]),
        source=str(path),
        negative_ids=negative_ids,
        negatives=negatives,
    )


def _resolve_negative_ids(
    negative_ids: dict[str, dict[str, tuple[str, ...]]],
    file_ids: dict[str, str],
    first_line: dict[tuple[str, str], int],
    path: Path,
) -> None:
    """Check that every listed negative id is an id of the file (a :class:`DataError` naming the first line
    that lists an unknown one, and the unknown ids), then share the ids' strings (less memory)."""
    unknown: dict[str, int] = {}
    for lang, by_pid in negative_ids.items():
        for pid, listed in by_pid.items():
            for nid in listed:
                if nid not in file_ids:
                    line = first_line[(pid, lang)]
                    unknown[nid] = min(line, unknown.get(nid, line))
    if unknown:
        names = sorted(unknown, key=lambda nid: (unknown[nid], nid))
        shown = ", ".join(repr(n) for n in names[:10]) + (
            f" (and {len(names) - 10} more)" if len(names) > 10 else ""
        )
        raise DataError(
            path,
            f"line {unknown[names[0]]}",
            f"negative_ids names {len(names)} id(s) that no record of the file has: {shown}; "
            "expected ids of other records of this file",
        )
    for by_pid in negative_ids.values():
        for pid, listed in by_pid.items():
            by_pid[pid] = tuple(file_ids[nid] for nid in listed)


def write_corpus_jsonl(
    corpus: ParallelCorpus,
    path: str | Path,
    extra: Mapping[tuple[str, str], Mapping[str, Any]] | None = None,
) -> int:
    """Write every record of ``corpus`` to ``path`` (atomically) in this module's schema, so that any dataset
    (e.g. a LAReQA one) can be used as JSONL; returns the number of records.

    Records come language by language (sorted), each in the corpus's order, with ``id``, ``lang``,
    ``question``, ``passage``, ``context``, ``passage_id`` = ``g<group>`` (the id's group in ``corpus.group``,
    so :func:`load_jsonl_corpus` rebuilds these groups, unless identical passage texts join groups the corpus
    kept apart), the corpus's ``negative_ids`` / ``negatives``, then the keys of ``extra[(id, lang)]``
    (which replace those of the same name).
    """
    extra = extra or {}
    count = 0

    def write(tmp: str) -> None:
        nonlocal count
        with open(tmp, "w", encoding="utf-8") as fh:
            for lang in corpus.languages:
                for pid, pair in corpus.pairs[lang].items():
                    obj: dict[str, Any] = {
                        "id": pid,
                        "lang": lang,
                        "question": pair.question,
                        "passage": pair.passage,
                        "context": pair.context,
                        "passage_id": f"g{corpus.group[pid]}",
                    }
                    for key, lists in (
                        ("negative_ids", corpus.negative_ids),
                        ("negatives", corpus.negatives),
                    ):
                        if pid in lists.get(lang, {}):
                            obj[key] = list(lists[lang][pid])
                    obj.update(extra.get((pid, lang), {}))
                    fh.write(json.dumps(obj, ensure_ascii=False) + "\n")
                    count += 1

    atomic_write(path, write)
    return count
