"""pad_sequences and TextTokenizer (prefix, strip, truncation, fingerprint)."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from hybrid_ir.models.tokenizer import TextTokenizer, pad_sequences

LONG = " ".join(f"word{i}" for i in range(200))


@pytest.fixture
def tt(e5_tokenizer) -> TextTokenizer:
    return TextTokenizer(e5_tokenizer, query_prefix="query: ", passage_prefix="passage: ", max_length=16)


def test_pad_sequences_by_hand() -> None:
    ids, mask = pad_sequences([[5, 6, 7], [8], []], pad_id=1)
    assert ids.dtype == mask.dtype == torch.long
    assert ids.tolist() == [[5, 6, 7], [8, 1, 1], [1, 1, 1]]
    assert mask.tolist() == [[1, 1, 1], [1, 0, 0], [0, 0, 0]]


def test_pad_sequences_equals_torchs_own_padding() -> None:
    """Against torch's pad_sequence as the oracle, on random lengths including empty sequences."""
    rng = np.random.default_rng(0)
    seqs = [rng.integers(2, 250_000, size=n).tolist() for n in rng.integers(0, 40, size=33)]
    ids, mask = pad_sequences(seqs, pad_id=1)
    expected = torch.nn.utils.rnn.pad_sequence(
        [torch.tensor(s, dtype=torch.long) for s in seqs], batch_first=True, padding_value=1
    )
    assert torch.equal(ids, expected)
    assert mask.tolist() == [[int(j < len(s)) for j in range(ids.shape[1])] for s in seqs]


def test_pad_sequences_empty_batch() -> None:
    ids, mask = pad_sequences([], pad_id=0)
    assert ids.shape == mask.shape == (0, 0)


def test_pad_uses_the_tokenizer_pad_id(tt: TextTokenizer, e5_tokenizer) -> None:
    assert tt.pad_id == e5_tokenizer.pad_token_id == 1
    ids, mask = tt.pad([[0, 10, 2], [0, 2]])
    assert ids.tolist() == [[0, 10, 2], [0, 2, 1]]
    assert mask.tolist() == [[1, 1, 1], [1, 1, 0]]


def test_prefix_and_strip(tt: TextTokenizer, e5_tokenizer) -> None:
    padded = tt(["  Wo liegt Berlin?\n"], "query")
    assert padded == tt(["Wo liegt Berlin?"], "query")
    assert padded[0] == e5_tokenizer("query: Wo liegt Berlin?")["input_ids"]
    assert tt(["Berlin"], "passage")[0] == e5_tokenizer("passage: Berlin")["input_ids"]


def test_truncates_at_max_length(tt: TextTokenizer, e5_tokenizer) -> None:
    (ids,) = tt([LONG], "passage")
    full = e5_tokenizer("passage: " + LONG)["input_ids"]
    assert len(full) > 16
    assert len(ids) == 16
    assert ids[:15] == full[:15]
    assert ids[-1] == e5_tokenizer.eos_token_id


def test_empty_input(tt: TextTokenizer) -> None:
    assert tt([], "query") == []


MIXED = [
    "Wer war 1905 Präsident der USA?",
    "北京是中国的首都。" * 30,
    "ما هي عاصمة مصر؟ " * 20,
    "प्रश्न का उत्तर क्या है",
    "<s> a text that holds the special tokens </s> <pad> <mask>",
    "  spaces   inside\tand\naround  ",
    LONG,
    "",
]


@pytest.mark.parametrize("max_length", [8, 16, 512])
def test_the_rust_path_gives_the_ids_of_the_tokenizers_own_call(e5_tokenizer, max_length: int) -> None:
    """The private pipeline copy (truncation set once, only ids read) gives exactly what the transformers call with
    the same settings gives, for every kind, script and length; the caller's tokenizer keeps its own settings."""
    tt = TextTokenizer(e5_tokenizer, "query: ", "passage: ", max_length)
    for kind in ("query", "passage"):
        expected = e5_tokenizer(
            [tt.prefix(kind) + t.strip() for t in MIXED],
            truncation=True,
            max_length=max_length,
            padding=False,
        )["input_ids"]
        e5_tokenizer.backend_tokenizer.no_truncation()
        assert tt(MIXED, kind) == expected
        assert e5_tokenizer.backend_tokenizer.truncation is None


def test_a_changed_max_length_is_honoured(tt: TextTokenizer) -> None:
    assert len(tt([LONG], "passage")[0]) == 16
    tt.max_length = 24
    assert len(tt([LONG], "passage")[0]) == 24


def test_a_tokenizer_without_a_rust_backend_is_called_itself(e5_tokenizer) -> None:
    """A slow (pure Python) tokenizer has no pipeline to copy: its own call, with the same settings, is used."""
    calls = []

    def slow(texts, **settings):
        calls.append(settings)
        return e5_tokenizer(texts, **settings)

    tt = TextTokenizer(slow, "query: ", "passage: ", 16)
    assert tt([LONG, "Berlin"], "passage") == TextTokenizer(e5_tokenizer, "query: ", "passage: ", 16)(
        [LONG, "Berlin"], "passage"
    )
    assert calls == [dict(add_special_tokens=True, truncation=True, max_length=16, padding=False)]


def test_fingerprint_changes_with_the_settings(tt: TextTokenizer, e5_tokenizer) -> None:
    same = TextTokenizer(e5_tokenizer, "query: ", "passage: ", 16)
    assert tt.fingerprint() == same.fingerprint()
    assert tt.fingerprint() != TextTokenizer(e5_tokenizer, "query: ", "passage: ", 32).fingerprint()
    assert tt.fingerprint() != TextTokenizer(e5_tokenizer, "q: ", "passage: ", 16).fingerprint()


def test_fingerprint_is_the_tokenizers_content_not_its_path(tt: TextTokenizer, e5_dir, tmp_path) -> None:
    """A copy of the tokenizer's files elsewhere (a moved cache) keeps the fingerprint, and with it the token stores;
    so does a call that set other truncation settings on the tokenizer; one changed vocabulary piece changes it."""
    from transformers import AutoTokenizer

    before = tt.fingerprint()
    tt.tokenizer(["x"], truncation=True, max_length=7)  # fast tokenizers keep the last call's truncation
    assert tt.fingerprint() == before
    moved, edited = tmp_path / "moved", tmp_path / "edited"
    for folder in (moved, edited):
        folder.mkdir()
        for name in ("tokenizer.json", "tokenizer_config.json"):
            (folder / name).write_bytes((e5_dir / name).read_bytes())
    spec = json.loads((edited / "tokenizer.json").read_text(encoding="utf-8"))
    spec["model"]["vocab"][1000][0] += "x"
    (edited / "tokenizer.json").write_text(json.dumps(spec), encoding="utf-8")
    prefixes = ("query: ", "passage: ", 16)
    assert TextTokenizer(AutoTokenizer.from_pretrained(moved), *prefixes).fingerprint() == before
    assert TextTokenizer(AutoTokenizer.from_pretrained(edited), *prefixes).fingerprint() != before
