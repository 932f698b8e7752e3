"""The record table: JSONL, Parquet and saved `datasets` inputs of the same records give the same corpus and plans;
the table is cached, rebuilt when damaged, renewed when the input changes; column mapping and bad values."""

from __future__ import annotations

import os
import pickle
import re
import signal
import socket
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from hybrid_ir.data.formats import inputs as inputs_module
from hybrid_ir.data.formats import record_table as table_module
from hybrid_ir.data.formats.inputs import TableInput
from hybrid_ir.data.formats.load_corpus import load_corpus
from hybrid_ir.data.formats.record_table import open_record_table
from hybrid_ir.data.formats.table_corpus import TableCorpus
from hybrid_ir.data.planning.planner import plan_epoch
from hybrid_ir.data.planning.split import hold_out
from hybrid_ir.utils.errors import ConfigError, DataError
from tests.helpers.cache_faults import filling_open, read_only
from tests.helpers.jsonl import table_records, write_jsonl
from tests.helpers.negatives import held_out_listings, kept_negatives
from tests.helpers.repo import REPO

LANGS = ["de", "en", "fr"]
RENAMED = {"question": "query", "passage": "positive", "id": "qid"}


def as_columns(recs: list[dict[str, Any]], rename: dict[str, str] | None = None) -> dict[str, list[Any]]:
    keys = ["id", "lang", "question", "passage", "context", "passage_id", "negative_ids", "negatives"]
    rename = rename or {}
    return {rename.get(k, k): [r.get(k) for r in recs] for k in keys}


def write_parquet(path: Path, recs: list[dict[str, Any]], rename: dict[str, str] | None = None) -> Path:
    pq.write_table(pa.table(as_columns(recs, rename)), path)
    return path


@pytest.fixture
def cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("HYBRID_IR_CACHE", str(tmp_path / "cache"))
    return tmp_path / "cache" / "tables"


def plan_rows(corpus, mode: str, seed: int) -> list[Any]:
    plan = plan_epoch([corpus], mode, 4, 0.5, seed, epoch=1)
    return [(info, plan.pairs(i)) for i, (info, _) in enumerate(plan)]


def assert_same_corpus(corpus: TableCorpus, reference: TableCorpus) -> None:
    """Same ids, languages, arrays, pairs, groups, negatives, plans of three modes and held-out split."""
    assert (
        list(corpus.parallel_ids) == list(reference.parallel_ids) and corpus.languages == reference.languages
    )
    for name in ("group", "has_lang", "n_langs"):
        assert np.array_equal(getattr(corpus.arrays, name), getattr(reference.arrays, name))
    assert corpus.pairs == reference.pairs and dict(corpus.group) == dict(reference.group)
    assert corpus.negative_ids == reference.negative_ids and corpus.negatives == reference.negatives
    for mode, seed in (("hybrid", 0), ("cross", 3), ("mono", 5)):
        assert plan_rows(corpus, mode, seed) == plan_rows(reference, mode, seed)
    train, val = hold_out(corpus, 0.25, seed=2)
    ref_train, ref_val = hold_out(reference, 0.25, seed=2)
    assert list(train.parallel_ids) == list(ref_train.parallel_ids) and list(val.parallel_ids) == list(
        ref_val.parallel_ids
    )
    assert train.negative_ids == ref_train.negative_ids and train.negatives == ref_train.negatives


