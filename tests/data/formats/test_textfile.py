from __future__ import annotations

import gzip
from pathlib import Path

import pytest

from hybrid_ir.data.formats.textfile import parse_json_object, read_lines
from hybrid_ir.utils.errors import DataError

CONTENT = b'first\r\n\n  \nfourth line\n{"a": 1}'


@pytest.mark.parametrize("suffix", [".txt", ".txt.gz"])
def test_lines_keep_editor_numbers_and_skip_blanks(tmp_path: Path, suffix: str) -> None:
    path = tmp_path / f"f{suffix}"
    path.write_bytes(gzip.compress(CONTENT) if suffix.endswith(".gz") else CONTENT)
    assert read_lines(path, "test file") == [(1, "first"), (4, "fourth line"), (5, '{"a": 1}')]


def test_bad_utf8_names_the_line(tmp_path: Path) -> None:
    path = tmp_path / "f.txt"
    path.write_bytes(b"ok\n\nbad \xff byte\n")
    with pytest.raises(DataError, match=r"f\.txt: line 3: not valid UTF-8 \(invalid start byte at byte 4\)"):
        read_lines(path, "test file")


def test_missing_file_says_what_was_expected(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="file: not found; expected the TREC qrels file"):
        read_lines(tmp_path / "qrels.tsv", "TREC qrels file")


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ('{"a": ', r"line 7: invalid JSON: Expecting value \(column 7\)"),
        ("[1, 2]", r"line 7: expected a JSON object with keys \['a', 'b'\], got list"),
    ],
)
def test_json_object_errors(text: str, message: str) -> None:
    with pytest.raises(DataError, match=message):
        parse_json_object(text, Path("x.jsonl"), 7, ("a", "b"))


def test_json_object_is_returned_as_is() -> None:
    assert parse_json_object('{"a": "x", "c": [1]}', Path("x.jsonl"), 1, ("a",)) == {"a": "x", "c": [1]}


@pytest.mark.parametrize("suffix", [".txt", ".txt.gz"])
def test_a_utf8_byte_order_mark_is_skipped(tmp_path: Path, suffix: str) -> None:
    """Some Windows editors start UTF-8 files with a BOM; it is not part of the first line's text."""
    data = b"\xef\xbb\xbf" + '{"a": "ä"}\n{"b": 2}\n'.encode()
    path = tmp_path / f"f{suffix}"
    path.write_bytes(gzip.compress(data) if suffix.endswith(".gz") else data)
    assert read_lines(path, "test file") == [(1, '{"a": "ä"}'), (2, '{"b": 2}')]
