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

The same schema is read from Parquet files and saved ``datasets`` datasets, with a column mapping, and every input is
read once into a cached record table (:mod:`hybrid_ir.data.table`); the checks here apply to each record.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

from hybrid_ir.data.corpus import ParallelCorpus
from hybrid_ir.data.languages import check_lang
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


def _parse_list(obj: dict[str, Any], key: str, path: Path, record: str, shown: str) -> tuple[str, ...] | None:
    """The list of non-empty strings under ``key`` (``None`` if absent), each listed once; ``shown`` is the key's
    name in errors."""
    if key not in obj:
        return None
    value = obj[key]
    what = "ids of other records" if key == "negative_ids" else "passage texts"
    if not isinstance(value, list):
        raise DataError(
            path, record, f"key {shown!r} must be a list of strings ({what}), got {type(value).__name__}"
        )
    seen: set[str] = set()
    for i, item in enumerate(value):
        if not isinstance(item, str) or not item.strip():
            got = repr(item) if isinstance(item, str) else type(item).__name__
            raise DataError(path, record, f"{shown}[{i}] must be a non-empty string ({what}), got {got}")
        if item in seen:
            raise DataError(path, record, f"{shown} lists {item!r} twice; list each once")
        seen.add(item)
    return tuple(value)


def passage_key(passage: str) -> str:
    """``passage`` with runs of whitespace as one space and no outer whitespace (the text itself when it has
    none to change, so the key shares its memory)."""
    key = " ".join(passage.split())
    return passage if key == passage else key


def check_record(
    obj: dict[str, Any], path: Path, record: str, names: Mapping[str, str] | None = None
) -> dict[str, Any]:
    """Type-check one record (a JSON object, or a row of a table with our keys); return its fields with
    ``context`` defaulted to ``""`` and the hard-negative lists (if given and non-empty) as tuples.

    ``record`` names it in errors (``"line 7"``, ``"row 7"``); ``names[key]`` is the input's own name of ``key``
    (a table's column mapping), used in the messages."""

    def name(key: str) -> str:
        return names.get(key, key) if names else key

    out: dict[str, Any] = {}
    for key in REQUIRED_KEYS:
        if key not in obj:
            required = [name(k) for k in REQUIRED_KEYS]
            raise DataError(path, record, f"missing key {name(key)!r}; required keys: {required}")
        value = obj[key]
        if not isinstance(value, str):
            raise DataError(path, record, f"key {name(key)!r} must be a string, got {type(value).__name__}")
        if not value.strip():
            raise DataError(path, record, f"key {name(key)!r} is empty; expected non-empty text")
        out[key] = value
    for key in OPTIONAL_KEYS:
        if key in obj:
            value = obj[key]
            if not isinstance(value, str):
                raise DataError(
                    path, record, f"key {name(key)!r} must be a string, got {type(value).__name__}"
                )
            if key == "passage_id" and not value.strip():
                raise DataError(path, record, f"key {name(key)!r} is empty; omit it or give a non-empty id")
            out[key] = value
    out.setdefault("context", "")
    check_lang(out["lang"], path, record)
    for key in NEGATIVE_KEYS:
        values = _parse_list(obj, key, path, record, name(key))
        if values:
            out[key] = values
    if out["id"] in out.get("negative_ids", ()):
        raise DataError(path, record, f"{name('negative_ids')} lists the record's own id {out['id']!r}")
    return out


def load_jsonl_corpus(
    path: str | Path, name: str, languages: str | Iterable[str] | None = None
) -> ParallelCorpus:
    """Read a JSONL training file (schema in the module docstring) into a :class:`ParallelCorpus` backed by its
    cached record table (:func:`~hybrid_ir.data.table.open_record_table`, built on first use).

    ``languages`` keeps only records in those languages (each must occur in the file); ``None`` keeps all.
    Raises :class:`DataError` naming the file and line for any malformed record, and for ``negative_ids``
    naming ids that no record of the file has.
    """
    # table.py reads records with this module's checks, so it is imported here, not at the top
    from hybrid_ir.data.table import TableInput, table_corpus

    return table_corpus(TableInput("jsonl", Path(path), languages=languages), name)


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
