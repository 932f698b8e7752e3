"""Memory-mapped token ids of a training corpus (one store per corpus and tokenizer).

A store holds the token ids of every question and passage of a :class:`~hybrid_ir.data.corpus.ParallelCorpus`,
each unique text once, in flat files that every process maps instead of holding Python lists:

* ``tokens.bin``: all token ids (int32), one text after another;
* ``offsets.bin``: int64 ``[n_texts + 1]``, text ``t`` is ``tokens[offsets[t]:offsets[t + 1]]``;
* ``rows.bin``: int32 ``[ids, languages, 2]``, the text of the question (``0``) and of the passage (``1``) of
  ``pids[i]`` in ``languages[l]`` (``-1`` where the id does not exist in that language);
* ``meta.json``, written last: format version, key, the arrays' lengths and shapes.

The store's key hashes the tokenizer's fingerprint (vocabulary, prefixes, max length) and the corpus (name and
content key: for a corpus read from a training input, its record table's key and the ids it keeps; for one built in
memory, every id with its texts), so a changed input or tokenizer gives a new store without hashing the texts at
every start. It lives under
``<cache>/stores/<name>-<key>/`` (``$HYBRID_IR_CACHE``, default ``~/.cache/hybrid_ir``). The first process to take
the store's file lock builds it (texts tokenised in chunks; a fast tokenizer spreads each chunk over every core)
into a temporary folder renamed into place when complete; the others wait on the lock, then map the finished
files. So the DDP ranks and DataLoader workers of one machine build it once and share its pages. A store whose
files do not match its ``meta.json`` (a crash mid-build, a truncated copy) is rebuilt, never trusted; a complete one
is opened without writing anything (a read-only cache works); a full disk is a DataError naming the cache, and a
killed build's temporary folder is removed by the next build (:mod:`hybrid_ir.data.cache`). With several
machines, keep the cache node-local (each machine builds its own store) or build it once before the launch when
the cache is on shared storage (file locks are not reliable on every network file system). The record tables the
stores are built from live beside them, under ``<cache>/tables`` (:mod:`hybrid_ir.data.table`), with the same rules.
"""

from __future__ import annotations

import hashlib
import io
import json
import logging
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO

import numpy as np
import pyarrow as pa

from hybrid_ir.data.cache import entry_path, open_entry
from hybrid_ir.data.collate import TextKind, TextTokenizer
from hybrid_ir.data.corpus import ParallelCorpus
from hybrid_ir.utils.io import atomic_write_json

log = logging.getLogger(__name__)

FORMAT_VERSION = 2
KINDS: tuple[TextKind, TextKind] = ("query", "passage")
CHUNK = 4096


@dataclass(frozen=True)
class TokenStore:
    """The token ids of one corpus: ``ids(i, l, kind)`` is the token-id list of the question (``kind=0``) or the
    passage (``kind=1``) of pid index ``i`` in language index ``l``. ``path`` is ``None`` for a store built in
    memory; ``built`` says whether this process built it."""

    tokens: np.ndarray
    offsets: np.ndarray
    rows: np.ndarray
    path: Path | None = None
    built: bool = False

    def ids(self, pid_index: int, lang_index: int, kind: int) -> list[int]:
        """Token ids of one text; raises KeyError when the id does not exist in that language."""
        row = int(self.rows[pid_index, lang_index, kind])
        if row < 0:
            raise KeyError(f"pid index {pid_index} has no text in language index {lang_index}")
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
        buffer = io.BytesIO()
        offsets, rows = _build_arrays(corpus, tokenizer, chunk, buffer)
        return TokenStore(np.frombuffer(buffer.getbuffer(), dtype=np.int32), offsets, rows, built=True)
    path = store_path(corpus, tokenizer)
    store, built = open_entry(path, "token store", _map, lambda tmp: _write(tmp, corpus, tokenizer, chunk))
    return TokenStore(store.tokens, store.offsets, store.rows, path, built=True) if built else store


def _map(path: Path) -> TokenStore | None:
    """Map a complete store, or ``None`` when it is missing, partial or does not match its ``meta.json``."""
    try:
        meta = json.loads((path / "meta.json").read_text(encoding="utf-8"))
        if meta.get("format") != FORMAT_VERSION:
            return None
        arrays = {}
        for name, dtype in (("tokens", np.int32), ("offsets", np.int64), ("rows", np.int32)):
            shape = tuple(meta[name])
            file = path / f"{name}.bin"
            if file.stat().st_size != int(np.prod(shape)) * np.dtype(dtype).itemsize:
                return None
            arrays[name] = (
                np.memmap(file, dtype=dtype, mode="r", shape=shape)
                if file.stat().st_size
                else np.zeros(shape, dtype)
            )
    except (OSError, ValueError, KeyError, TypeError):
        return None
    offsets = arrays["offsets"]
    if offsets[0] != 0 or offsets[-1] != len(arrays["tokens"]):
        return None
    return TokenStore(arrays["tokens"], offsets, arrays["rows"], path)


