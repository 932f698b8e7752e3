"""tasks.evaluate.evaluate: what is evaluated is loaded with its own settings (our encoder directory, a
sentence-transformers directory, a checkpoint), an explicit command-line override wins with a log line, and the
record is labelled by what was evaluated. The evaluator is replaced by a recorder (the metrics are tested elsewhere)."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import pytest
import torch
from hydra import compose, initialize_config_dir
from omegaconf import DictConfig

from hybrid_ir.models.encoder import ENCODER_CONFIG, Encoder
from hybrid_ir.models.loading import command_line_keys, with_saved_settings
from hybrid_ir.tasks import evaluate as evaluate_task
from hybrid_ir.tasks.instantiate import register_resolvers
from tests.helpers.repo import REPO

CONF = REPO / "conf"


class RecordingEvaluator:
    """Stands in for :class:`~hybrid_ir.evaluation.runner.Evaluator`: records the encoder, tag and step."""

    last: RecordingEvaluator | None = None

    def __init__(self, cfg: Any, output_dir: Path) -> None:
        self.records: list[dict[str, Any]] = []
        RecordingEvaluator.last = self

    def validate(self) -> None:
        pass

    def run(self, encoder: Encoder, tag: str, step: int | None = None, precision: str | None = None) -> dict:
        self.encoder, self.tag, self.step = encoder, tag, step
        self.records.append({"tag": tag, "step": step, "datasets": {}})
        return {}

    def format_table(self, records: Any) -> str:
        return ""


@pytest.fixture
def evaluate(monkeypatch: pytest.MonkeyPatch, e5_dir: Path, tmp_path: Path):
    """``evaluate(*overrides, cli=None) -> RecordingEvaluator``: ``evaluate_task.evaluate`` on ``conf/evaluate.yaml``
    with ``model=tiny`` and ``overrides``; ``cli`` (default: ``overrides``) are the command-line overrides."""
    register_resolvers()
    monkeypatch.setattr(evaluate_task, "Evaluator", RecordingEvaluator)

    def _evaluate(*overrides: str, cli: list[str] | None = None) -> RecordingEvaluator:
        with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
            cfg: DictConfig = compose(
                "evaluate", overrides=[f"paths.output_dir={tmp_path / 'eval'}", "model=tiny", *overrides]
            )
        evaluate_task.evaluate(cfg, cli_overrides=list(overrides) if cli is None else cli)
        assert RecordingEvaluator.last is not None
        return RecordingEvaluator.last

    return _evaluate


@pytest.fixture
def trained(tiny_encoder_factory) -> Encoder:
    """A tiny encoder whose settings all differ from conf/model/tiny.yaml (mean, E5 prefixes, 64 tokens)."""
    return tiny_encoder_factory(pooling="cls", query_prefix="", passage_prefix="P| ", max_length=24)


def settings_of(encoder: Encoder) -> dict[str, Any]:
    return {k: v for k, v in encoder.settings().items() if k != "base_model"}


def same_weights(a: Encoder, b: Encoder) -> bool:
    sb = b.model.state_dict()
    return all(torch.equal(v, sb[k]) for k, v in a.model.state_dict().items())


def test_a_saved_encoder_is_evaluated_with_its_own_settings(
    evaluate, trained: Encoder, tmp_path: Path
) -> None:
    directory = trained.save_pretrained(tmp_path / "encoder")
    run = evaluate(f"model.name_or_path={directory}")
    assert settings_of(run.encoder) == settings_of(trained)
    assert same_weights(run.encoder, trained), "the saved weights, not a random initialisation"
    assert (run.tag, run.step) == (str(directory), None)


def test_an_explicit_override_wins_and_says_so(
    evaluate, trained: Encoder, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    directory = trained.save_pretrained(tmp_path / "encoder")
    with caplog.at_level(logging.INFO, logger="hybrid_ir.models.loading"):
        run = evaluate(f"model.name_or_path={directory}", "model.max_length=16")
    assert run.encoder.text_tokenizer.max_length == 16
    assert run.encoder.pooling == "cls"
    assert (
        f"model.max_length=16 (command line) overrides 24 saved in {directory / ENCODER_CONFIG}"
        in caplog.text
    )


def test_a_sentence_transformers_directory_is_evaluated_with_its_settings(
    evaluate, trained: Encoder, tmp_path: Path
) -> None:
    directory = trained.save_pretrained(tmp_path / "st")
    (directory / ENCODER_CONFIG).unlink()  # only what sentence-transformers reads is left
    run = evaluate(f"model.name_or_path={directory}")
    assert settings_of(run.encoder) == settings_of(trained)
    assert run.tag == str(directory)


def test_a_checkpoint_is_evaluated_with_its_settings_and_labelled_with_its_step(
    evaluate, trained: Encoder, tmp_path: Path
) -> None:
    ckpt = tmp_path / "last.ckpt"
    state = {
        "state_dict": {f"encoder.{k}": v for k, v in trained.state_dict().items()},
        "global_step": 7,
        "hybrid_ir": {"encoder": trained.settings()},
    }
    torch.save(state, ckpt)
    run = evaluate(f"ckpt_path={ckpt}")
    assert settings_of(run.encoder) == settings_of(trained)
    assert same_weights(run.encoder, trained)
    assert (run.tag, run.step) == (str(ckpt), 7)


def test_the_model_configs_own_model_is_pretrained(evaluate) -> None:
    run = evaluate()
    assert (run.tag, run.step) == ("pretrained", None)
    assert run.encoder.pooling == "mean" and run.encoder.text_tokenizer.max_length == 64


def test_command_line_keys() -> None:
    overrides = [
        "model.max_length=16",
        "+model.config_overrides.x=1",
        "data=mlqa-r",
        "~model.seed",
        "eval.x=1",
    ]
    assert command_line_keys(overrides) == {"max_length", "config_overrides", "seed"}


def test_with_saved_settings_keeps_explicit_keys() -> None:
    cfg = {"pooling": "mean", "max_length": 64, "query_prefix": "query: "}
    saved = {"pooling": "cls", "max_length": 32, "query_prefix": ""}
    out = with_saved_settings(cfg, saved, "x.json", explicit={"max_length"})
    assert out == {"pooling": "cls", "max_length": 64, "query_prefix": ""}
