"""Memory-mapped token ids of a training corpus (one store per corpus and tokenizer).

A store holds the token ids of every question and passage of a :class:`~hybrid_ir.data.corpus.ParallelCorpus`,
each unique text once, in flat files that every process maps instead of holding Python lists:

* ``tokens.bin``: all token ids (int32), one text after another;
* ``offsets.bin``: int64 ``[n_texts + 1]``, text ``t`` is ``tokens[offsets[t]:offsets[t + 1]]``;
* ``rows.bin``: int32 ``[ids, languages, 2]``, the text of the question (``0``) and of the passage (``1``) of
  ``parallel_ids[i]`` in ``languages[l]`` (``-1`` where the id does not exist in that language);
* ``neg_offsets.bin``: int64 ``[ids * languages + 1]`` and ``neg_texts.bin``: int32, the listed hard-negative texts
  (the record's ``negatives``) as a CSR list: those of ``parallel_ids[i]`` in ``languages[l]``, in the record's
  order, are the texts ``neg_texts[neg_offsets[c]:neg_offsets[c + 1]]`` with ``c = i * languages + l``, so a batch
  reads a chosen negative's token ids like any passage's (no tokenizer call while training);
* ``meta.json``, written last: format version, key, the arrays' lengths and shapes.

The store's key hashes the tokenizer's fingerprint (what it does, not where its files lie: its pipeline and vocabulary,
prefixes, max length) and the corpus (name and content key: for a corpus read from a training input, its record table's
key and the ids it keeps; for one built in memory, every id with its texts), so a changed input or tokenizer gives a new
store without hashing the texts at every start. It lives under ``<cache>/stores/<name>-<key>/`` (``$HYBRID_IR_CACHE``,
default ``~/.cache/hybrid_ir``). The first process to take the store's file lock builds it into a temporary folder
renamed into place when complete; the others wait on the lock, then map the finished files. So the DDP ranks and
DataLoader workers of one machine build it once and share its pages. A store whose files do not match its ``meta.json``
(a crash mid-build, a truncated copy) is rebuilt, never trusted; a complete one is opened without writing anything (a
read-only cache works); a full disk is a DataError naming the cache, and a killed build's temporary folder is removed by
the next build (:mod:`hybrid_ir.data.cache`). With several machines, keep the cache node-local (each machine builds its
own store) or build it once before the launch when the cache is on shared storage (file locks are not reliable on every
network file system). The record tables the stores are built from live beside them, under ``<cache>/tables``
(:mod:`hybrid_ir.data.formats.record_table`), with the same rules.

The build holds no text in memory, and its integer arrays are those of the ids and 4 bytes a text: each column is hashed
chunk by chunk, equal texts are found bucket by bucket on disk (:mod:`hybrid_ir.data.runtime.dedup`), and the distinct
texts are read back and tokenised a chunk at a time (a fast tokenizer spreads each chunk over every core), through a
mapping of the record table whose pages are dropped as it goes; token ids and offsets are written as they come. The
files are those of a dictionary encoding of the texts: distinct texts in order of first appearance, questions then
passages, then the listed negative texts (tokenised as passages) that are no passage: passages and negatives are
deduplicated together, so a negative equal to some passage, or listed by several records, is one text. Details:
``docs/data.md``; measurements: ``docs/benchmarks.md`` (Scale).
"""

from __future__ import annotations

import collections
import contextlib
import dataclasses
import hashlib
import io
import itertools
import json
import logging
import mmap
import os
import shutil
import tempfile
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO

import numpy as np
import pyarrow as pa

from hybrid_ir.data.cache import entry_path, open_entry
from hybrid_ir.data.corpus import ParallelCorpus
from hybrid_ir.data.runtime.dedup import first_appearance, gathered, text_hashes
from hybrid_ir.models.tokenizer import TextKind, TextTokenizer
from hybrid_ir.utils.io import atomic_write_json

log = logging.getLogger(__name__)