def _write(tmp: Path, corpus: ParallelCorpus, tokenizer: TextTokenizer, chunk: int) -> None:
    """Build the store's files in the folder ``tmp``."""
    with open(tmp / "tokens.bin", "wb") as out:
        offsets, rows = _build_arrays(corpus, tokenizer, chunk, out)
        out.flush()
        os.fsync(out.fileno())
    for name, array in (("offsets", offsets), ("rows", rows)):
        with open(tmp / f"{name}.bin", "wb") as fh:
            array.tofile(fh)
            fh.flush()
            os.fsync(fh.fileno())
    meta = {
        "format": FORMAT_VERSION,
        "corpus": corpus.name,
        "languages": corpus.languages,
        "tokens": [int(offsets[-1])],
        "offsets": list(offsets.shape),
        "rows": list(rows.shape),
    }
    atomic_write_json(tmp / "meta.json", meta)
    log.info("token store of %s: %d texts, %d tokens", corpus.name, len(offsets) - 1, offsets[-1])


def _large(texts: pa.ChunkedArray) -> pa.ChunkedArray:
    """``texts`` as ``large_string`` (64-bit offsets; Arrow shares the character data, only offsets are rewritten)."""
    return texts if texts.type == pa.large_string() else texts.cast(pa.large_string())


def unique_texts(texts: pa.ChunkedArray) -> tuple[np.ndarray, pa.Array]:
    """``(codes, unique)``: the distinct values of ``texts`` in order of first appearance and, per value, its index
    in them (int64). One dictionary for all chunks (Arrow's encoder keeps its memo across them), built as
    ``large_string`` so the distinct texts may exceed 2 GiB together (a 1 M-id corpus in 9 languages does), and no
    copy of the column."""
    encoded = _large(texts).dictionary_encode()
    codes = np.concatenate([np.zeros(0, np.int64), *(c.indices.to_numpy() for c in encoded.chunks)])
    unique = encoded.chunks[-1].dictionary if encoded.num_chunks else pa.array([], pa.large_string())
    return codes, unique


def _build_arrays(
    corpus: ParallelCorpus, tokenizer: TextTokenizer, chunk: int, out: BinaryIO
) -> tuple[np.ndarray, np.ndarray]:
    """Tokenise each unique question and passage once, in chunks of ``chunk`` texts, appending the ids (int32)
    to ``out`` chunk by chunk; return ``(offsets, rows)``."""
    table, table_rows = corpus.text_rows()
    present = table_rows >= 0
    row_ids = table_rows[present]
    rows = np.full((*table_rows.shape, 2), -1, dtype=np.int32)
    uniques: list[pa.Array] = []
    for kind, column in enumerate(("question", "passage")):
        texts, positions = table.column(column), row_ids
        if len(row_ids) != len(texts):  # the corpus keeps some of the table's rows: encode only those
            texts, positions = _large(texts).take(pa.array(row_ids, pa.int64())), np.arange(len(row_ids))
        codes, unique = unique_texts(texts)
        rows[..., kind][present] = codes[positions] + sum(len(u) for u in uniques)
        uniques.append(unique)
    lengths: list[np.ndarray] = []
    total = sum(len(u) for u in uniques)
    done = 0
    for kind, kind_texts in enumerate(uniques):
        for start in range(0, len(kind_texts), chunk):
            ids = tokenizer(kind_texts[start : start + chunk].to_pylist(), KINDS[kind])
            lengths.append(np.fromiter((len(s) for s in ids), dtype=np.int64, count=len(ids)))
            out.write(
                np.fromiter(
                    (t for s in ids for t in s), dtype=np.int32, count=int(lengths[-1].sum())
                ).tobytes()
            )
            done += len(ids)
            if total > 10 * chunk and (done // chunk) % 10 == 0:
                log.info("tokenising %s: %d of %d texts", corpus.name, done, total)
    offsets = np.zeros(total + 1, dtype=np.int64)
    if lengths:
        np.cumsum(np.concatenate(lengths), out=offsets[1:])
    return offsets, rows
