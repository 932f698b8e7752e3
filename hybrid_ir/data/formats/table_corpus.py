"""A :class:`~hybrid_ir.data.corpus.ParallelCorpus` over a memory-mapped record table
(:mod:`hybrid_ir.data.formats.record_table`): the planner, the token store and the dataset read its integer arrays
and fetch texts by row; ``pairs``, ``group`` and the negatives are read-only views that build a value only when
asked for one, so a corpus of millions of ids holds no per-id Python objects. See ``docs/data.md``."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterator, Mapping, Sequence
from functools import cached_property
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from hybrid_ir.data.corpus import CorpusArrays, ParallelCorpus, QAPair
from hybrid_ir.data.formats.inputs import BATCH_ROWS, TableInput
from hybrid_ir.data.formats.record_table import _TEXT_KINDS, RecordTable, open_record_table

_VIEWS = ("index_of", "arrays", "pairs", "group", "negative_ids", "negatives")  # cached on the instance


def table_corpus(spec: TableInput, name: str) -> TableCorpus:
    """The :class:`TableCorpus` named ``name`` of ``spec``'s cached record table (built when missing)."""
    table = open_record_table(spec)
    return TableCorpus(name, table, str(spec.path))


def _lists_any_of(column: pa.ChunkedArray, values: pa.Array) -> np.ndarray:
    """For each row of the list ``column``, whether its list holds one of ``values`` (unspecified for a null list),
    chunk by chunk on Arrow's arrays (no per-row Python object)."""
    parts = [np.zeros(0, dtype=bool)]
    for chunk in column.chunks:
        offsets = chunk.offsets.to_numpy().astype(np.int64)
        flat = chunk.values.slice(offsets[0], offsets[-1] - offsets[0])
        found = pc.is_in(flat, value_set=values).to_numpy(zero_copy_only=False)
        before = np.concatenate([[0], np.cumsum(found)])  # how many values found before each position
        offsets -= offsets[0]
        parts.append(before[offsets[1:]] > before[offsets[:-1]])
    return np.concatenate(parts)


class _IdList(Sequence[str]):
    """The sorted ids of a table corpus (fixed-width UTF-8 bytes), decoded one at a time."""

    def __init__(self, raw: np.ndarray) -> None:
        self.raw = raw

    def __len__(self) -> int:
        return len(self.raw)

    def __getitem__(self, i: Any) -> Any:
        if isinstance(i, slice):
            return [p.decode() for p in self.raw[i].tolist()]
        return self.raw[i].tobytes().rstrip(b"\0").decode()

    def __iter__(self) -> Iterator[str]:
        for start in range(0, len(self.raw), BATCH_ROWS):
            yield from (p.decode() for p in self.raw[start : start + BATCH_ROWS].tolist())

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Sequence) or isinstance(other, str):
            return NotImplemented
        return len(self) == len(other) and all(a == b for a, b in zip(self, other, strict=True))

    __hash__ = None  # type: ignore[assignment]

    def __repr__(self) -> str:
        return f"<{len(self)} ids>"


class _IdIndex(Mapping[str, int]):
    """``parallel_id -> position`` by binary search in the sorted ids."""

    def __init__(self, parallel_ids: _IdList) -> None:
        self.parallel_ids = parallel_ids

    def __getitem__(self, parallel_id: str) -> int:
        key = parallel_id.encode() if isinstance(parallel_id, str) else b""
        raw = self.parallel_ids.raw
        i = int(np.searchsorted(raw, key))
        if key and i < len(raw) and raw[i] == key:
            return i
        raise KeyError(parallel_id)

    def __iter__(self) -> Iterator[str]:
        return iter(self.parallel_ids)

    def __len__(self) -> int:
        return len(self.parallel_ids)


class _ById(Mapping[str, Any]):
    """A read-only view ``parallel_id -> value`` over the ids whose ``present`` flag is set."""

    def __init__(self, corpus: TableCorpus, present: np.ndarray, value: Any) -> None:
        self.corpus, self.present, self.value = corpus, present, value

    def __getitem__(self, parallel_id: str) -> Any:
        i = self.corpus.index_of[parallel_id]
        if not self.present[i]:
            raise KeyError(parallel_id)
        return self.value(i)

    def __iter__(self) -> Iterator[str]:
        parallel_ids = self.corpus.parallel_ids
        for i in np.flatnonzero(self.present).tolist():
            yield parallel_ids[i]

    def __len__(self) -> int:
        return int(np.count_nonzero(self.present))

    def __repr__(self) -> str:
        return f"<{len(self)} entries>"


class _ByLang(Mapping[str, Mapping[str, Any]]):
    """A read-only view ``lang -> _ById`` over the languages that have an entry."""

    def __init__(self, views: dict[str, _ById]) -> None:
        self.views = {lang: view for lang, view in views.items() if len(view)}

    def __getitem__(self, lang: str) -> Mapping[str, Any]:
        return self.views[lang]

    def __iter__(self) -> Iterator[str]:
        return iter(self.views)

    def __len__(self) -> int:
        return len(self.views)

    def __repr__(self) -> str:
        return f"<{', '.join(f'{lang}: {len(v)}' for lang, v in self.views.items())}>"