FORMAT_VERSION = 3
KINDS: tuple[TextKind, TextKind] = ("query", "passage")
CHUNK = 4096
# Positions whose first appearances are read from the bitmap and tokenised at a time.
WINDOW = 1 << 20
# Chunks being tokenised at once (each in its own thread) while the build reads and writes others.
AHEAD = 2
# The store's arrays besides ``tokens`` (see the module docstring), and their types.
ARRAYS = {"offsets": np.int64, "rows": np.int32, "neg_offsets": np.int64, "neg_texts": np.int32}


@dataclass(frozen=True)
class TokenStore:
    """The token ids of one corpus: ``ids(i, l, kind)`` is the token-id list of the question (``kind=0``) or the
    passage (``kind=1``) of parallel_id index ``i`` in language index ``l``, ``negative(i, l, position)`` that of
    one of its listed negative texts. ``path`` is ``None`` for a store built in memory; ``built`` says whether this
    process built it."""

    tokens: np.ndarray
    offsets: np.ndarray
    rows: np.ndarray
    neg_offsets: np.ndarray
    neg_texts: np.ndarray
    path: Path | None = None
    built: bool = False

    def ids(self, id_index: int, lang_index: int, kind: int) -> list[int]:
        """Token ids of one text; raises KeyError when the id does not exist in that language."""
        row = int(self.rows[id_index, lang_index, kind])
        if row < 0:
            raise KeyError(f"parallel_id index {id_index} has no text in language index {lang_index}")
        return self._text(row)

    def negative(self, id_index: int, lang_index: int, position: int) -> list[int]:
        """Token ids (as a passage) of the text at ``position`` of the ``negatives`` list of parallel_id index
        ``id_index`` in language index ``lang_index``; raises KeyError when that list has no such position."""
        cell = id_index * self.rows.shape[1] + lang_index
        start, end = int(self.neg_offsets[cell]), int(self.neg_offsets[cell + 1])
        if not 0 <= position < end - start:
            raise KeyError(
                f"parallel_id index {id_index} lists {end - start} negative texts in language index {lang_index}, "
                f"none at position {position}"
            )
        return self._text(int(self.neg_texts[start + position]))

    def _text(self, row: int) -> list[int]:
        return self.tokens[self.offsets[row] : self.offsets[row + 1]].tolist()

    def __reduce__(self) -> tuple[Any, ...]:
        """A store on disk travels to another process (a spawned DataLoader worker) as its path and is mapped
        there again, not copied."""
        if self.path is None:
            return super().__reduce__()
        return _reopen, (self.path,)


def _reopen(path: Path) -> TokenStore:
    store = _map(path)
    if store is None:
        raise RuntimeError(f"the token store {path} is gone or damaged; rerun to rebuild it")
    return store


def store_key(corpus: ParallelCorpus, tokenizer: TextTokenizer) -> str:
    """A hash of everything the store's contents depend on: the tokenizer, the corpus's name and its content key
    (:meth:`~hybrid_ir.data.corpus.ParallelCorpus.content_key`: its record table's key and ids for a table corpus,
    every text for one in memory)."""
    blob = f"v{FORMAT_VERSION}|{tokenizer.fingerprint()}|{corpus.name}|{corpus.content_key()}"
    return hashlib.sha256(blob.encode()).hexdigest()[:24]


def store_path(corpus: ParallelCorpus, tokenizer: TextTokenizer) -> Path:
    """Where the store of ``corpus`` and ``tokenizer`` lives: ``<cache>/stores/<name>-<key>``."""
    return entry_path("stores", f"{corpus.name.replace('/', '_')}-{store_key(corpus, tokenizer)}")


def open_token_store(
    corpus: ParallelCorpus, tokenizer: TextTokenizer, use_cache: bool = True, chunk: int = CHUNK
) -> TokenStore:
    """The corpus's store: mapped from the cache when a valid one exists, else built (in memory when
    ``use_cache`` is false). Concurrent callers on one machine build it once (see the module docstring)."""
    if not use_cache:
        tokens, offsets = io.BytesIO(), io.BytesIO()
        with tempfile.TemporaryDirectory(prefix="hybrid_ir_store_") as work:
            arrays, _ = _build_arrays(corpus, tokenizer, chunk, tokens, offsets, Path(work))
        return TokenStore(
            np.frombuffer(tokens.getbuffer(), dtype=np.int32),
            np.frombuffer(offsets.getbuffer(), dtype=np.int64),
            **arrays,
            built=True,
        )
    path = store_path(corpus, tokenizer)
    store, built = open_entry(path, "token store", _map, lambda tmp: _write(tmp, corpus, tokenizer, chunk))
    return dataclasses.replace(store, built=True) if built else store


