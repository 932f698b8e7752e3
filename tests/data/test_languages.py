"""Tests for the ISO 639-1 language-code checks."""

from __future__ import annotations

import pytest

from hybrid_ir.data.languages import ISO_639_1, check_lang, check_langs
from hybrid_ir.utils.errors import DataError


def test_code_set_covers_the_datasets_and_only_two_letter_codes():
    xquad_mlqa_miracl = [
        "ar",
        "bn",
        "de",
        "el",
        "en",
        "es",
        "fa",
        "fi",
        "fr",
        "hi",
        "id",
        "ja",
        "ko",
        "ru",
        "sw",
        "te",
        "th",
        "tr",
        "vi",
        "yo",
        "zh",
    ]
    assert set(xquad_mlqa_miracl) <= ISO_639_1
    assert all(len(code) == 2 and code.islower() for code in ISO_639_1)
    assert len(ISO_639_1) == 184


@pytest.mark.parametrize("bad", ["xx", "EN", "eng", "", None, 3])
def test_unknown_code_names_path_and_record(bad):
    with pytest.raises(DataError) as info:
        check_lang(bad, "some/file.jsonl", "line 4")
    assert str(info.value).startswith("some/file.jsonl: line 4: unknown language code")


def test_check_langs_sorts_dedupes_and_accepts_one_code():
    assert check_langs(["zh", "en", "zh"], "p") == ["en", "zh"]
    assert check_langs("de", "p") == ["de"]
    with pytest.raises(DataError, match="p: languages: unknown language code 'english'"):
        check_langs(["en", "english"], "p")
