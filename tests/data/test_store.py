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

import numpy as np
import pyarrow as pa
import pytest

from hybrid_ir.data import store as store_module
from hybrid_ir.data.collate import TextTokenizer
from hybrid_ir.data.corpus import ParallelCorpus
from hybrid_ir.data.jsonl import load_jsonl_corpus
from hybrid_ir.data.split import hold_out
from hybrid_ir.data.store import first_appearance, open_token_store, text_hashes
from hybrid_ir.utils.errors import DataError
from tests.helpers.cache_faults import filling_open, read_only

LANGS = ["de", "en", "zh"]


class CountingTokenizer(TextTokenizer):
    """Counts the texts it is asked to tokenise."""

    texts: int = 0

    def __call__(self, texts, kind):
        self.texts += len(texts)
        return super().__call__(texts, kind)


def write_corpus(path: Path, n: int = 30, extra: str = "") -> Path:
    """``n`` ids in de/en/zh (zh for every third id only); ids 0 and 1 share their passages (one group)."""
    records = []
    for i in range(n):
        for lang in LANGS:
            if lang == "zh" and i % 3:
                continue
            passage = f"Passage {min(i, 1)} in {lang}, some longer text {extra}" + " word" * (i % 7)
            records.append(
                {"id": f"q{i}", "lang": lang, "question": f"  Frage {i} {lang}?\n", "passage": passage}
            )
    path.write_text("\n".join(json.dumps(r, ensure_ascii=False) for r in records) + "\n", encoding="utf-8")
    return path


@pytest.fixture
def cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("HYBRID_IR_CACHE", str(tmp_path / "cache"))
    return tmp_path / "cache" / "stores"


@pytest.fixture
def corpus(tmp_path: Path) -> ParallelCorpus:
    return load_jsonl_corpus(write_corpus(tmp_path / "train.jsonl"), "mine")


def tok(e5_tokenizer, max_length: int = 24) -> CountingTokenizer:
    return CountingTokenizer(e5_tokenizer, "query: ", "passage: ", max_length)


def assert_equals_direct_tokenisation(
    store, corpus: ParallelCorpus, e5_tokenizer, max_length: int = 24
) -> None:
    for lang_index, lang in enumerate(corpus.languages):
        for i, pid in enumerate(corpus.pids):
            pair = corpus.pairs[lang].get(pid)
            if pair is None:
                with pytest.raises(KeyError):
                    store.ids(i, lang_index, 0)
                continue
            for kind, prefix, text in ((0, "query: ", pair.question), (1, "passage: ", pair.passage)):
                direct = e5_tokenizer(prefix + text.strip(), truncation=True, max_length=max_length)[
                    "input_ids"
                ]
                assert store.ids(i, lang_index, kind) == direct


def test_token_ids_equal_direct_tokenisation_and_the_store_is_reused(cache, corpus, e5_tokenizer) -> None:
    tokenizer = tok(e5_tokenizer)
    store = open_token_store(corpus, tokenizer, chunk=7)
    assert store.built and store.path is not None and store.path.parent == cache
    assert isinstance(store.tokens, np.memmap)
    assert_equals_direct_tokenisation(store, corpus, e5_tokenizer)
    unique = len({p.question for by in corpus.pairs.values() for p in by.values()}) + len(
        {p.passage for by in corpus.pairs.values() for p in by.values()}
    )
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
    ],
    ids=["truncated", "no-meta", "bad-meta", "zeroed-offsets"],
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
    assert isinstance(copy.tokens, np.memmap) and copy.path == store.path
    assert_equals_direct_tokenisation(copy, corpus, e5_tokenizer)


BUILD = """
import sys
from transformers import AutoTokenizer
from hybrid_ir.data import store as store_module
from hybrid_ir.data.collate import TextTokenizer
from hybrid_ir.data.jsonl import load_jsonl_corpus
from hybrid_ir.data.store import open_token_store
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
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[2])}
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

    from hybrid_ir.data.loading import load_corpus
    from hybrid_ir.data.split import hold_out

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


def test_first_appearance_numbers_distinct_texts_in_order_of_first_appearance() -> None:
    texts = pa.chunked_array([["b", "a", "b"], [], ["c", "a", "", "c", ""]])
    codes, firsts = first_appearance(text_hashes(texts))
    assert codes.tolist() == [0, 1, 0, 2, 1, 3, 2, 3]
    assert firsts.tolist() == [0, 1, 3, 5]
    empty_codes, empty_firsts = first_appearance(text_hashes(pa.chunked_array([], pa.string())))
    assert len(empty_codes) == len(empty_firsts) == 0


def test_texts_that_share_one_hash_half_stay_apart() -> None:
    """Two texts are one only when both 64-bit hashes agree."""
    hashes = np.array([[1, 5], [1, 6], [1, 5], [2, 6]], dtype=np.uint64)
    codes, firsts = first_appearance(hashes)
    assert codes.tolist() == [0, 1, 0, 2] and firsts.tolist() == [0, 1, 3]


def dictionary_store(
    corpus: ParallelCorpus, tokenizer: TextTokenizer
) -> tuple[bytes, np.ndarray, np.ndarray]:
    """The store's arrays as the dictionary-encoding build made them (every distinct text held in memory): the
    reference the hash-deduplicating build must reproduce file for file."""
    table, table_rows = corpus.text_rows()
    present = table_rows >= 0
    row_ids = table_rows[present]
    rows = np.full((*table_rows.shape, 2), -1, dtype=np.int32)
    tokens: list[int] = []
    lengths: list[int] = []
    for kind, column in enumerate(("question", "passage")):
        texts = table.column(column)
        whole = len(row_ids) == len(texts)  # every row of the table is used: encode in table order
        texts = (texts if whole else texts.take(pa.array(row_ids))).combine_chunks().dictionary_encode()
        codes = texts.indices.to_numpy()
        rows[..., kind][present] = (codes[row_ids] if whole else codes) + len(lengths)
        for ids in tokenizer(texts.dictionary.to_pylist(), ("query", "passage")[kind]):
            tokens += ids
            lengths.append(len(ids))
    return np.array(tokens, np.int32).tobytes(), np.concatenate([[0], np.cumsum(lengths)]), rows


def test_the_hash_build_writes_the_dictionary_builds_arrays(cache, corpus, e5_tokenizer, monkeypatch) -> None:
    """Same token ids, offsets and rows as the dictionary-encoding build, for a table corpus, its held-out parts
    (subsets of the table's rows) and a corpus in memory; hashed and tokenised in several chunks."""
    monkeypatch.setattr(store_module, "HASH_CHUNK", 5)
    pairs = {lang: dict(by) for lang, by in corpus.pairs.items()}
    in_memory = ParallelCorpus("memory", corpus.languages, pairs, dict(corpus.group))
    for part in (corpus, *hold_out(corpus, 0.3, seed=1), in_memory):
        store = open_token_store(part, tok(e5_tokenizer), use_cache=False, chunk=4)
        tokens, offsets, rows = dictionary_store(part, tok(e5_tokenizer))
        assert store.tokens.tobytes() == tokens
        assert store.offsets.tolist() == offsets.tolist()
        assert np.array_equal(store.rows, rows)


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

    codes, firsts = first_appearance(text_hashes(pa.chunked_array([one(n - 1), one(n), one(n - 1)])))
    assert codes.tolist() == [0, 1, 0]
    assert firsts.tolist() == [0, 1]


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
