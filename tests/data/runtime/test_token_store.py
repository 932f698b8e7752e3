"""The memory-mapped token store: contents, reuse, keys, damage, concurrent builders, pickling."""

from __future__ import annotations

import json
import os
import pickle
import re
import socket
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pytest

from hybrid_ir.data.corpus import ParallelCorpus
from hybrid_ir.data.formats import record_table
from hybrid_ir.data.formats.jsonl import load_jsonl_corpus
from hybrid_ir.data.planning.split import hold_out
from hybrid_ir.data.runtime import dedup
from hybrid_ir.data.runtime import token_store as store_module
from hybrid_ir.data.runtime.token_store import open_token_store, take_texts
from hybrid_ir.models.tokenizer import TextTokenizer
from hybrid_ir.utils.errors import DataError
from tests.helpers.cache_faults import filling_open, read_only
from tests.helpers.fakes import CountingTokenizer
from tests.helpers.jsonl import write_jsonl
from tests.helpers.repo import REPO

LANGS = ["de", "en", "zh"]


def passage_of(i: int, lang: str, extra: str = "") -> str:
    return f"Passage {min(i, 1)} in {lang}, some longer text {extra}" + " word" * (i % 7)


def write_corpus(path: Path, n: int = 30, extra: str = "", negatives: bool = False) -> Path:
    """``n`` ids in de/en/zh (zh for every third id only); ids 0 and 1 share their passages (one group). With
    ``negatives``, every even id lists negative texts in de and en: the next id's passage, one text that several
    ids list, and one of its own."""
    records = []
    for i in range(n):
        for lang in LANGS:
            if lang == "zh" and i % 3:
                continue
            record = {
                "id": f"q{i}",
                "lang": lang,
                "question": f"  Frage {i} {lang}?\n",
                "passage": passage_of(i, lang, extra),
            }
            if negatives and lang != "zh" and i % 2 == 0:
                own = f"Negative of {i} in {lang} {extra}" + " more" * (i % 5)
                record["negatives"] = [passage_of(i + 3, lang, extra), f"Shared negative {lang}", own]
            records.append(record)
    return write_jsonl(path, records)


@pytest.fixture
def cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("HYBRID_IR_CACHE", str(tmp_path / "cache"))
    return tmp_path / "cache" / "stores"


