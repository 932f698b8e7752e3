"""Distinct texts by hash, bucket by bucket (:mod:`hybrid_ir.data.runtime.dedup`): codes, first appearances,
collisions of one hash half, more than 2 GiB of text."""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pytest

from hybrid_ir.data.runtime import dedup
from hybrid_ir.data.runtime.dedup import first_appearance, gathered, text_hashes


def test_first_appearance_numbers_distinct_texts_in_order_of_first_appearance() -> None:
    texts = pa.chunked_array([["b", "a", "b"], [], ["c", "a", "", "c", ""]])
    codes, firsts = first_appearance(text_hashes(texts), len(texts))
    assert codes.tolist() == [0, 1, 0, 2, 1, 3, 2, 3]
    assert firsts.between().tolist() == [0, 1, 3, 5] and firsts.count == 4
    assert firsts.between(2, 7).tolist() == [3, 5]
    empty_codes, empty_firsts = first_appearance(text_hashes(pa.chunked_array([], pa.string())), 0)
    assert len(empty_codes) == len(empty_firsts.between()) == empty_firsts.count == 0


@pytest.mark.parametrize("bucket", [1, 7, 1 << 19])
def test_first_appearance_in_many_buckets_is_the_dictionary_encoding(bucket, monkeypatch, tmp_path) -> None:
    """Bucket by bucket on disk (from one bucket to one per few texts), chunk by chunk: the codes and first
    appearances are those of Arrow's dictionary encoding of the same texts, and the bucket files are removed."""
    monkeypatch.setattr(dedup, "BUCKET", bucket)
    monkeypatch.setattr(dedup, "HASH_CHUNK", 64)
    rng = np.random.default_rng(0)
    texts = pa.chunked_array(
        [[f"t{i}" for i in rng.integers(0, 300, size=size)] for size in (500, 0, 333, 1)]
    )
    codes, firsts = first_appearance(text_hashes(texts), len(texts), tmp_path)
    encoded = pa.array(texts.to_pylist()).dictionary_encode()
    assert codes.tolist() == encoded.indices.to_pylist()
    assert firsts.count == len(encoded.dictionary)
    expected = [codes.tolist().index(code) for code in range(firsts.count)]
    assert firsts.between().tolist() == expected
    assert firsts.between(100, 700).tolist() == [i for i in expected if 100 <= i < 700]
    assert list(tmp_path.iterdir()) == []


def test_texts_that_share_one_hash_half_stay_apart() -> None:
    """Two texts are one only when both 64-bit hashes agree."""
    hashes = np.array([[1, 5], [1, 6], [1, 5], [2, 6]], dtype=np.uint64)
    codes, firsts = first_appearance(hashes)
    assert codes.tolist() == [0, 1, 0, 2] and firsts.between().tolist() == [0, 1, 3]


@pytest.mark.slow
def test_distinct_texts_beyond_2_gib_are_told_apart() -> None:
    """A 1 M-id corpus in 9 languages holds more than 2 GiB of distinct passages (Arrow's ``string`` limit per
    array): hashing goes chunk by chunk and holds no text, so three chunks sharing one buffer ('a' * (n - 1),
    'a' * (n - 1) + 'b', and the first again; 2.1 GiB of distinct text) are numbered correctly."""
    n = int(1.05 * 2**30)
    chars = np.full(n, ord("a"), dtype=np.uint8)
    chars[-1] = ord("b")
    data = pa.py_buffer(chars)

    def one(end: int) -> pa.Array:
        return pa.Array.from_buffers(pa.string(), 1, [None, pa.py_buffer(np.array([0, end], np.int32)), data])

    codes, firsts = first_appearance(text_hashes(pa.chunked_array([one(n - 1), one(n), one(n - 1)])), 3)
    assert codes.tolist() == [0, 1, 0]
    assert firsts.between().tolist() == [0, 1]


def test_gathered_reads_the_rows_asked_chunk_by_chunk(monkeypatch, tmp_path) -> None:
    monkeypatch.setattr(dedup, "HASH_CHUNK", 3)
    chunks = [np.arange(i, i + 8, dtype=np.uint64).reshape(-1, 2) for i in (0, 8, 16)]
    index = np.array([11, 0, 5, 5, 2, 9, 7])
    got = list(gathered(iter(chunks), index, tmp_path))
    assert [len(c) for c in got] == [3, 3, 1]
    assert np.array_equal(np.concatenate(got), np.concatenate(chunks)[index])
    assert list(tmp_path.iterdir()) == []
