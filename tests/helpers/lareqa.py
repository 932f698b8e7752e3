"""LAReQA-style datasets for tests: small ones written to disk (``<root>/<dataset>/<lang>.json``) for tests that read
them with the LAReQA loader, and the shared data root with the real XQuAD-R / MLQA-R (the test is skipped without)."""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path

import pytest

from hybrid_ir.utils.paths import default_data_root

# One paragraph: its sentences and its questions as (question id, index of the answer sentence).
Paragraph = tuple[Sequence[str], Sequence[tuple[str, int]]]


def write_lareqa(root: Path, dataset: str, lang: str, paragraphs: Sequence[Paragraph]) -> Path:
    """Write ``<root>/<dataset>/<lang>.json`` with one article holding ``paragraphs`` (context = the sentences
    joined by spaces; question ``qid``'s text is ``"<qid> <lang>?"``, its answer starts its answer sentence)."""
    pars = []
    for sentences, questions in paragraphs:
        breaks, start = [], 0
        for sentence in sentences:
            breaks.append([start, start + len(sentence)])
            start += len(sentence) + 1
        pars.append(
            {
                "context": " ".join(sentences),
                "sentences": list(sentences),
                "sentence_breaks": breaks,
                "qas": [
                    {
                        "id": qid,
                        "question": f"{qid} {lang}?",
                        "answers": [{"text": sentences[s], "answer_start": breaks[s][0]}],
                    }
                    for qid, s in questions
                ],
            }
        )
    path = root / dataset / f"{lang}.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps({"data": [{"title": "T", "paragraphs": pars}]}), encoding="utf-8")
    return path


def write_toy_lareqa(root: Path, dataset: str = "toy", langs: Sequence[str] = ("de", "en", "es")) -> Path:
    """A parallel dataset of 8 paragraphs x 3 questions per language in which the loader forms multi-id groups:
    in every paragraph questions ``b`` and ``c`` share an answer sentence, and in ``en`` the answer of ``p1a``
    repeats the text of ``p0a``'s (the same text at another position); ``p7c`` is missing in every language but
    the first. Returns ``root``."""
    for n, lang in enumerate(langs):
        paragraphs: list[Paragraph] = []
        for i in range(8):
            sentences = [f"{lang} sentence {i}.{j} about topic {i % 3}." for j in range(3)]
            if lang == "en" and i == 1:
                sentences[0] = paragraphs[0][0][0]
            questions = [(f"p{i}a", 0), (f"p{i}b", 1), (f"p{i}c", 1)]
            if n and i == 7:
                questions = questions[:2]
            paragraphs.append((sentences, questions))
        write_lareqa(root, dataset, lang, paragraphs)
    return root


def shared_lareqa_root(*datasets: str, langs: Sequence[str] = ("en",)) -> Path:
    """The data root (:func:`~hybrid_ir.utils.paths.default_data_root`) when it holds ``<dataset>/<lang>.json`` for
    every one of ``datasets`` and ``langs``; else the calling test is skipped, naming what is missing."""
    root = default_data_root()
    missing = [
        f"{d}/{lang}.json" for d in datasets for lang in langs if not (root / d / f"{lang}.json").is_file()
    ]
    if missing:
        pytest.skip(f"{', '.join(missing)} not found under {root}")
    return root
