"""Tests for the MIRACL topics / qrels / corpus reader."""

from __future__ import annotations

import gzip
import json
from pathlib import Path

import pytest

from hybrid_ir.data.formats.miracl_files import corpus_files, load_miracl, read_corpus
from hybrid_ir.utils.errors import DataError
from hybrid_ir.utils.paths import default_data_root

# From miracl/SOURCE.md: lang -> (dev queries, qrels lines, rel=1 lines).
COUNTS = {
    "ar": (2896, 29197, 5658), "bn": (411, 4206, 863), "de": (305, 3144, 811), "en": (799, 8350, 2326),
    "es": (648, 6443, 2987), "fa": (632, 6571, 1314), "fi": (1271, 12008, 2447), "fr": (343, 3429, 731),
    "hi": (350, 3494, 752), "id": (960, 9668, 3088), "ja": (860, 8354, 1790), "ko": (213, 3057, 547),
    "ru": (1252, 13100, 3560), "sw": (482, 5092, 910), "te": (828, 1606, 854), "th": (733, 7573, 1343),
    "yo": (119, 1188, 144), "zh": (393, 3928, 994),
}  # fmt: skip


@pytest.mark.parametrize("lang", sorted(COUNTS))
def test_real_topics_and_qrels_match_source_counts(lang):
    root = default_data_root()
    if not (root / "miracl" / "topics").is_dir():
        pytest.skip(f"MIRACL topics not found under {root}")
    topics, qrels, corpus = load_miracl(root, lang)
    n_queries, n_lines, n_relevant = COUNTS[lang]
    assert corpus is None
    assert len(topics) == n_queries
    assert sum(len(docs) for docs in qrels.values()) == n_lines
    assert sum(rel for docs in qrels.values() for rel in docs.values()) == n_relevant
    assert set(qrels) == set(topics), "every topic has at least one judgement"
    assert all(text.strip() for text in topics.values())
    assert all("#" in docid for docs in qrels.values() for docid in docs)


def make_root(tmp_path: Path, topics: str, qrels: str, lang: str = "sw") -> Path:
    (tmp_path / "miracl" / "topics").mkdir(parents=True)
    (tmp_path / "miracl" / "qrels").mkdir(parents=True)
    (tmp_path / "miracl" / "topics" / f"topics.miracl-v1.0-{lang}-dev.tsv").write_text(
        topics, encoding="utf-8"
    )
    (tmp_path / "miracl" / "qrels" / f"qrels.miracl-v1.0-{lang}-dev.tsv").write_text(qrels, encoding="utf-8")
    return tmp_path


TOPICS = "1\tJe, mlima mrefu zaidi ni upi?\n7\tNani aliandika kitabu?\n"
QRELS = "1 Q0 100#0 1\n1 Q0 100#1 0\n7 Q0 200#3 1\n"
DOCS = [
    {"docid": "100#0", "title": "Kilimanjaro", "text": "Mlima mrefu zaidi barani Afrika."},
    {"docid": "100#1", "title": "", "text": "Maandishi bila kichwa."},
    {"docid": "200#3", "title": "Kitabu", "text": "Kitabu kiliandikwa na mwandishi."},
]


def write_corpus(path: Path, docs: list, gz: bool = False) -> Path:
    text = "".join((d if isinstance(d, str) else json.dumps(d, ensure_ascii=False)) + "\n" for d in docs)
    if gz:
        with gzip.open(path, "wt", encoding="utf-8") as fh:
            fh.write(text)
    else:
        path.write_text(text, encoding="utf-8")
    return path


@pytest.mark.parametrize("gz", [False, True])
def test_generated_corpus(tmp_path, gz):
    root = make_root(tmp_path, TOPICS, QRELS)
    corpus_path = write_corpus(tmp_path / ("docs.jsonl.gz" if gz else "docs.jsonl"), DOCS, gz=gz)
    topics, qrels, corpus = load_miracl(root, "sw", corpus_path)
    assert topics == {"1": "Je, mlima mrefu zaidi ni upi?", "7": "Nani aliandika kitabu?"}
    assert qrels == {"1": {"100#0": 1, "100#1": 0}, "7": {"200#3": 1}}
    assert corpus == {
        "100#0": "Kilimanjaro Mlima mrefu zaidi barani Afrika.",
        "100#1": "Maandishi bila kichwa.",
        "200#3": "Kitabu Kitabu kiliandikwa na mwandishi.",
    }


def _split_corpus(folder: Path) -> list[Path]:
    """DOCS in three gzip files named as MIRACL ships its large languages (docs-10 sorts after docs-2)."""
    folder.mkdir()
    return [
        write_corpus(folder / "docs-10.jsonl.gz", DOCS[2:], gz=True),
        write_corpus(folder / "docs-0.jsonl.gz", DOCS[:1], gz=True),
        write_corpus(folder / "docs-2.jsonl.gz", DOCS[1:2], gz=True),
    ]


