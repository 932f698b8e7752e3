"""Tests for the generic JSONL training format and the union-find grouping."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from hybrid_ir.data.corpus import group_ids
from hybrid_ir.data.formats import jsonl
from hybrid_ir.data.formats.jsonl import load_jsonl_corpus
from hybrid_ir.data.formats.lareqa_files import load_lareqa_corpus
from hybrid_ir.data.planning.planner import plan_epoch
from hybrid_ir.tasks.instantiate import compose_config
from hybrid_ir.utils.errors import DataError
from tests.helpers.corpora import langs_of
from tests.helpers.lareqa import shared_lareqa_root, write_toy_lareqa
from tests.helpers.repo import REPO

CONF = REPO / "conf"


@pytest.fixture(autouse=True)
def _private_cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The record tables these files are read into go to the test's own cache, not the user's."""
    monkeypatch.setenv("HYBRID_IR_CACHE", str(tmp_path / "cache"))


def rec(parallel_id: str, lang: str, **extra) -> dict:
    return {
        "id": parallel_id,
        "lang": lang,
        "question": f"Q {parallel_id} {lang}",
        "passage": f"P {parallel_id} {lang}",
        **extra,
    }


def write_lines(tmp_path: Path, lines: list) -> Path:
    path = tmp_path / "train.jsonl"
    path.write_text(
        "\n".join(line if isinstance(line, str) else json.dumps(line, ensure_ascii=False) for line in lines)
        + "\n",
        encoding="utf-8",
    )
    return path


GOOD = [
    rec("a", "en", context="ctx a", passage_id="P1"),
    rec("a", "de", passage_id="P1"),
    rec("b", "en", passage_id="P1"),
    rec("c", "en"),
    "",
    rec("c", "fr", context="ctx c"),
    rec("d", "de", passage_id="P2", extra_key=[1, 2]),
]


def test_reads_pairs_languages_and_groups(tmp_path):
    corpus = load_jsonl_corpus(write_lines(tmp_path, GOOD), "mine")
    assert corpus.name == "mine" and corpus.languages == ["de", "en", "fr"]
    assert corpus.parallel_ids == ["a", "b", "c", "d"]
    assert corpus.pairs["en"]["a"].context == "ctx a"
    assert corpus.pairs["de"]["a"].context == ""
    assert corpus.pairs["fr"]["c"].passage == "P c fr"
    assert langs_of(corpus, "c") == ["en", "fr"]
    assert corpus.group["a"] == corpus.group["b"]
    assert len({corpus.group["a"], corpus.group["c"], corpus.group["d"]}) == 3
    assert corpus.source.endswith("train.jsonl")


def test_language_filter(tmp_path):
    path = write_lines(tmp_path, GOOD)
    corpus = load_jsonl_corpus(path, "mine", languages=["en", "fr"])
    assert corpus.languages == ["en", "fr"] and corpus.parallel_ids == ["a", "b", "c"]
    with pytest.raises(DataError, match=r"no records in \['es'\]"):
        load_jsonl_corpus(path, "mine", languages=["en", "es"])
    with pytest.raises(DataError, match="unknown language code 'xx'"):
        load_jsonl_corpus(path, "mine", languages=["xx"])


BAD = {
    "invalid json": ('{"id": "x", "lang": "en",', "line 2", "invalid JSON"),
    "not an object": ('["x", "en"]', "line 2", "JSON object"),
    "missing key": ({"id": "x", "lang": "en", "question": "q"}, "line 2", "missing key 'passage'"),
    "empty question": (rec("x", "en") | {"question": "  "}, "line 2", "'question' is empty"),
    "wrong type": (rec("x", "en") | {"passage": 3}, "line 2", "'passage' must be a string, got int"),
    "wrong context type": (rec("x", "en", context=None), "line 2", "'context' must be a string"),
    "empty passage_id": (rec("x", "en", passage_id=""), "line 2", "'passage_id' is empty"),
    "unknown lang": (rec("x", "english"), "line 2", "unknown language code 'english'"),
    "duplicate": (rec("a", "en"), "line 2", "duplicate (id, lang) = ('a', 'en'), first seen on line 1"),
    "negative_ids not a list": (
        rec("x", "en", negative_ids="a"),
        "line 2",
        "'negative_ids' must be a list of strings (ids of other records), got str",
    ),
    "negative_ids item": (
        rec("x", "en", negative_ids=["a", 7]),
        "line 2",
        "negative_ids[1] must be a non-empty",
    ),
    "negative_ids empty id": (
        rec("x", "en", negative_ids=[" "]),
        "line 2",
        "negative_ids[0] must be a non-empty",
    ),
    "negative_ids twice": (rec("x", "en", negative_ids=["a", "a"]), "line 2", "negative_ids lists 'a' twice"),
    "negative_ids own id": (rec("x", "en", negative_ids=["x"]), "line 2", "the record's own id 'x'"),
    "negatives not a list": (
        rec("x", "en", negatives={"t": 1}),
        "line 2",
        "'negatives' must be a list of strings (passage texts), got dict",
    ),
    "negatives empty text": (
        rec("x", "en", negatives=["ok", ""]),
        "line 2",
        "negatives[1] must be a non-empty",
    ),
}


