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
(training uses them with ``data.negatives_per_query``, see :mod:`hybrid_ir.data.planning.negatives`). Other keys are
ignored. An ``(id, lang)`` pair may appear only once. Groups (see
:class:`~hybrid_ir.data.corpus.ParallelCorpus`) are the connected components of "same ``id``",
"same ``passage_id``" and "identical ``passage`` text" (in any language, compared with runs of
whitespace as one space; with or without a ``passage_id``, as the LAReQA loader groups identical
answer sentences): ids in one group never share a training batch, so a passage is never used as an
in-batch negative for a question it (or a translation or a copy of it) answers.

The same schema is read from Parquet files and saved ``datasets`` datasets, with a column mapping, and every input is
read once into a cached record table (:mod:`hybrid_ir.data.formats.record_table`); the checks here apply to each record.

See docs/data.md.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

from hybrid_ir.data.corpus import ParallelCorpus
from hybrid_ir.utils.io import atomic_write


def load_jsonl_corpus(
    path: str | Path, name: str, languages: str | Iterable[str] | None = None
) -> ParallelCorpus:
    """Read a JSONL training file (schema in the module docstring) into a :class:`ParallelCorpus` backed by its
    cached record table (:func:`~hybrid_ir.data.formats.record_table.open_record_table`, built on first use).

    ``languages`` keeps only records in those languages (each must occur in the file); ``None`` keeps all.
    Raises :class:`DataError` naming the file and line for any malformed record, and for ``negative_ids``
    naming ids that no record of the file has.
    """
    # table.py reads records with this module's checks, so it is imported here, not at the top
    from hybrid_ir.data.formats.inputs import TableInput
    from hybrid_ir.data.formats.table_corpus import table_corpus

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
                for parallel_id, pair in corpus.pairs[lang].items():
                    obj: dict[str, Any] = {
                        "id": parallel_id,
                        "lang": lang,
                        "question": pair.question,
                        "passage": pair.passage,
                        "context": pair.context,
                        "passage_id": f"g{corpus.group[parallel_id]}",
                    }
                    for key, lists in (
                        ("negative_ids", corpus.negative_ids),
                        ("negatives", corpus.negatives),
                    ):
                        if parallel_id in lists.get(lang, {}):
                            obj[key] = list(lists[lang][parallel_id])
                    obj.update(extra.get((parallel_id, lang), {}))
                    fh.write(json.dumps(obj, ensure_ascii=False) + "\n")
                    count += 1

    atomic_write(path, write)
    return count