@pytest.fixture(params=[False, True], ids=["texts", "with-negatives"])
def corpus(tmp_path: Path, request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> ParallelCorpus:
    """The corpus of :func:`write_corpus`, its record table written in chunks of 16 rows (so its columns, and the
    store's reads of them, span several chunks)."""
    monkeypatch.setattr(record_table, "BATCH_ROWS", 16)
    return load_jsonl_corpus(write_corpus(tmp_path / "train.jsonl", negatives=request.param), "mine")


def distinct_texts(corpus: ParallelCorpus) -> int:
    """The distinct questions plus the distinct passages and listed negative texts (one set)."""
    pairs = [p for by in corpus.pairs.values() for p in by.values()]
    listed = {t for by in corpus.negatives.values() for texts in by.values() for t in texts}
    return len({p.question for p in pairs}) + len({p.passage for p in pairs} | listed)


def tok(e5_tokenizer, max_length: int = 24) -> CountingTokenizer:
    return CountingTokenizer(e5_tokenizer, "query: ", "passage: ", max_length)


def assert_equals_direct_tokenisation(
    store, corpus: ParallelCorpus, e5_tokenizer, max_length: int = 24
) -> None:
    for lang_index, lang in enumerate(corpus.languages):
        for i, parallel_id in enumerate(corpus.parallel_ids):
            pair = corpus.pairs[lang].get(parallel_id)
            if pair is None:
                with pytest.raises(KeyError):
                    store.ids(i, lang_index, 0)
                continue
            for kind, prefix, text in ((0, "query: ", pair.question), (1, "passage: ", pair.passage)):
                direct = e5_tokenizer(prefix + text.strip(), truncation=True, max_length=max_length)[
                    "input_ids"
                ]
                assert store.ids(i, lang_index, kind) == direct
            listed = corpus.negatives.get(lang, {}).get(parallel_id, ())
            for position, text in enumerate(listed):
                direct = e5_tokenizer("passage: " + text.strip(), truncation=True, max_length=max_length)
                assert store.negative(i, lang_index, position) == direct["input_ids"]
            with pytest.raises(KeyError):
                store.negative(i, lang_index, len(listed))


def test_token_ids_equal_direct_tokenisation_and_the_store_is_reused(cache, corpus, e5_tokenizer) -> None:
    tokenizer = tok(e5_tokenizer)
    store = open_token_store(corpus, tokenizer, chunk=7)
    assert store.built and store.path is not None and store.path.parent == cache
    assert isinstance(store.tokens.base, np.memmap)  # a view of the mapping, not a copy
    assert_equals_direct_tokenisation(store, corpus, e5_tokenizer)
    unique = distinct_texts(corpus)
    assert tokenizer.texts == unique < 2 * sum(len(by) for by in corpus.pairs.values())
    again = open_token_store(corpus, tokenizer)
    assert not again.built and again.path == store.path and tokenizer.texts == unique
    assert_equals_direct_tokenisation(again, corpus, e5_tokenizer)


def test_a_changed_input_or_tokenizer_gives_a_new_store(cache, corpus, tmp_path, e5_tokenizer) -> None:
    first = open_token_store(corpus, tok(e5_tokenizer)).path
    changed = load_jsonl_corpus(write_corpus(tmp_path / "changed.jsonl", extra="edited"), "mine")
    second = open_token_store(changed, tok(e5_tokenizer))
    shorter = open_token_store(corpus, tok(e5_tokenizer, max_length=8))
    assert second.built and shorter.built
    assert len({first, second.path, shorter.path}) == 3
    assert_equals_direct_tokenisation(shorter, corpus, e5_tokenizer, max_length=8)


@pytest.mark.parametrize(
    "damage",
    [
        lambda path: os.truncate(path / "tokens.bin", (path / "tokens.bin").stat().st_size - 4),
        lambda path: (path / "meta.json").unlink(),
        lambda path: (path / "meta.json").write_text("{not json", encoding="utf-8"),
        lambda path: (path / "offsets.bin").write_bytes(b"\0" * (path / "offsets.bin").stat().st_size),
        lambda path: os.truncate(path / "neg_offsets.bin", (path / "neg_offsets.bin").stat().st_size - 8),
    ],
    ids=["truncated", "no-meta", "bad-meta", "zeroed-offsets", "truncated-negative-offsets"],
)
def test_a_damaged_store_is_rebuilt(cache, corpus, e5_tokenizer, damage) -> None:
    path = open_token_store(corpus, tok(e5_tokenizer)).path
    damage(path)
    rebuilt = open_token_store(corpus, tok(e5_tokenizer))
    assert rebuilt.built and rebuilt.path == path
    assert_equals_direct_tokenisation(rebuilt, corpus, e5_tokenizer)
    assert not open_token_store(corpus, tok(e5_tokenizer)).built


def test_without_the_cache_nothing_is_written(cache, corpus, e5_tokenizer) -> None:
    store = open_token_store(corpus, tok(e5_tokenizer), use_cache=False)
    assert store.path is None
    assert_equals_direct_tokenisation(store, corpus, e5_tokenizer)
    assert not cache.exists() or not list(cache.iterdir())


def test_a_pickled_store_is_mapped_again_not_copied(cache, corpus, e5_tokenizer) -> None:
    store = open_token_store(corpus, tok(e5_tokenizer))
    payload = pickle.dumps(store)
    assert len(payload) < 1000
    copy = pickle.loads(payload)
    assert isinstance(copy.tokens.base, np.memmap) and copy.path == store.path
    assert_equals_direct_tokenisation(copy, corpus, e5_tokenizer)


BUILD = """
import sys
from transformers import AutoTokenizer
from hybrid_ir.data.runtime import token_store as store_module
from hybrid_ir.models.tokenizer import TextTokenizer
from hybrid_ir.data.formats import record_table
from hybrid_ir.data.formats.jsonl import load_jsonl_corpus
from hybrid_ir.data.runtime.token_store import open_token_store
tokenizer = TextTokenizer(AutoTokenizer.from_pretrained(sys.argv[1]), "query: ", "passage: ", 24)
corpus = load_jsonl_corpus(sys.argv[2], "mine")
store = open_token_store(corpus, tokenizer, chunk=3)
print(store.built, store.path, corpus.table.built, corpus.table.path)
"""


@pytest.mark.slow
def test_two_processes_on_one_machine_build_the_store_once(cache, tmp_path, e5_dir, e5_tokenizer) -> None:
    """Two ranks start together: one builds the record table and the store under their locks, the other waits and
    maps the finished ones."""
    data = write_corpus(tmp_path / "big.jsonl", n=300)
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", BUILD, str(e5_dir), str(data)], stdout=subprocess.PIPE, text=True, env=env
        )
        for _ in range(2)
    ]
    outputs = [p.communicate(timeout=300)[0].split() for p in procs]
    assert all(p.returncode == 0 for p in procs)
    assert sorted(built for built, *_ in outputs) == ["False", "True"]
    assert sorted(table_built for _, _, table_built, _ in outputs) == ["False", "True"]
    assert outputs[0][1] == outputs[1][1] and outputs[0][3] == outputs[1][3]
    store = open_token_store(load_jsonl_corpus(data, "mine"), tok(e5_tokenizer))
    assert not store.built and str(store.path) == outputs[0][1]
    assert_equals_direct_tokenisation(store, load_jsonl_corpus(data, "mine"), e5_tokenizer)