@pytest.mark.parametrize("case", sorted(BAD))
def test_malformed_record_names_file_and_line(tmp_path, case):
    line, where, problem = BAD[case]
    path = write_lines(tmp_path, [rec("a", "en"), line, rec("z", "en")])
    with pytest.raises(DataError) as info:
        load_jsonl_corpus(path, "mine")
    assert str(info.value).startswith(f"{path}: {where}: ")
    assert problem in str(info.value)


def test_hard_negatives_are_read_and_stored_per_language(tmp_path):
    lines = [
        rec("a", "en", negative_ids=["c", "b"], negatives=["some other text"]),
        rec("a", "de", negative_ids=["d"]),
        rec("b", "en", negative_ids=[]),
        rec("c", "en"),
        rec("d", "fr"),
    ]
    corpus = load_jsonl_corpus(write_lines(tmp_path, lines), "mine")
    assert corpus.negative_ids == {"en": {"a": ("c", "b")}, "de": {"a": ("d",)}}
    assert corpus.negatives == {"en": {"a": ("some other text",)}}
    # listed ids share the strings of the records' own ids (no copy per mention)
    assert corpus.negative_ids["en"]["a"][0] is next(
        parallel_id for parallel_id in corpus.pairs["en"] if parallel_id == "c"
    )
    # an id that exists only in a language left out by the filter is still an id of the file
    kept = load_jsonl_corpus(write_lines(tmp_path, lines), "mine", languages=["de"])
    assert kept.negative_ids == {"de": {"a": ("d",)}} and kept.parallel_ids == ["a"]
    # without the keys nothing is stored
    assert load_jsonl_corpus(write_lines(tmp_path, GOOD), "mine").negative_ids == {}


def test_unknown_negative_ids_are_named_with_the_first_line(tmp_path):
    lines = [
        rec("a", "en"),
        rec("b", "en", negative_ids=["a", "zz", "yy"]),
        rec("c", "en", negative_ids=["zz"]),
    ]
    path = write_lines(tmp_path, lines)
    with pytest.raises(DataError) as info:
        load_jsonl_corpus(path, "mine")
    assert str(info.value).startswith(f"{path}: line 2: negative_ids names 2 id(s) that no record")
    assert "'yy', 'zz'" in str(info.value)


def test_bad_utf8_empty_and_missing_file(tmp_path):
    path = tmp_path / "bad.jsonl"
    path.write_bytes(json.dumps(rec("a", "en")).encode() + b"\n\xff\xfe\n")
    with pytest.raises(DataError, match="line 2: not valid UTF-8"):
        load_jsonl_corpus(path, "mine")
    empty = tmp_path / "empty.jsonl"
    empty.write_text("\n  \n", encoding="utf-8")
    with pytest.raises(DataError, match="no records"):
        load_jsonl_corpus(empty, "mine")
    with pytest.raises(DataError, match="not found"):
        load_jsonl_corpus(tmp_path / "absent.jsonl", "mine")


def test_group_ids_is_union_find_and_order_independent():
    parallel_ids = ["a", "b", "c", "d", "e", "f"]
    groups = group_ids(parallel_ids, [["e", "c"], ["c", "a"], ["f"], []])
    assert groups["a"] == groups["c"] == groups["e"]
    assert len({groups["a"], groups["b"], groups["d"], groups["f"]}) == 4
    assert sorted(set(groups.values())) == [0, 1, 2, 3]
    assert group_ids(reversed(parallel_ids), [["a", "c"], ["e", "c"]]) == groups
    chain = group_ids([str(i) for i in range(100)], [[str(i), str(i + 1)] for i in range(99)])
    assert set(chain.values()) == {0}


def test_module_docstring_states_the_schema():
    for key in ("id", "lang", "question", "passage", "context", "passage_id", "negative_ids", "negatives"):
        assert f"``{key}``" in jsonl.__doc__


def test_a_file_with_a_utf8_byte_order_mark_is_read(tmp_path):
    path = write_lines(tmp_path, GOOD)
    plain = load_jsonl_corpus(path, "mine")
    path.write_bytes(b"\xef\xbb\xbf" + path.read_bytes())
    with_bom = load_jsonl_corpus(path, "mine")
    assert with_bom.pairs == plain.pairs and with_bom.group == plain.group


