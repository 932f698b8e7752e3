"""Distinct texts by their hashes, numbered in order of first appearance, with 4 bytes and a bit of memory a text.

The token store (:mod:`hybrid_ir.data.runtime.token_store`) tokenises each distinct text once. Given the 128-bit hashes
of a sequence of texts (two 64-bit hashes a text, :func:`text_hashes`), chunk by chunk in order,
:func:`first_appearance` finds, for every position ``i``, the number ``codes[i]`` of its text among the distinct texts
in order of first appearance, and which positions are first appearances (:class:`Firsts`). It does so bucket by bucket:

1. each chunk's ``(position, hash)`` records go to one of ``B`` bucket files on disk by the leading bits of the first
   hash (``B`` a power of two, about :data:`BUCKET` texts a bucket), so equal texts share a bucket;
2. each bucket is sorted in memory on its own; the smallest position of each distinct text in it is that text's first
   appearance, marked in a bitmap of one bit a position, and each record's first appearance is written back;
3. a text's code is the number of first appearances before its own: the bitmap's population count up to it, read in
   constant time from the count of each 64-bit word and a running sum over the words.

Memory: one chunk, one bucket's arrays (about 70 bytes a record, so about 35 MB at :data:`BUCKET` = 2^19), the bitmap
and the codes (``int32``, 4 bytes a position, what the caller keeps); disk: 24 bytes a position while it runs. Two
different texts share both hashes with a probability of about 10^-25 in a 10^7-text column. See docs/data.md.
"""

from __future__ import annotations

import itertools
import math
import mmap
import os
import tempfile
from collections.abc import Callable, Iterable, Iterator
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa

# Texts hashed at a time, and the two SipHash keys (16 bytes each) of a text's 128-bit hash.
HASH_CHUNK = 1 << 16
HASH_KEYS = ("hybrid_ir_store1", "hybrid_ir_store2")
# Records a bucket holds on average (the buckets' count is the next power of two of total / BUCKET).
BUCKET = 1 << 19
RECORD = np.dtype([("pos", "<i8"), ("h0", "<u8"), ("h1", "<u8")])


def text_hashes(
    texts: pa.Array | pa.ChunkedArray, release: Callable[[], None] = lambda: None
) -> Iterator[np.ndarray]:
    """Two independent 64-bit hashes of every text (SipHash-2-4 under two keys, via pandas), ``[m, 2]`` uint64
    chunks of :data:`HASH_CHUNK` texts in order, calling ``release`` after each (to drop the pages of a mapped
    table), so the memory is one chunk's."""
    chunks = texts.chunks if isinstance(texts, pa.ChunkedArray) else [texts]
    for chunk in chunks:
        for start in range(0, len(chunk), HASH_CHUNK):
            values = chunk.slice(start, HASH_CHUNK).to_numpy(zero_copy_only=False)
            out = np.empty((len(values), 2), dtype=np.uint64)
            for column, key in enumerate(HASH_KEYS):
                out[:, column] = pd.util.hash_array(values, hash_key=key, categorize=False)
            del values
            release()
            yield out


def gathered(chunks: Iterable[np.ndarray], index: np.ndarray, folder: Path) -> Iterator[np.ndarray]:
    """``concatenate(chunks)[index]`` chunk by chunk: the chunks (``[m, 2]`` uint64) are written to a file in
    ``folder`` and read back through a mapping whose pages are dropped after each :data:`HASH_CHUNK` rows of the
    result, so the memory is one chunk's however long the sequence."""
    handle, name = tempfile.mkstemp(dir=folder, suffix=".bin")
    path = Path(name)
    try:
        with os.fdopen(handle, "wb") as out:
            for chunk in chunks:
                np.ascontiguousarray(chunk, dtype=np.uint64).tofile(out)
        if not len(index):
            return
        with open(path, "rb") as fh:
            mapping = mmap.mmap(fh.fileno(), 0, access=mmap.ACCESS_READ)
        source = np.frombuffer(mapping, dtype=np.uint64).reshape(-1, 2)
        for start in range(0, len(index), HASH_CHUNK):
            yield source[index[start : start + HASH_CHUNK]]
            mapping.madvise(mmap.MADV_DONTNEED)
        del source
        mapping.close()
    finally:
        path.unlink()