def _map(path: Path) -> TokenStore | None:
    """Map a complete store, or ``None`` when it is missing, partial or does not match its ``meta.json``."""
    try:
        meta = json.loads((path / "meta.json").read_text(encoding="utf-8"))
        if meta.get("format") != FORMAT_VERSION:
            return None
        arrays = {}
        for name, dtype in {"tokens": np.int32, **ARRAYS}.items():
            shape = tuple(meta[name])
            file = path / f"{name}.bin"
            if file.stat().st_size != int(np.prod(shape)) * np.dtype(dtype).itemsize:
                return None
            # A plain ndarray over the mapping (its base keeps the mapping open): slicing the np.memmap subclass is
            # slower, per text read while fetching batches (docs/benchmarks.md, Scale).
            arrays[name] = (
                np.memmap(file, dtype=dtype, mode="r", shape=shape).view(np.ndarray)
                if file.stat().st_size
                else np.zeros(shape, dtype)
            )
    except (OSError, ValueError, KeyError, TypeError):
        return None
    offsets, neg_offsets, (ids, languages, _) = arrays["offsets"], arrays["neg_offsets"], arrays["rows"].shape
    if offsets[0] != 0 or offsets[-1] != len(arrays["tokens"]) or len(neg_offsets) != ids * languages + 1:
        return None
    if neg_offsets[0] != 0 or neg_offsets[-1] != len(arrays["neg_texts"]):
        return None
    return TokenStore(**arrays, path=path)


def _write(tmp: Path, corpus: ParallelCorpus, tokenizer: TextTokenizer, chunk: int) -> None:
    """Build the store's files in the folder ``tmp`` (the deduplication's bucket files in ``tmp/work``, removed)."""
    work = tmp / "work"
    work.mkdir()
    with open(tmp / "tokens.bin", "wb") as out, open(tmp / "offsets.bin", "wb") as offsets:
        arrays, written = _build_arrays(corpus, tokenizer, chunk, out, offsets, work)
        for fh in (out, offsets):
            fh.flush()
            os.fsync(fh.fileno())
    shutil.rmtree(work)
    for name, array in arrays.items():
        with open(tmp / f"{name}.bin", "wb") as fh:
            array.tofile(fh)
            fh.flush()
            os.fsync(fh.fileno())
    meta = {
        "format": FORMAT_VERSION,
        "corpus": corpus.name,
        "languages": corpus.languages,
        "tokens": [written.tokens],
        "offsets": [written.texts + 1],
        **{name: list(array.shape) for name, array in arrays.items()},
    }
    atomic_write_json(tmp / "meta.json", meta)
    log.info(
        "token store of %s: %d texts, %d tokens, %d listed negatives",
        corpus.name,
        written.texts,
        written.tokens,
        len(arrays["neg_texts"]),
    )


def take_texts(texts: pa.ChunkedArray, rows: np.ndarray, bounds: np.ndarray | None = None) -> list[str]:
    """``texts[rows]`` as Python strings, taken chunk by chunk (``bounds``: the chunks' first rows, then the length;
    computed when not given): a ChunkedArray's own ``take`` joins all its chunks into one array first, a copy of the
    whole column per call, which fails outright (Arrow's offset overflow) once a ``string`` column passes 2 GiB."""
    if bounds is None:
        bounds = np.cumsum([0, *(len(c) for c in texts.chunks)])
    out: list[str] = [""] * len(rows)
    which = np.searchsorted(bounds, rows, side="right") - 1
    for c in np.unique(which):
        picked = np.flatnonzero(which == c)
        values = texts.chunk(int(c)).take(pa.array(rows[picked] - bounds[c])).to_pylist()
        for i, value in zip(picked.tolist(), values, strict=True):
            out[i] = value
    return out


