"""pad_sequences, TextTokenizer (prefix, strip, truncation) and the on-disk token cache."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from hybrid_ir.data.collate import TextTokenizer, pad_sequences, tokenize_cached

LONG = " ".join(f"word{i}" for i in range(200))


@pytest.fixture
def tt(e5_tokenizer) -> TextTokenizer:
    return TextTokenizer(e5_tokenizer, query_prefix="query: ", passage_prefix="passage: ", max_length=16)


@pytest.fixture
def cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("HYBRID_IR_CACHE", str(tmp_path / "cache"))
    return tmp_path / "cache" / "tokenized"


def test_pad_sequences_by_hand() -> None:
    ids, mask = pad_sequences([[5, 6, 7], [8], []], pad_id=1)
    assert ids.dtype == mask.dtype == torch.long
    assert ids.tolist() == [[5, 6, 7], [8, 1, 1], [1, 1, 1]]
    assert mask.tolist() == [[1, 1, 1], [1, 0, 0], [0, 0, 0]]


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


def test_fingerprint_changes_with_the_settings(tt: TextTokenizer, e5_tokenizer) -> None:
    same = TextTokenizer(e5_tokenizer, "query: ", "passage: ", 16)
    assert tt.fingerprint() == same.fingerprint()
    assert tt.fingerprint() != TextTokenizer(e5_tokenizer, "query: ", "passage: ", 32).fingerprint()
    assert tt.fingerprint() != TextTokenizer(e5_tokenizer, "q: ", "passage: ", 16).fingerprint()


class CountingTokenizer(TextTokenizer):
    """Counts the texts it is asked to tokenise."""

    calls: int = 0

    def __call__(self, texts, kind):
        self.calls += 1
        return super().__call__(texts, kind)


def _counting(e5_tokenizer) -> CountingTokenizer:
    return CountingTokenizer(e5_tokenizer, "query: ", "passage: ", 16)


TEXTS = ["Wo liegt Berlin?", "Who wrote Hamlet?", "Wo liegt Berlin?", "  ¿Dónde está Madrid? "]


def test_cache_written_once_then_read(cache: Path, e5_tokenizer) -> None:
    tok = _counting(e5_tokenizer)
    first = tokenize_cached(tok, TEXTS, "query", "demo")
    assert tok.calls == 1
    assert set(first) == set(TEXTS)
    for text in TEXTS:
        assert first[text] == e5_tokenizer("query: " + text.strip())["input_ids"]
    files = list(cache.iterdir())
    assert len(files) == 1 and files[0].name.startswith("demo-query-")

    second = tokenize_cached(tok, reversed(TEXTS), "query", "demo")
    assert tok.calls == 1
    assert second == first
    assert list(cache.iterdir()) == files


def test_cache_key_depends_on_kind_texts_and_tokenizer(cache: Path, e5_tokenizer) -> None:
    tok = _counting(e5_tokenizer)
    tokenize_cached(tok, TEXTS, "query", "demo")
    passages = tokenize_cached(tok, TEXTS, "passage", "demo")
    tokenize_cached(tok, [*TEXTS, "new text"], "query", "demo")
    other = CountingTokenizer(e5_tokenizer, "query: ", "passage: ", 8)
    tokenize_cached(other, TEXTS, "query", "demo")
    assert tok.calls == 3 and other.calls == 1
    assert len(list(cache.iterdir())) == 4
    assert passages["Who wrote Hamlet?"] == e5_tokenizer("passage: Who wrote Hamlet?")["input_ids"]


@pytest.mark.parametrize(
    "damage",
    [
        lambda path: path.write_bytes(b"\x00garbage, not a torch file"),
        lambda path: torch.save([[0, 2]], path),
    ],
    ids=["corrupted", "wrong-length"],
)
def test_damaged_cache_is_rebuilt(cache: Path, e5_tokenizer, damage) -> None:
    tok = _counting(e5_tokenizer)
    good = tokenize_cached(tok, TEXTS, "query", "demo")
    (path,) = cache.iterdir()
    damage(path)
    rebuilt = tokenize_cached(tok, TEXTS, "query", "demo")
    assert tok.calls == 2
    assert rebuilt == good
    assert tokenize_cached(tok, TEXTS, "query", "demo") == good
    assert tok.calls == 2, "the rebuilt entry must have replaced the damaged file"


def test_use_cache_false_writes_nothing(cache: Path, e5_tokenizer) -> None:
    tok = _counting(e5_tokenizer)
    out = tokenize_cached(tok, TEXTS, "query", "demo", use_cache=False)
    assert set(out) == set(TEXTS)
    assert not cache.exists() or not list(cache.iterdir())


def test_no_texts(cache: Path, e5_tokenizer) -> None:
    assert tokenize_cached(_counting(e5_tokenizer), [], "query", "empty") == {}