def test_identical_passages_group_ids_without_a_passage_id(tmp_path):
    """Records whose passage texts are identical (up to whitespace), in one language or across two, are one group
    even without a ``passage_id``, so they never share a batch; distinct texts stay apart."""
    lines = [
        rec("a", "en", passage="The Rhine flows north."),
        rec("b", "en", passage="The  Rhine flows north. "),
        rec("c", "de", passage="Paris"),
        rec("d", "fr", passage="Paris"),
        rec("e", "en", passage="The Rhine flows south."),
        rec("e", "de"),
    ]
    corpus = load_jsonl_corpus(write_lines(tmp_path, lines), "mine")
    group = corpus.group
    assert group["a"] == group["b"] and group["c"] == group["d"]
    assert len({group["a"], group["c"], group["e"]}) == 3


# ---------------------------------------------------------------- exporting a corpus (e.g. LAReQA) to JSONL

MODES = ("hybrid", "mono", "cross")


def assert_same_corpus(exported, original) -> None:
    """The reloaded export holds the original's ids, languages, texts, groups and integer view."""
    assert exported.parallel_ids == original.parallel_ids and exported.languages == original.languages
    for lang in original.languages:
        assert exported.pairs[lang] == original.pairs[lang]
    assert exported.group == original.group
    np.testing.assert_array_equal(exported.arrays.group, original.arrays.group)
    np.testing.assert_array_equal(exported.arrays.has_lang, original.arrays.has_lang)


def test_a_lareqa_corpus_exported_to_jsonl_reloads_with_its_groups_and_plans(tmp_path):
    original = load_lareqa_corpus(write_toy_lareqa(tmp_path), "toy", ["de", "en", "es"])
    # the toy data has multi-id groups (shared answer sentences, a repeated text) and an id missing in 2 languages
    assert original.group["p0b"] == original.group["p0c"] and original.group["p0a"] == original.group["p1a"]
    assert langs_of(original, "p7c") == ["de"]
    path = tmp_path / "toy.jsonl"
    assert jsonl.write_corpus_jsonl(original, path) == sum(len(by_id) for by_id in original.pairs.values())
    exported = load_jsonl_corpus(path, "toy")
    assert_same_corpus(exported, original)
    for mode in MODES:
        for seed in (0, 1, 2):
            assert plan_epoch([exported], mode, 4, 0.5, seed, 0) == plan_epoch(
                [original], mode, 4, 0.5, seed, 0
            )


def test_export_writes_the_corpus_negatives_and_the_extra_keys(tmp_path):
    source = write_lines(
        tmp_path,
        [
            rec("a", "en", negative_ids=["b"], negatives=["text"]),
            rec("b", "en", negative_ids=["a"]),
            rec("a", "de"),
            rec("c", "de", passage_id="P"),  # c and d: one group only by their passage_id
            rec("d", "de", passage_id="P"),
        ],
    )
    original = load_jsonl_corpus(source, "toy")
    assert original.group["c"] == original.group["d"] != original.group["a"]
    path = tmp_path / "out.jsonl"
    jsonl.write_corpus_jsonl(
        original, path, {("b", "en"): {"negative_ids": ["c"]}, ("a", "de"): {"score": 1}}
    )
    lines = {(obj["id"], obj["lang"]): obj for obj in map(json.loads, path.read_text().splitlines())}
    assert lines[("a", "en")]["negative_ids"] == ["b"] and lines[("a", "en")]["negatives"] == ["text"]
    assert lines[("b", "en")]["negative_ids"] == ["c"]  # extra keys replace the corpus's
    assert lines[("a", "de")]["score"] == 1 and "negative_ids" not in lines[("a", "de")]
    assert (
        lines[("a", "de")]["passage_id"]
        == lines[("a", "en")]["passage_id"]
        != lines[("b", "en")]["passage_id"]
    )
    assert_same_corpus(load_jsonl_corpus(path, "toy"), original)


def test_xquad_r_of_data_default_round_trips_with_the_same_batches(tmp_path):
    """The training data of ``data=default`` (XQuAD-R, nine languages), exported to JSONL, plans the same batches
    (batch size 32, as the replication) for every seed and batch composition."""
    spec = compose_config(CONF, "train", ["data=default"]).data.train[0]
    assert spec.format == "lareqa"
    original = load_lareqa_corpus(shared_lareqa_root(spec.name), spec.name, spec.languages)
    path = tmp_path / "xquad-r.jsonl"
    jsonl.write_corpus_jsonl(original, path)
    exported = load_jsonl_corpus(path, spec.name)
    assert_same_corpus(exported, original)
    for mode in MODES:
        for seed in (0, 1, 2):
            plan = plan_epoch([exported], mode, 32, 0.5, seed, 0)
            assert plan == plan_epoch([original], mode, 32, 0.5, seed, 0)
            if mode == "hybrid":
                assert len(plan) == 37