@contextlib.contextmanager
def _text_table(corpus: ParallelCorpus) -> Iterator[tuple[pa.Table, np.ndarray, Callable[[], None]]]:
    """``(texts, rows, release)`` of :meth:`~hybrid_ir.data.corpus.ParallelCorpus.text_rows`. For a corpus read from
    a record table the texts are read through a mapping of its own whose pages ``release`` drops (``madvise``), so a
    pass over 10^7 texts does not keep them resident: the build's memory does not grow with the table."""
    table, rows = corpus.text_rows()
    file = getattr(getattr(corpus, "table", None), "path", None)
    if file is None or not (Path(file) / "records.arrow").is_file():
        yield table, rows, lambda: None
        return
    with open(Path(file) / "records.arrow", "rb") as fh:
        mapping = mmap.mmap(fh.fileno(), 0, access=mmap.ACCESS_READ)
    mapped = pa.ipc.open_file(pa.BufferReader(pa.py_buffer(mapping))).read_all().select(table.column_names)
    try:
        yield mapped, rows, lambda: mapping.madvise(mmap.MADV_DONTNEED)
    finally:
        del mapped


def _negative_entries(
    table: pa.Table, table_rows: np.ndarray, present: np.ndarray
) -> tuple[np.ndarray, np.ndarray, pa.ChunkedArray]:
    """``(neg_offsets, entries, values)``: the listed negative texts of every cell ``c = i * languages + l`` of
    ``table_rows`` (its row's ``negatives`` list, in order; none without that column or for a null list) are
    ``values[entries[neg_offsets[c]:neg_offsets[c + 1]]]``. ``values`` are the lists' texts one after the other,
    chunk by chunk, as zero-copy slices of the table: integer arrays only, no text is read."""
    cells = table_rows.size
    # No column, or no record with a list: nothing to read (the per-row arrays below cost ~80 bytes a row).
    if "negatives" not in table.column_names or table.column("negatives").null_count == table.num_rows:
        return np.zeros(cells + 1, np.int64), np.zeros(0, np.int64), pa.chunked_array([], pa.string())
    values, starts, lengths = [], [], []
    done = 0
    for chunk in table.column("negatives").chunks:
        offsets = chunk.offsets.to_numpy().astype(np.int64)
        values.append(chunk.values.slice(offsets[0], offsets[-1] - offsets[0]))
        length = np.diff(offsets)
        length[~chunk.is_valid().to_numpy(zero_copy_only=False)] = 0
        starts.append(offsets[:-1] - offsets[0] + done)
        lengths.append(length)
        done += int(offsets[-1] - offsets[0])
    row_ids = table_rows[present]  # the cells' rows, cell by cell
    start = np.concatenate([np.zeros(0, np.int64), *starts])[row_ids]
    count = np.concatenate([np.zeros(0, np.int64), *lengths])[row_ids]
    counts = np.zeros(cells, np.int64)
    counts[present.ravel()] = count
    neg_offsets = np.zeros(cells + 1, np.int64)
    np.cumsum(counts, out=neg_offsets[1:])
    entries = np.repeat(start - (np.cumsum(count) - count), count) + np.arange(int(count.sum()))
    return neg_offsets, entries, pa.chunked_array(values, pa.string())