def test_jsonl_parquet_and_a_saved_dataset_give_the_same_corpus_and_plans(cache, tmp_path) -> None:
    import datasets

    recs = table_records()
    jsonl = write_jsonl(tmp_path / "train.jsonl", recs)
    parquet = write_parquet(tmp_path / "train.parquet", recs, RENAMED)
    folder = tmp_path / "parts"
    folder.mkdir()
    write_parquet(folder / "part-0.parquet", recs[:50])
    write_parquet(folder / "part-1.parquet", recs[50:])
    saved = tmp_path / "saved"
    datasets.Dataset.from_dict(as_columns(recs, RENAMED)).save_to_disk(str(saved))
    specs = [
        {"name": "mine", "format": "jsonl", "path": str(jsonl)},
        {"name": "mine", "format": "parquet", "path": str(parquet), "columns": RENAMED},
        {"name": "mine", "format": "parquet", "path": str(folder)},
        {"name": "mine", "format": "hf", "path": str(saved), "columns": RENAMED},
    ]
    corpora = [load_corpus(spec, None, download=False) for spec in specs]
    reference = corpora[0]
    assert isinstance(reference, TableCorpus) and len(reference) == 40 and reference.languages == LANGS
    assert (
        reference.group["q003"] == reference.group["q004"]
        and reference.group["q005"] == reference.group["q006"]
    )
    assert reference.pairs["en"]["q007"].context == "Context of 7" and "q001" not in reference.pairs["fr"]
    assert reference.negative_ids["de"]["q001"] == ("q003", "q010")
    assert reference.negatives["fr"]["q002"] == ("other text 2 fr",)
    for corpus in corpora[1:]:
        assert_same_corpus(corpus, reference)
    assert len({c.table.path for c in corpora}) == 4


def test_the_table_corpus_equals_the_corpus_built_in_memory(cache, tmp_path) -> None:
    """Same ids, groups, pairs, hard negatives and plans as a ParallelCorpus built from dicts of the same records,
    and the same held-out parts."""
    from hybrid_ir.data.corpus import ParallelCorpus, QAPair

    recs = table_records(30)
    table = load_corpus(
        {"name": "m", "format": "jsonl", "path": str(write_jsonl(tmp_path / "t.jsonl", recs))}, None
    )
    pairs: dict[str, dict[str, QAPair]] = {}
    listed: dict[str, dict[str, dict[str, tuple[str, ...]]]] = {"negative_ids": {}, "negatives": {}}
    for r in recs:
        pairs.setdefault(r["lang"], {})[r["id"]] = QAPair(
            r["id"], r["lang"], r["question"], r["passage"], r.get("context", "")
        )
        for key, by_lang in listed.items():
            if key in r:
                by_lang.setdefault(r["lang"], {})[r["id"]] = tuple(r[key])
    memory = ParallelCorpus("m", sorted(pairs), pairs, dict(table.group), **listed)
    assert list(table.parallel_ids) == memory.parallel_ids and table.pairs == memory.pairs
    assert table.negative_ids == memory.negative_ids and table.negatives == memory.negatives
    assert plan_rows(table, "hybrid", 1) == plan_rows(memory, "hybrid", 1)
    train, val = hold_out(table, 0.3, seed=4)
    mem_train, mem_val = hold_out(memory, 0.3, seed=4)
    assert train.pairs == mem_train.pairs and val.pairs == mem_val.pairs and val.name == "m-val"
    for part, mem_part in ((train, mem_train), (val, mem_val)):
        assert part.negative_ids == mem_part.negative_ids and part.negatives == mem_part.negatives
    assert plan_rows(train, "cross", 2) == plan_rows(mem_train, "cross", 2)


def test_a_held_out_part_keeps_its_ids_hard_negatives(cache, tmp_path) -> None:
    """Each part of a held-out split of a table corpus (and a subset of a part) keeps its ids' negative texts as
    they are and only the listed ids it holds: a held-out id is no training negative. Read through the lazy views,
    pickled or not."""
    full = load_corpus(
        {"name": "m", "format": "jsonl", "path": str(write_jsonl(tmp_path / "t.jsonl", table_records()))},
        None,
    )
    train, val = hold_out(full, 0.4, seed=2)
    inner = train.subset(np.arange(0, len(train), 2), "inner")
    for part in (train, val, inner, pickle.loads(pickle.dumps(train))):
        negative_ids, negatives = kept_negatives(full, part)
        assert negatives
        assert part.negative_ids == negative_ids and part.negatives == negatives
        assert held_out_listings(full, part)[1] > 0  # lists that name only ids the part lacks
    shortened, emptied = held_out_listings(full, train)
    assert train.negative_ids and shortened > emptied  # lists that keep some of their ids, not all
    assert all(
        set(val.parallel_ids).isdisjoint(v) for by_id in train.negative_ids.values() for v in by_id.values()
    )