@dataclass(frozen=True)
class Firsts:
    """The first appearances found by :func:`first_appearance`, as a bitmap (bit ``i % 64`` of word ``i // 64`` is
    set when position ``i`` is a text's first appearance): ``count`` distinct texts among ``total`` positions."""

    words: np.ndarray
    total: int
    count: int

    def between(self, start: int = 0, stop: int | None = None) -> np.ndarray:
        """The positions in ``[start, stop)`` that are a text's first appearance, ascending (int64)."""
        stop = self.total if stop is None else min(stop, self.total)
        if stop <= start:
            return np.zeros(0, np.int64)
        low, high = start // 64, -(-stop // 64)
        bits = np.unpackbits(self.words[low:high].view(np.uint8), bitorder="little")
        found = np.flatnonzero(bits) + low * 64
        return found[(found >= start) & (found < stop)]


def first_appearance(
    chunks: Iterable[np.ndarray] | np.ndarray, total: int | None = None, folder: Path | None = None
) -> tuple[np.ndarray, Firsts]:
    """``(codes, firsts)``: number the distinct texts of a sequence given by their hashes (``[m, 2]`` uint64 chunks
    in order, e.g. of :func:`text_hashes`, or one array) in order of first appearance, bucket by bucket on disk in
    ``folder`` (a temporary folder when ``None``; see the module docstring). ``total`` is the sequence's length
    (needed only for chunks given as an iterator)."""
    if isinstance(chunks, np.ndarray):
        chunks, total = [chunks], len(chunks)
    elif total is None:
        chunks = list(chunks)
        total = sum(len(c) for c in chunks)
    if total >= 2**31:
        raise ValueError(f"{total} texts: more than a token store numbers (2^31 - 1)")
    bits = max(0, math.ceil(math.log2(max(total, 1) / BUCKET)))
    with ExitStack() as stack:
        if folder is None:
            folder = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="hybrid_ir_dedup_")))
        paths = [folder / f"bucket-{b}.bin" for b in range(1 << bits)]
        _spill(chunks, total, bits, paths)
        new = np.zeros(-(-total // 64) * 64, dtype=bool)
        for path in paths:
            _mark_bucket(path, new)
        words = np.packbits(new, bitorder="little").view(np.uint64)
        del new
        before = np.zeros(len(words), np.int64)  # first appearances in the words before each word
        np.cumsum(np.bitwise_count(words)[:-1], out=before[1:])
        codes = np.empty(total, dtype=np.int32)
        for path in paths:
            pairs = np.fromfile(path, dtype=np.int64).reshape(-1, 2)
            path.unlink()
            first = pairs[:, 1]
            below = (np.uint64(1) << (first & 63).astype(np.uint64)) - np.uint64(1)
            codes[pairs[:, 0]] = before[first >> 6] + np.bitwise_count(words[first >> 6] & below)
    count = int(before[-1] + np.bitwise_count(words[-1])) if len(words) else 0
    return codes, Firsts(words, total, count)


def _spill(chunks: Iterable[np.ndarray], total: int, bits: int, paths: list[Path]) -> None:
    """Write each position's record to the bucket file of its first hash's ``bits`` leading bits."""
    with ExitStack() as stack:
        files = [stack.enter_context(open(path, "wb")) for path in paths]
        done = 0
        for chunk in chunks:
            records = np.empty(len(chunk), dtype=RECORD)
            records["pos"] = np.arange(done, done + len(chunk))
            records["h0"], records["h1"] = chunk[:, 0], chunk[:, 1]
            done += len(chunk)
            if bits == 0:
                records.tofile(files[0])
                continue
            bucket = (chunk[:, 0] >> np.uint64(64 - bits)).astype(np.int64)
            order = np.argsort(bucket, kind="stable")
            ends = np.cumsum(np.bincount(bucket, minlength=len(files)))
            for b, (start, end) in enumerate(itertools.pairwise([0, *ends.tolist()])):
                if end > start:
                    records[order[start:end]].tofile(files[b])
    if done != total:
        raise ValueError(f"the hashes cover {done} positions, expected {total}")


def _mark_bucket(path: Path, new: np.ndarray) -> None:
    """Sort one bucket's records, mark each distinct text's first position in ``new`` and write the bucket back as
    ``(position, first position of its text)`` pairs."""
    records = np.fromfile(path, dtype=RECORD)
    # A bucket's records are written in position order (:func:`_spill`) and lexsort is stable: equal hashes stay in
    # position order without the position as a third key.
    order = np.lexsort((records["h1"], records["h0"]))
    records = records[order]
    del order
    starts = np.ones(len(records), dtype=bool)
    starts[1:] = (records["h0"][1:] != records["h0"][:-1]) | (records["h1"][1:] != records["h1"][:-1])
    # sorted by position within a text: the first record of each text is its first appearance
    firsts = records["pos"][starts]
    new[firsts] = True
    pairs = np.empty((len(records), 2), dtype=np.int64)
    pairs[:, 0] = records["pos"]
    pairs[:, 1] = firsts[np.cumsum(starts) - 1]
    pairs.tofile(path)
