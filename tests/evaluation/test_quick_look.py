"""The README's quick look encodes a small pool (issue 28.13): ``eval.max_qids`` keeps N questions with only their
paragraphs as candidates, while ``eval.max_queries_per_language`` samples queries against the whole pool (every
candidate still encoded, as documented, and logged with the pointer to ``eval.max_qids``)."""

from __future__ import annotations

import logging
import re
import shlex
from pathlib import Path

import pytest

from hybrid_ir.data.formats.lareqa_files import load_lareqa_benchmark
from hybrid_ir.evaluation.config import EvalConfig
from hybrid_ir.evaluation.runner import Evaluator
from hybrid_ir.evaluation.subset import subset_pool
from hybrid_ir.tasks.instantiate import compose_config
from hybrid_ir.utils.settings import settings
from tests.helpers.fakes import BagOfWordsEncoder
from tests.helpers.lareqa import shared_lareqa_root
from tests.helpers.repo import REPO

XQUAD_LANGS = ["ar", "de", "el", "en", "es", "hi", "ru", "th", "tr", "vi", "zh"]


@pytest.fixture(scope="module")
def data_root() -> Path:
    return shared_lareqa_root("xquad-r", langs=XQUAD_LANGS)


def readme_quick_look() -> list[str]:
    """The overrides of the README's ``python evaluate.py ...   # a quick look`` command."""
    lines = [line for line in (REPO / "README.md").read_text().splitlines() if "# a quick look" in line]
    assert len(lines) == 1, lines
    command = shlex.split(lines[0].split("#", 1)[0])
    assert command[:2] == ["python", "evaluate.py"], command
    return command[2:]


def _eval_config(root: Path, tmp_path: Path, overrides: list[str]) -> EvalConfig:
    cfg = compose_config(
        REPO / "conf", "evaluate", [*overrides, f"data.root={root}", f"paths.output_dir={tmp_path}"]
    )
    return settings(EvalConfig, cfg.eval, "eval")


def _encoded_passages(encoder: BagOfWordsEncoder) -> int:
    return sum(len(texts) for kind, texts in encoder.calls if kind != "query")


def test_the_readme_quick_look_encodes_a_small_pool(data_root: Path, tmp_path: Path) -> None:
    overrides = readme_quick_look()
    cfg = _eval_config(data_root, tmp_path, [*overrides, "eval.plots=false", "eval.per_query=false"])
    full = load_lareqa_benchmark(data_root, "xquad-r", XQUAD_LANGS)
    n = int(next(re.fullmatch(r"eval\.\w+=(\d+)", o).group(1) for o in overrides if o.startswith("eval.")))
    encoder = BagOfWordsEncoder()
    Evaluator(cfg, tmp_path).run(encoder, tag="quick")
    encoded = _encoded_passages(encoder)  # distinct texts: the encoder sees each text once
    assert encoded == len({c.text for c in subset_pool(full, n, cfg.subset_seed).candidates})
    assert encoded < len(full.candidates) / 4  # 13,014 candidates in the whole pool


def test_max_queries_per_language_keeps_the_whole_pool_and_points_to_max_qids(
    data_root: Path, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    cfg = _eval_config(data_root, tmp_path, ["data=xquad-r", "eval.max_queries_per_language=20"])
    full = load_lareqa_benchmark(data_root, "xquad-r", XQUAD_LANGS)
    with caplog.at_level(logging.INFO, logger="hybrid_ir.evaluation.runner"):
        bench = Evaluator(cfg, tmp_path).load()["xquad-r"]
    assert len(bench.candidates) == len(full.candidates)  # full-pool metrics: every candidate is encoded
    assert {q.qid for q in bench.queries} == set(subset_pool(full, 20, cfg.subset_seed).relevant)
    assert "the pool stays whole" in caplog.text and "use eval.max_qids=20" in caplog.text