def test_parquet_held_out_and_rewritten_inputs_give_their_own_correct_stores(
    cache, tmp_path, e5_tokenizer
) -> None:
    """A Parquet input and the held-out parts of a table corpus tokenise exactly as the tokenizer does, each in its
    own store; rewriting the input file in place gives a new table and a new store."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    from hybrid_ir.data.formats.load_corpus import load_corpus
    from hybrid_ir.data.planning.split import hold_out

    jsonl = write_corpus(tmp_path / "train.jsonl")
    lines = jsonl.read_text(encoding="utf-8").splitlines()
    pq.write_table(pa.Table.from_pylist([json.loads(line) for line in lines]), tmp_path / "train.parquet")
    corpus = load_corpus({"name": "mine", "format": "parquet", "path": str(tmp_path / "train.parquet")}, None)
    store = open_token_store(corpus, tok(e5_tokenizer))
    assert_equals_direct_tokenisation(store, corpus, e5_tokenizer)
    paths = {store.path}
    for part in hold_out(corpus, 0.3, seed=1):
        part_store = open_token_store(part, tok(e5_tokenizer))
        assert_equals_direct_tokenisation(part_store, part, e5_tokenizer)
        paths.add(part_store.path)
    first = load_jsonl_corpus(jsonl, "mine")
    before = open_token_store(first, tok(e5_tokenizer)).path
    write_corpus(jsonl, extra="edited")
    rewritten = load_jsonl_corpus(jsonl, "mine")
    after = open_token_store(rewritten, tok(e5_tokenizer))
    assert rewritten.table.path != first.table.path and after.built
    assert_equals_direct_tokenisation(after, rewritten, e5_tokenizer)
    assert len(paths | {before, after.path}) == 5


def dictionary_store(corpus: ParallelCorpus, tokenizer: TextTokenizer) -> dict[str, Any]:
    """The store's arrays as a dictionary-encoding build makes them (every distinct text held in memory): the
    reference the hash-deduplicating build must reproduce file for file. The listed negative texts of every (id,
    language), in that order, are encoded together with, and after, the passages."""
    table, table_rows = corpus.text_rows()
    present = table_rows >= 0
    row_ids = table_rows[present]
    rows = np.full((*table_rows.shape, 2), -1, dtype=np.int32)
    listed = [
        list(corpus.negatives.get(lang, {}).get(parallel_id, ())) if table_rows[i, col] >= 0 else []
        for i, parallel_id in enumerate(corpus.parallel_ids)
        for col, lang in enumerate(corpus.languages)
    ]
    tokens: list[int] = []
    lengths: list[int] = []
    for kind, column in enumerate(("question", "passage")):
        texts = table.column(column)
        whole = len(row_ids) == len(texts)  # every row of the table is used: encode in table order
        texts = (texts if whole else texts.take(pa.array(row_ids))).to_pylist()
        negatives = [t for cell in listed for t in cell] if kind == 1 else []
        encoded = pa.array(texts + negatives, pa.string()).dictionary_encode()
        codes = encoded.indices.to_numpy()
        rows[..., kind][present] = (codes[row_ids] if whole else codes[: len(texts)]) + len(lengths)
        neg_texts = codes[len(texts) :] + len(lengths)
        for ids in tokenizer(encoded.dictionary.to_pylist(), ("query", "passage")[kind]):
            tokens += ids
            lengths.append(len(ids))
    return {
        "tokens": np.array(tokens, np.int32).tobytes(),
        "offsets": np.concatenate([[0], np.cumsum(lengths)]),
        "rows": rows,
        "neg_offsets": np.concatenate([[0], np.cumsum([len(cell) for cell in listed])]),
        "neg_texts": neg_texts,
    }


def test_the_hash_build_writes_the_dictionary_builds_arrays(cache, corpus, e5_tokenizer, monkeypatch) -> None:
    """Same token ids, offsets, rows and listed negatives as the dictionary-encoding build, for a table corpus,
    its held-out parts and another subset (subsets of the table's rows, with their negatives) and a corpus in
    memory; hashed and tokenised in several chunks."""
    monkeypatch.setattr(dedup, "HASH_CHUNK", 5)
    monkeypatch.setattr(dedup, "BUCKET", 8)  # several buckets
    pairs = {lang: dict(by) for lang, by in corpus.pairs.items()}
    listed = {lang: dict(by) for lang, by in corpus.negatives.items()}
    in_memory = ParallelCorpus("memory", corpus.languages, pairs, dict(corpus.group), negatives=listed)
    some = corpus.subset(np.arange(3, len(corpus), 2), "some")
    for part in (corpus, *hold_out(corpus, 0.3, seed=1), some, in_memory):
        store = open_token_store(part, tok(e5_tokenizer), use_cache=False, chunk=4)
        assert (store.neg_offsets[-1] > 0) == bool(corpus.negatives)  # each part keeps some of the texts
        expected = dictionary_store(part, tok(e5_tokenizer))
        assert store.tokens.tobytes() == expected["tokens"]
        for name in ("offsets", "rows", "neg_offsets", "neg_texts"):
            assert np.array_equal(getattr(store, name), expected[name]), name
        assert_equals_direct_tokenisation(store, part, e5_tokenizer)


def test_identical_negative_texts_and_passages_share_one_text(cache, tmp_path, e5_tokenizer) -> None:
    """A listed negative that is some record's passage, and one that several records list, are one text of the
    store; the tokenizer sees each distinct text once."""
    corpus = load_jsonl_corpus(write_corpus(tmp_path / "train.jsonl", negatives=True), "mine")
    tokenizer = tok(e5_tokenizer)
    store = open_token_store(corpus, tokenizer, chunk=5)
    en, width = corpus.languages.index("en"), len(corpus.languages)

    def text_of(parallel_id: str, text: str) -> int:
        """The store's text number of ``text`` in the en list of ``parallel_id``."""
        cell = corpus.index_of[parallel_id] * width + en
        return int(store.neg_texts[store.neg_offsets[cell] + corpus.negatives["en"][parallel_id].index(text)])

    assert len({text_of(f"q{i}", "Shared negative en") for i in (0, 2, 4, 6)}) == 1
    assert text_of("q4", passage_of(7, "en")) == store.rows[corpus.index_of["q7"], en, 1]
    assert tokenizer.texts == len(store.offsets) - 1 == distinct_texts(corpus)


@pytest.mark.parametrize("room", [0, 300])
def test_a_full_disk_while_writing_the_store_is_one_clean_error(
    cache, corpus, e5_tokenizer, monkeypatch, room
) -> None:
    """The disk fills up before or in the middle of the token ids: one DataError naming the store, the cache and
    what to do; nothing is left but the lock, and the next run builds the store."""
    with monkeypatch.context() as patch:
        patch.setattr(store_module, "open", filling_open(room), raising=False)
        with pytest.raises(DataError) as err:
            open_token_store(corpus, tok(e5_tokenizer), chunk=7)
    assert re.fullmatch(
        re.escape(f"{cache}/mine-")
        + r"\w+"
        + re.escape(
            ": token store: could not be written (No space left on device; the partial copy was removed): free "
            f"space on the disk of the cache {cache.parent} ($HYBRID_IR_CACHE), or point HYBRID_IR_CACHE at a "
            "folder on a larger disk"
        ),
        str(err.value),
    )
    assert [p.name for p in cache.iterdir() if p.suffix != ".lock"] == []
    store = open_token_store(corpus, tok(e5_tokenizer))
    assert store.built
    assert_equals_direct_tokenisation(store, corpus, e5_tokenizer)


def test_a_complete_store_and_table_open_in_a_read_only_cache(
    cache, tmp_path, e5_tokenizer, monkeypatch
) -> None:
    """A cluster's shared cache, built once and mounted read-only: the record table and the store open without
    writing anything and give the same token ids; a store that would need a build says what to do."""
    data = write_corpus(tmp_path / "train.jsonl")
    built = open_token_store(load_jsonl_corpus(data, "mine"), tok(e5_tokenizer))
    read_only(monkeypatch, cache.parent)
    corpus = load_jsonl_corpus(data, "mine")
    tokenizer = tok(e5_tokenizer)
    store = open_token_store(corpus, tokenizer)
    assert not store.built and not corpus.table.built and store.path == built.path and tokenizer.texts == 0
    assert_equals_direct_tokenisation(store, corpus, e5_tokenizer)
    with pytest.raises(
        DataError, match=r"token store: missing or incomplete, .*\(Read-only file system\): build it"
    ):
        open_token_store(corpus, tok(e5_tokenizer, max_length=8))


def test_a_stale_temporary_folder_of_a_dead_build_is_removed_by_the_next_build(
    cache, corpus, e5_tokenizer
) -> None:
    """A killed store build leaves its temporary folder (GBs at 1 M ids); the next build removes it when its process
    is gone, and keeps the one of a live builder."""
    finished = subprocess.Popen([sys.executable, "-c", "pass"])
    finished.wait()
    host = socket.gethostname()
    stale = cache / f".mine-0123.tmp@{host}@{finished.pid}"
    live = cache / f".mine-4567.tmp@{host}@{os.getpid()}"
    for tmp in (stale, live):
        tmp.mkdir(parents=True)
        (tmp / "tokens.bin").write_bytes(b"\0" * 4096)
    store = open_token_store(corpus, tok(e5_tokenizer))
    assert store.built and not stale.exists() and live.exists()


def test_take_texts_reads_rows_chunk_by_chunk_in_the_order_asked() -> None:
    texts = pa.chunked_array([["a0", "a1"], ["b0"], [], ["c0", "c1", "c2"]])
    rows = np.array([5, 0, 2, 3, 1, 5])
    assert (
        take_texts(texts, rows)
        == ["c2", "a0", "b0", "c0", "a1", "c2"]
        == [texts.to_pylist()[r] for r in rows]
    )
    assert take_texts(texts, np.array([], dtype=np.int64)) == []