def test_corpus_in_several_files_as_directory_glob_or_list(tmp_path):
    root = make_root(tmp_path, TOPICS, QRELS)
    ten, zero, two = _split_corpus(tmp_path / "miracl-corpus-v1.0-sw")
    (tmp_path / "miracl-corpus-v1.0-sw" / "README.txt").write_text("not a corpus file")
    whole = read_corpus(write_corpus(tmp_path / "docs.jsonl", DOCS))
    folder = tmp_path / "miracl-corpus-v1.0-sw"
    assert corpus_files(folder) == [zero, two, ten]
    assert corpus_files(str(folder / "docs-*.jsonl.gz")) == [zero, two, ten]
    assert corpus_files([ten, str(zero), ten]) == [ten, zero]
    for spec in (folder, str(folder / "docs-*.jsonl.gz"), [str(zero), str(two), str(ten)]):
        assert load_miracl(root, "sw", spec)[2] == whole


def test_corpus_files_errors_name_the_entry(tmp_path):
    (tmp_path / "empty").mkdir()
    with pytest.raises(
        DataError, match=r"empty: corpus: directory has no \*\.jsonl.*a glob such as docs-\*\.jsonl"
    ):
        corpus_files(tmp_path / "empty")
    with pytest.raises(
        DataError, match=r"docs-\*\.jsonl\.gz: corpus: not found \(no such file or glob match\)"
    ):
        corpus_files(str(tmp_path / "docs-*.jsonl.gz"))
    first = write_corpus(tmp_path / "a.jsonl", DOCS)
    second = write_corpus(tmp_path / "b.jsonl", DOCS[2:])
    with pytest.raises(
        DataError, match=r"b\.jsonl: line 1: duplicate docid '200#3' \(first at .*a\.jsonl:3\)"
    ):
        read_corpus([first, second])


TSV_CASES = {
    "topic without tab": ("1 no tab here\n", QRELS, "topics", "line 1", "qid<TAB>query"),
    "empty query": ("1\tq\n7\t \n", QRELS, "topics", "line 2", "qid<TAB>query"),
    "duplicate topic": ("1\ta\n1\tb\n", QRELS, "topics", "line 2", "duplicate query id '1'"),
    "qrels 3 fields": (TOPICS, "1 Q0 100#0 1\n1 100#1 0\n", "qrels", "line 2", "expected 4 fields"),
    "qrels bad rel": (TOPICS, "1 Q0 100#0 yes\n", "qrels", "line 1", "relevance 'yes' is not an integer"),
    "qrels duplicate": (
        TOPICS,
        "1 Q0 100#0 1\n7 Q0 2#0 1\n1 Q0 100#0 0\n",
        "qrels",
        "line 3",
        "duplicate judgement",
    ),
    "qrels unknown query": (TOPICS, "1 Q0 100#0 1\n9 Q0 5#0 1\n", "qrels", "query '9'", "not in"),
}


@pytest.mark.parametrize("case", sorted(TSV_CASES))
def test_malformed_tsv_names_file_and_line(tmp_path, case):
    topics, qrels, which, where, problem = TSV_CASES[case]
    root = make_root(tmp_path, topics, qrels)
    with pytest.raises(DataError) as info:
        load_miracl(root, "sw")
    message = str(info.value)
    assert message.startswith(str(root / "miracl" / which / f"{which}.miracl-v1.0-sw-dev.tsv"))
    assert f": {where}: " in message and problem in message


CORPUS_CASES = {
    "invalid json": ('{"docid": "1#0", "text": ', "line 2", "invalid JSON"),
    "no docid": ({"title": "t", "text": "x"}, "line 2", "'docid'"),
    "empty text": ({"docid": "1#0", "title": "t", "text": ""}, "line 2", "'text'"),
    "title type": ({"docid": "1#0", "title": 5, "text": "x"}, "line 2", "'title' must be a string"),
    "duplicate docid": ({"docid": "100#0", "title": "t", "text": "x"}, "line 2", "duplicate docid '100#0'"),
}


@pytest.mark.parametrize("case", sorted(CORPUS_CASES))
def test_malformed_corpus_names_file_and_line(tmp_path, case):
    bad, where, problem = CORPUS_CASES[case]
    path = write_corpus(tmp_path / "docs.jsonl", [DOCS[0], bad])
    with pytest.raises(DataError) as info:
        read_corpus(path)
    assert str(info.value).startswith(f"{path}: {where}: ") and problem in str(info.value)


def test_missing_files_and_unknown_language(tmp_path):
    root = make_root(tmp_path, TOPICS, QRELS)
    with pytest.raises(DataError, match=r"miracl \[yo\].*languages present: \['sw'\]"):
        load_miracl(root, "yo")
    with pytest.raises(DataError, match="unknown language code 'swa'"):
        load_miracl(root, "swa")
    with pytest.raises(DataError, match="not found"):
        load_miracl(root, "sw", tmp_path / "absent.jsonl")