def test_the_table_is_cached_and_a_changed_input_gives_a_new_one(cache, tmp_path) -> None:
    path = write_jsonl(tmp_path / "train.jsonl", table_records())
    spec = TableInput("jsonl", path)
    first = open_record_table(spec)
    assert first.built and first.path.parent == cache
    again = open_record_table(spec)
    assert not again.built and again.path == first.path
    assert open_record_table(TableInput("jsonl", path, languages=["de"])).path != first.path
    write_jsonl(path, table_records(41))
    changed = open_record_table(spec)
    assert changed.built and changed.path != first.path and len(changed.parallel_ids) == 41


@pytest.mark.parametrize(
    "damage",
    [
        lambda path: os.truncate(path / "records.arrow", (path / "records.arrow").stat().st_size // 2),
        lambda path: os.truncate(path / "rows.npy", (path / "rows.npy").stat().st_size - 8),
        lambda path: (path / "meta.json").unlink(),
        lambda path: (path / "meta.json").write_text("{not json", encoding="utf-8"),
        lambda path: (path / "parallel_ids.npy").unlink(),
    ],
    ids=["truncated-table", "truncated-rows", "no-meta", "bad-meta", "no-parallel_ids"],
)
def test_a_damaged_table_is_rebuilt(cache, tmp_path, damage) -> None:
    spec = TableInput("parquet", write_parquet(tmp_path / "train.parquet", table_records()))
    table = open_record_table(spec)
    expected = (
        table.parallel_ids.tolist(),
        table.group.tolist(),
        table.rows.tolist(),
        table.table.to_pylist(),
    )
    damage(table.path)
    rebuilt = open_record_table(spec)
    assert rebuilt.built and rebuilt.path == table.path
    got = (
        rebuilt.parallel_ids.tolist(),
        rebuilt.group.tolist(),
        rebuilt.rows.tolist(),
        rebuilt.table.to_pylist(),
    )
    assert got == expected
    assert not open_record_table(spec).built


def test_a_pickled_table_and_corpus_map_the_table_again(cache, tmp_path) -> None:
    corpus = load_corpus(
        {"name": "m", "format": "jsonl", "path": str(write_jsonl(tmp_path / "t.jsonl", table_records()))},
        None,
    )
    payload = pickle.dumps(corpus.table)
    assert len(payload) < 1000
    copy = pickle.loads(payload)
    assert copy.path == corpus.table.path and copy.table.to_pylist() == corpus.table.table.to_pylist()
    assert corpus.pairs["en"]["q001"].question == "Frage 1 in en?"  # the views exist now; a pickle drops them
    twin = pickle.loads(pickle.dumps(corpus))
    assert (
        twin.table.path == corpus.table.path
        and twin.pairs == corpus.pairs
        and list(twin.parallel_ids) == list(corpus.parallel_ids)
    )


def test_a_wrong_column_name_lists_the_input_columns(cache, tmp_path) -> None:
    parquet = write_parquet(tmp_path / "train.parquet", table_records(), RENAMED)
    with pytest.raises(
        ConfigError, match=r"no column 'id' \(schema key 'id'\); its columns are \['qid', 'lang', 'query'"
    ):
        load_corpus({"name": "m", "format": "parquet", "path": str(parquet)}, None)
    spec = {"name": "m", "format": "parquet", "path": str(parquet), "columns": {**RENAMED, "context": "ctx"}}
    with pytest.raises(
        ConfigError, match=r"no column 'ctx' \(columns.context maps schema key 'context' to it\)"
    ):
        load_corpus(spec, None)
    with pytest.raises(ConfigError, match=r"'query' is not a key of the schema"):
        load_corpus({"name": "m", "format": "parquet", "path": str(parquet), "columns": {"query": "q"}}, None)


@pytest.mark.parametrize(
    ("change", "problem"),
    [
        ({"positive": ""}, "key 'positive' is empty"),
        ({"lang": "xx"}, "unknown language code 'xx'"),
        ({"negative_ids": ["q000", "q000"]}, "negative_ids lists 'q000' twice"),
        ({"query": None}, "missing key 'query'"),
    ],
)
def test_a_bad_value_names_the_file_row_and_key(cache, tmp_path, change, problem) -> None:
    recs = table_records(10)
    table = as_columns(recs, RENAMED)
    for column, value in change.items():
        table[column][3] = value
    path = tmp_path / "bad.parquet"
    pq.write_table(pa.table(table), path)
    with pytest.raises(DataError) as info:
        load_corpus({"name": "m", "format": "parquet", "path": str(path), "columns": RENAMED}, None)
    assert str(info.value).startswith(f"{path}: row 3: ") and problem in str(info.value)


def test_duplicates_and_unknown_negative_ids_across_parquet_files(cache, tmp_path) -> None:
    folder = tmp_path / "parts"
    folder.mkdir()
    recs = table_records(10)
    write_parquet(folder / "a.parquet", recs)
    write_parquet(folder / "b.parquet", recs[:2])
    with pytest.raises(DataError) as info:
        load_corpus({"name": "m", "format": "parquet", "path": str(folder)}, None)
    assert str(info.value).startswith(f"{folder / 'b.parquet'}: row 0: duplicate (id, lang) = ('q000', 'de')")
    assert f"first seen on row 0 of {folder / 'a.parquet'}" in str(info.value)


def test_a_saved_dataset_dict_asks_for_one_split(cache, tmp_path) -> None:
    import datasets

    split = datasets.Dataset.from_dict(as_columns(table_records(5)))
    datasets.DatasetDict({"train": split, "test": split}).save_to_disk(str(tmp_path / "dd"))
    with pytest.raises(
        ConfigError, match=r"holds the splits \['test', 'train'\]; point path at one split's folder"
    ):
        load_corpus({"name": "m", "format": "hf", "path": str(tmp_path / "dd")}, None)
    assert len(load_corpus({"name": "m", "format": "hf", "path": str(tmp_path / "dd" / "train")}, None)) == 5


def test_missing_inputs_and_hub_names_without_download(cache, tmp_path) -> None:
    with pytest.raises(DataError, match="not found; expected a Parquet file"):
        load_corpus({"name": "m", "format": "parquet", "path": str(tmp_path / "none.parquet")}, None)
    with pytest.raises(ConfigError, match=r"a hub name is loaded only with data\.download=true"):
        load_corpus({"name": "m", "format": "hf", "path": "org/some-dataset"}, None, download=False)
    with pytest.raises(ConfigError, match="format=parquet needs a 'path'"):
        load_corpus({"name": "m", "format": "parquet"}, None)


def test_a_hub_dataset_gives_the_corpus_of_its_records_and_a_new_table_when_its_files_change(
    cache, tmp_path, monkeypatch
) -> None:
    """``format: hf`` with a hub name: ``datasets.load_dataset`` (replaced: no network) returns a dataset mapped from
    its cache files; the corpus equals the JSONL one of the same records, and the table follows those files."""
    import datasets

    def saved(name: str, recs: list[dict[str, Any]]) -> datasets.Dataset:
        datasets.Dataset.from_dict(as_columns(recs, RENAMED)).save_to_disk(str(tmp_path / name))
        return datasets.load_from_disk(str(tmp_path / name))

    hub = {"dataset": saved("v1", table_records())}
    calls = []

    def load_dataset(path: str, split: str | None = None, **kwargs: Any) -> datasets.Dataset:
        calls.append((path, split))
        return hub["dataset"]

    monkeypatch.setattr(datasets, "load_dataset", load_dataset)
    spec = {"name": "mine", "format": "hf", "path": "org/qa-pairs", "columns": RENAMED, "split": "train"}
    corpus = load_corpus(spec, None)
    assert calls == [("org/qa-pairs", "train")] and corpus.table.built
    assert corpus.table.path.parent == cache and corpus.table.path.name.startswith("org_qa-pairs-")
    jsonl = write_jsonl(tmp_path / "train.jsonl", table_records())
    assert_same_corpus(corpus, load_corpus({"name": "mine", "format": "jsonl", "path": str(jsonl)}, None))
    assert not load_corpus(spec, None).table.built
    hub["dataset"] = saved("v2", table_records(41))
    changed = load_corpus(spec, None)
    assert changed.table.built and changed.table.key != corpus.table.key and len(changed) == 41
    (file,) = [Path(f["filename"]) for f in hub["dataset"].cache_files]
    os.utime(file, ns=(file.stat().st_atime_ns, file.stat().st_mtime_ns + 10**9))
    touched = load_corpus(spec, None)
    assert touched.table.built and touched.table.key not in (corpus.table.key, changed.table.key)


def test_a_hub_dataset_that_cannot_be_keyed_or_loaded_names_it(cache, tmp_path, monkeypatch) -> None:
    import datasets

    spec = {"name": "mine", "format": "hf", "path": "org/qa-pairs", "split": "dev"}
    in_memory = datasets.Dataset.from_dict(as_columns(table_records(5)))
    monkeypatch.setattr(datasets, "load_dataset", lambda path, split=None, **kw: in_memory)
    with pytest.raises(DataError, match=r"org/qa-pairs: split 'dev': .*held in memory, without cache files"):
        load_corpus(spec, None)

    def offline(path: str, split: str | None = None, **kwargs: Any) -> datasets.Dataset:
        raise ConnectionError("Couldn't reach 'org/qa-pairs' on the Hub (LocalEntryNotFoundError)")

    monkeypatch.setattr(datasets, "load_dataset", offline)
    with pytest.raises(
        DataError, match=r"org/qa-pairs: split 'dev': could not load the hub dataset .*Couldn't reach"
    ):
        load_corpus(spec, None)


def table_contents(table) -> tuple[Any, ...]:
    return table.parallel_ids.tolist(), table.group.tolist(), table.rows.tolist(), table.table.to_pylist()


def test_a_same_size_edit_with_the_time_restored_gives_a_new_table(cache, tmp_path) -> None:
    """``cp -p``, ``touch -r`` and some sync tools keep the size and modification time of an edited file: the key's
    content sample still sees the edit."""
    path = write_jsonl(tmp_path / "train.jsonl", table_records())
    spec = TableInput("jsonl", path)
    first = open_record_table(spec)
    st = path.stat()
    text = path.read_text(encoding="utf-8")
    assert text.count("Frage 20 in en?") == 1
    path.write_text(text.replace("Frage 20 in en?", "Frage 2O in en?"), encoding="utf-8")
    os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns))
    assert (path.stat().st_size, path.stat().st_mtime_ns) == (st.st_size, st.st_mtime_ns)
    edited = open_record_table(spec)
    assert edited.built and edited.path != first.path
    assert TableCorpus("m", edited).pairs["en"]["q020"].question == "Frage 2O in en?"


