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

Other keys are ignored. An ``(id, lang)`` pair may appear only once. Groups (see
:class:`~hybrid_ir.data.corpus.ParallelCorpus`) are the connected components of "same ``id``",
"same ``passage_id``" and "identical ``passage`` text" (in any language, compared with runs of
whitespace as one space; with or without a ``passage_id``, as the LAReQA loader groups identical
answer sentences): ids in one group never share a training batch, so a passage is never used as an
in-batch negative for a question it (or a translation or a copy of it) answers.
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path

from hybrid_ir.data.corpus import ParallelCorpus, QAPair
from hybrid_ir.data.languages import check_lang, check_langs
from hybrid_ir.data.textfile import parse_json_object, read_lines
from hybrid_ir.utils.errors import DataError

REQUIRED_KEYS = ("id", "lang", "question", "passage")
OPTIONAL_KEYS = ("context", "passage_id")


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


def _passage_key(passage: str) -> str:
    """``passage`` with runs of whitespace as one space and no outer whitespace (the text itself when it has
    none to change, so the key shares its memory)."""
    key = " ".join(passage.split())
    return passage if key == passage else key


def _parse_record(line: str, path: Path, lineno: int) -> dict[str, str]:
    """Parse and type-check one JSONL line; return its fields with ``context`` defaulted to ``""``."""
    record = f"line {lineno}"
    obj = parse_json_object(line, path, lineno, REQUIRED_KEYS)
    out: dict[str, str] = {}
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
    return out


def load_jsonl_corpus(
    path: str | Path, name: str, languages: str | Iterable[str] | None = None
) -> ParallelCorpus:
    """Read a JSONL training file (schema in the module docstring) into a :class:`ParallelCorpus`.

    ``languages`` keeps only records in those languages (each must occur in the file); ``None`` keeps all.
    Raises :class:`DataError` naming the file and line for any malformed record.
    """
    path = Path(path)
    wanted = None if languages is None else set(check_langs(languages, path))
    pairs: dict[str, dict[str, QAPair]] = {}
    first_line: dict[tuple[str, str], int] = {}
    passage_ids: dict[str, list[str]] = {}
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
    ids = {pid for by_pid in pairs.values() for pid in by_pid}
    return ParallelCorpus(
        name=name,
        languages=sorted(pairs),
        pairs=pairs,
        group=group_ids(ids, [*passage_ids.values(), *same_text]),
        source=str(path),
    )