class TableCorpus(ParallelCorpus):
    """A :class:`~hybrid_ir.data.corpus.ParallelCorpus` over a :class:`RecordTable` (see the module docstring),
    limited to some of its ids (``index``: positions in the table's ids, ascending; ``None``: all). Limited, it
    keeps the hard negatives of its ids as :meth:`ParallelCorpus.subset` does: ``negative_ids`` lists only the ids
    it keeps."""

    def __init__(
        self, name: str, table: RecordTable, source: str = "", index: np.ndarray | None = None
    ) -> None:
        self.name, self.table, self.source = name, table, source
        rows, group, raw = table.rows, table.group, table.parallel_ids
        if index is not None:
            rows, group, raw = rows[index], group[index], raw[index]
        cols = np.flatnonzero((rows >= 0).any(axis=0))
        self.languages = [table.languages[c] for c in cols.tolist()]
        self.rows = rows if len(cols) == rows.shape[1] else rows[:, cols]
        self._group = group
        self.index = index
        self.parallel_ids = _IdList(raw)

    def __repr__(self) -> str:
        return f"TableCorpus({self.name!r}, {len(self)} ids in {self.languages}, table={self.table.path})"

    def __getstate__(self) -> dict[str, Any]:
        """Pickled (for a spawned DataLoader worker) without the views built on demand: they are rebuilt there."""
        return {k: v for k, v in self.__dict__.items() if k not in _VIEWS}

    def __eq__(self, other: object) -> bool:
        return self is other

    __hash__ = object.__hash__

    @cached_property
    def index_of(self) -> Mapping[str, int]:  # type: ignore[override]
        return _IdIndex(self.parallel_ids)

    @cached_property
    def arrays(self) -> CorpusArrays:
        has_lang = self.rows >= 0
        return CorpusArrays(
            group=np.asarray(self._group), has_lang=has_lang, n_langs=has_lang.sum(axis=1, dtype=np.int8)
        )

    def _cell(self, column: str, row: int) -> Any:
        return self.table.table.column(column)[row].as_py()

    def _pair(self, i: int, col: int) -> QAPair:
        row = int(self.rows[i, col])
        return QAPair(
            self.parallel_ids[i],
            self.languages[col],
            self._cell("question", row),
            self._cell("passage", row),
            self._cell("context", row),
        )

    @cached_property
    def pairs(self) -> Mapping[str, Mapping[str, QAPair]]:  # type: ignore[override]
        return _ByLang(
            {
                lang: _ById(self, self.rows[:, col] >= 0, lambda i, col=col: self._pair(i, col))
                for col, lang in enumerate(self.languages)
            }
        )

    @cached_property
    def group(self) -> Mapping[str, int]:  # type: ignore[override]
        ones = np.ones(len(self.parallel_ids), dtype=bool)
        return _ById(self, ones, lambda i: int(self._group[i]))

    def _listed(self, column: str, listing: np.ndarray) -> Mapping[str, Mapping[str, tuple[str, ...]]]:
        """The view ``lang -> parallel_id -> list`` of the list ``column`` over the ids whose table row has its
        ``listing`` flag set."""
        views = {}
        for col, lang in enumerate(self.languages):
            rows = self.rows[:, col]
            present = (rows >= 0) & listing[np.maximum(rows, 0)]
            views[lang] = _ById(self, present, lambda i, col=col: self._list(column, int(self.rows[i, col])))
        return _ByLang(views)

    def _list(self, column: str, row: int) -> tuple[str, ...]:
        """The list ``column`` of table row ``row``; its ``negative_ids`` limited to this corpus's ids."""
        values = self._cell(column, row)
        if column == "negative_ids" and self.index is not None:
            return tuple(v for v in values if v in self.index_of)
        return tuple(values)

    @cached_property
    def negative_ids(self) -> Mapping[str, Mapping[str, tuple[str, ...]]]:  # type: ignore[override]
        column = self.table.table.column("negative_ids")
        listing = np.asarray(column.is_valid())
        if self.index is not None:  # limited: the rows that list one of its ids (all list ids of the table)
            listing &= _lists_any_of(column, pa.array(self.parallel_ids.raw).cast(pa.string()))
        return self._listed("negative_ids", listing)

    @cached_property
    def negatives(self) -> Mapping[str, Mapping[str, tuple[str, ...]]]:  # type: ignore[override]
        return self._listed("negatives", np.asarray(self.table.table.column("negatives").is_valid()))

    def text_rows(self) -> tuple[pa.Table, np.ndarray]:
        return self.table.table.select([*_TEXT_KINDS, "negatives"]), np.asarray(self.rows)

    def content_key(self) -> str:
        # "negatives": the store holds the listed negative texts (older stores of held-out parts, which
        # dropped them, were keyed "no negatives" and are not reused)
        digest = hashlib.sha256(f"table|{self.table.key}|{json.dumps(self.languages)}|negatives|".encode())
        digest.update(np.ascontiguousarray(self.rows).tobytes())
        return digest.hexdigest()[:24]

    def subset(self, index: np.ndarray, name: str) -> TableCorpus:
        index = np.asarray(index, dtype=np.int64)
        base = index if self.index is None else self.index[index]
        return TableCorpus(name, self.table, self.source, base)