def test_the_content_sample_of_a_many_file_input_shares_one_budget(cache, tmp_path, monkeypatch) -> None:
    """A folder of many Parquet files costs no more to key than one file: the 3 MiB are shared among its files."""
    folder = tmp_path / "parts"
    folder.mkdir()
    recs = table_records()
    for part in range(4):
        write_parquet(folder / f"{part}.parquet", recs[part::4])
    budgets: list[int] = []
    real = inputs_module.content_sample
    monkeypatch.setattr(
        inputs_module, "content_sample", lambda file, budget: budgets.append(budget) or real(file, budget)
    )
    assert len(open_record_table(TableInput("parquet", folder)).parallel_ids) == 40
    assert budgets == [(3 << 20) // 4] * 4


@pytest.mark.parametrize(
    "writer",
    [
        pytest.param(
            "arrow", marks=pytest.mark.skipif(not os.path.exists("/dev/full"), reason="needs /dev/full")
        ),
        "npy",
    ],
)
def test_a_full_disk_while_writing_the_table_is_one_clean_error(cache, tmp_path, monkeypatch, writer) -> None:
    """The Arrow file (written to /dev/full: the real ENOSPC of pyarrow) or the arrays (the disk fills mid-array)
    cannot be written: one DataError naming the table, the cache and what to do; nothing is left but the lock, and
    the next run builds the table."""
    spec = TableInput("jsonl", write_jsonl(tmp_path / "train.jsonl", table_records()))
    with monkeypatch.context() as patch:
        if writer == "arrow":
            real = pa.OSFile
            patch.setattr(
                pa, "OSFile", lambda path, mode="r": real("/dev/full" if mode == "wb" else path, mode)
            )
        else:
            patch.setattr(table_module, "open", filling_open(room=200), raising=False)
        with pytest.raises(DataError) as err:
            open_record_table(spec)
    assert re.fullmatch(
        re.escape(f"{cache}/train-")
        + r"\w+"
        + re.escape(
            ": record table: could not be written (No space left on device; the partial copy was removed): free "
            f"space on the disk of the cache {cache.parent} ($HYBRID_IR_CACHE), or point HYBRID_IR_CACHE at a "
            "folder on a larger disk"
        ),
        str(err.value),
    )
    assert [p.name for p in cache.iterdir() if p.suffix != ".lock"] == []
    table = open_record_table(spec)
    assert table.built and len(table.parallel_ids) == 40


def test_a_complete_table_opens_in_a_read_only_cache(cache, tmp_path, monkeypatch) -> None:
    """A cluster's shared cache, built once and mounted read-only: the table opens without writing anything; one that
    would need a build says what to do."""
    source = write_parquet(tmp_path / "train.parquet", table_records())
    built = open_record_table(TableInput("parquet", source))
    read_only(monkeypatch, cache.parent)
    again = open_record_table(TableInput("parquet", source))
    assert not again.built and again.path == built.path
    assert table_contents(again) == table_contents(built)
    assert table_contents(pickle.loads(pickle.dumps(again))) == table_contents(built)
    with pytest.raises(
        DataError, match=r"record table: missing or incomplete, .*\(Read-only file system\): build it"
    ):
        open_record_table(TableInput("parquet", source, languages=["de"]))


KILLED = """
import os, signal, sys
from pathlib import Path
import numpy as np
from hybrid_ir.data.formats.inputs import TableInput
from hybrid_ir.data.formats.record_table import open_record_table
np.save = lambda *args: os.kill(os.getpid(), signal.SIGKILL)  # killed once the Arrow file is written
open_record_table(TableInput("jsonl", Path(sys.argv[1])))
"""


def test_a_killed_build_leaves_a_folder_that_the_next_build_removes(cache, tmp_path) -> None:
    path = write_jsonl(tmp_path / "train.jsonl", table_records())
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    proc = subprocess.Popen([sys.executable, "-c", KILLED, str(path)], env=env)
    assert proc.wait(timeout=300) == -signal.SIGKILL
    (left,) = [p for p in cache.iterdir() if p.is_dir()]
    assert left.name.startswith(".train-") and left.name.endswith(f".tmp@{socket.gethostname()}@{proc.pid}")
    assert (left / "records.arrow").stat().st_size > 0
    table = open_record_table(TableInput("jsonl", path))
    assert table.built and [p for p in cache.iterdir() if p.is_dir()] == [table.path]


def test_an_input_that_cannot_be_read_names_the_file(cache, tmp_path) -> None:
    bad = tmp_path / "train.jsonl.gz"
    bad.write_bytes(b'{"id": "q1"}\n')
    with pytest.raises(DataError, match=re.escape(f"{bad}: file: could not be read (Not a gzipped file")):
        open_record_table(TableInput("jsonl", bad))
    assert [p for p in cache.iterdir() if p.is_dir()] == []