def _build_arrays(
    corpus: ParallelCorpus, tokenizer: TextTokenizer, chunk: int, out: BinaryIO, offsets: BinaryIO, work: Path
) -> tuple[dict[str, np.ndarray], _Tokens]:
    """Tokenise each unique question, passage and listed negative text once, in chunks of ``chunk`` texts,
    appending the ids (int32) to ``out`` and the texts' end offsets (int64, after a first 0) to ``offsets`` chunk by
    chunk; return ``rows``, ``neg_offsets`` and ``neg_texts`` of :data:`ARRAYS`, and the counts written. Texts are
    deduplicated by hash (:func:`~hybrid_ir.data.runtime.dedup.first_appearance`, bucket files in ``work``; passages
    and negatives together), so memory holds integer arrays of the ids and one chunk of texts, never the texts."""
    with _text_table(corpus) as (table, table_rows, release):
        present = table_rows >= 0
        row_ids = table_rows[present]
        rows = np.full((*table_rows.shape, 2), -1, dtype=np.int32)
        # The corpus keeps some of the table's rows: encode only those, in the corpus's order.
        subset = len(row_ids) != table.num_rows
        neg_offsets, entries, values = _negative_entries(table, table_rows, present)
        tokens = _Tokens(tokenizer, chunk, out, offsets, release)
        neg_texts = np.zeros(0, np.int32)
        for kind, column in enumerate(("question", "passage")):
            texts = table.column(column)
            hashes = text_hashes(texts, release)
            n = len(row_ids) if subset else len(texts)
            # The texts numbered together: (name, texts, which of them in order (None: all), how many).
            parts = [(column, texts, row_ids if subset else None, n)]
            if subset:
                hashes = gathered(hashes, row_ids, work)
            if kind == 1 and len(entries):
                hashes = itertools.chain(hashes, gathered(text_hashes(values, release), entries, work))
                parts.append(("listed negative", values, entries, len(entries)))
            codes, firsts = first_appearance(hashes, sum(part[3] for part in parts), work)
            rows[..., kind][present] = (codes[:n] if subset else codes[:n][row_ids]) + tokens.texts
            if kind == 1:
                neg_texts = (codes[n:] + tokens.texts).astype(np.int32)
            del codes
            end = 0
            for name, part, which, size in parts:
                for low in range(0, size, WINDOW):
                    mine = firsts.between(end + low, end + min(low + WINDOW, size)) - end
                    tokens.append(part, mine if which is None else which[mine], KINDS[kind])
                    if size > WINDOW:
                        log.info(
                            "tokenising %s %ss: %d of %d read",
                            corpus.name,
                            name,
                            min(low + WINDOW, size),
                            size,
                        )
                end += size
            release()
    return {"rows": rows, "neg_offsets": neg_offsets, "neg_texts": neg_texts}, tokens


@dataclasses.dataclass
class _Tokens:
    """The store's ``tokens`` and ``offsets`` as they are written: texts tokenised ``chunk`` at a time, their ids
    appended to ``out`` and their end offsets to ``offsets`` (which starts with a 0); ``texts`` and ``tokens`` count
    what was written."""

    tokenizer: TextTokenizer
    chunk: int
    out: BinaryIO
    offsets: BinaryIO
    release: Callable[[], None]
    texts: int = 0
    tokens: int = 0

    def __post_init__(self) -> None:
        self.offsets.write(np.zeros(1, np.int64).tobytes())

    def append(self, texts: pa.ChunkedArray, rows: np.ndarray, kind: TextKind) -> None:
        """Tokenise ``texts[rows]`` as ``kind`` and append them. Chunks are tokenised in :data:`AHEAD` threads (the
        Rust tokenizer releases the GIL) while this one reads the next chunk's texts and writes a finished chunk's
        ids, so that the per-text Python work (prefixes, reading the ids back) of one chunk overlaps the tokenisation
        of the next instead of leaving the tokenizer's cores idle."""
        bounds = np.cumsum([0, *(len(c) for c in texts.chunks)])
        pending: collections.deque[Future[list[list[int]]]] = collections.deque()
        with ThreadPoolExecutor(AHEAD, thread_name_prefix="hybrid_ir_tokenize") as pool:
            for step, start in enumerate(range(0, len(rows), self.chunk)):
                batch = take_texts(texts, rows[start : start + self.chunk], bounds)
                pending.append(pool.submit(self.tokenizer, batch, kind))
                if len(pending) > AHEAD:
                    self._write(pending.popleft().result())
                if step % 10 == 9:
                    self.release()
            while pending:
                self._write(pending.popleft().result())

    def _write(self, ids: list[list[int]]) -> None:
        """Append one chunk's token ids and end offsets."""
        lengths = np.fromiter(map(len, ids), dtype=np.int64, count=len(ids))
        count = int(lengths.sum())
        self.out.write(np.fromiter(itertools.chain.from_iterable(ids), dtype=np.int32, count=count).tobytes())
        self.offsets.write((self.tokens + np.cumsum(lengths)).tobytes())
        self.texts += len(ids)
        self.tokens += count
