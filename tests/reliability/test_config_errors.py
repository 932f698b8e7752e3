"""Bad configurations fail at start-up, before any model is built, with a message that says what is wrong and
what is allowed. Each case composes the real configs (``hydra.compose``, as ``train.py`` does) and calls
:func:`hybrid_ir.tasks.train.train` with model construction forbidden (``no_model``)."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest
from hydra.errors import ConfigCompositionException, InstantiationException, MissingConfigException

from hybrid_ir.data.runtime import datamodule as datamodule_module
from hybrid_ir.tasks.checks import check_monitors
from hybrid_ir.tasks.evaluate import evaluate
from hybrid_ir.tasks.train import train
from hybrid_ir.utils.errors import ConfigError, DataError
from tests.helpers.jsonl import pair_records, write_jsonl
from tests.helpers.repo import REPO

from .conftest import Compose
from .runs import run_env

# (overrides, exception type, fragments the message must contain)
CASES = {
    "unknown key": (("foo=1",), ConfigCompositionException, ["Could not override 'foo'", "+foo=1"]),
    "misspelt group choice": (
        ("sampler=hybird",),
        MissingConfigException,
        ["Could not find 'sampler/hybird'", "Available options in 'sampler'", "cross", "hybrid", "mono"],
    ),
    "batch size not a number": (
        ("data.batch_size=abc",),
        ConfigError,
        ["data.batch_size='abc'", "positive multiple of the number of ranks"],
    ),
    "batch size below the ranks": (
        ("trainer=ddp_cpu", "data.batch_size=3"),
        ConfigError,
        ["data.batch_size=3", "multiple of the number of ranks", "= 2)"],
    ),
    "batch size zero": (("data.batch_size=0",), ConfigError, ["data.batch_size=0", "positive multiple"]),
    # the DataModule's own key, set apart from data.batch_size: checked as the value the DataModule receives
    "DataModule batch of one pair": (
        ("datamodule.batch_size=1",),
        ConfigError,
        ["datamodule.batch_size=1", "at least 2 pairs"],
    ),
    "DataModule batch below the ranks": (
        ("trainer=ddp_cpu", "datamodule.batch_size=3"),
        ConfigError,
        ["datamodule.batch_size=3", "multiple of the number of ranks", "= 2)"],
    ),
    "alpha outside [0, 1]": (
        ("sampler.alpha=1.5",),
        InstantiationException,
        ["alpha (probability of a monolingual batch) must be in [0, 1], got 1.5"],
    ),
    "negative dataset temperature": (
        ("sampler.temperature=-1",),
        InstantiationException,
        ["temperature must be a finite number >= 0, got -1"],
    ),
    "evaluation language not in MLQA-R": (
        ("data.eval.0.languages=[fr]",),
        ConfigError,
        ["dataset 'mlqa-r' has no language(s) fr", "it has: ar, de, en, es, hi, vi, zh"],
    ),
    "evaluation language not a language": (
        ("data.eval.0.languages=[xx]",),
        ConfigError,
        ["has no language(s) xx", "it has: ar, de, en, es, hi, vi, zh"],
    ),
    "training language not in XQuAD-R": (
        ("data.train.0.languages=[en,fr]", "~callbacks.zero_shot_eval"),
        ValueError,
        ["xquad-r has no language 'fr'", "available: ['ar', 'de', 'el', 'en'"],
    ),
    "missing data root": (
        ("data.root=/nonexistent", "data.download=false"),
        ConfigError,
        ["'mlqa-r' not found under data root /nonexistent", "download is off", "data.root"],
    ),
    "missing data root, no evaluation": (
        ("data.root=/nonexistent", "data.download=false", "~callbacks.zero_shot_eval"),
        DataError,
        ["/nonexistent/xquad-r/", "file not found under data root /nonexistent", "data.root="],
    ),
    "bad evaluation setting": (
        ("eval.max_qids=0",),
        InstantiationException,
        ["eval.max_qids=0: expected an integer >= 1 or null"],
    ),
    "resume without a checkpoint": (
        ("ckpt_path=last",),
        ConfigError,
        ["no checkpoint at", "last.ckpt", "rerun with the old run's hydra.run.dir"],
    ),
    "JSONL data without a path": (
        ("data=jsonl",),
        ConfigError,
        ["data.train.0.path is not set (dataset 'my-data')", "data.train.0.path=/path/to/pairs.jsonl"],
    ),
    "a batch of one pair": (
        ("data.batch_size=1",),
        ConfigError,
        ["data.batch_size=1", "at least 2 pairs", "InfoNCE", "no negative"],
    ),
    "batch larger than the answer groups of XQuAD-R": (
        ("data.batch_size=1000",),
        ConfigError,
        ["no full batch of 1000 hybrid pairs", "xquad-r: 1190 ids, at most 491 pairs per mono batch"],
    ),
    "endless epochs without max_steps": (
        ("trainer.max_epochs=-1", "trainer.max_steps=-1"),
        ConfigError,
        ["trainer.max_epochs=-1", "needs a finite trainer.max_steps"],
    ),
    "gradient accumulation": (
        ("+trainer.accumulate_grad_batches=2",),
        ConfigError,
        [
            "trainer.accumulate_grad_batches=2 is not supported",
            "manual optimisation",
            "module.grad_cache_chunk_size",
        ],
    ),
    "Lightning gradient clipping": (
        ("+trainer.gradient_clip_val=1.0",),
        ConfigError,
        ["trainer.gradient_clip_val=1.0 is not supported", "module.max_grad_norm"],
    ),
    "step-based validation": (
        ("+trainer.val_check_interval=10",),
        ConfigError,
        ["trainer.val_check_interval=10 is not supported", "step-based evaluation is not supported"],
    ),
    "early stopping without a validation set": (
        ("callbacks=validation",),
        ConfigError,
        ["callbacks.best_checkpoint monitors val/loss, which needs a validation set", "data.val.fraction"],
    ),
    "validation fraction out of range": (
        ("data.val.fraction=1.5",),
        ConfigError,
        ["data.val.fraction=1.5 must be in (0, 1)"],
    ),
    "validation on a training dataset": (
        ("data.val.datasets=[{name:xquad-r,format:lareqa,languages:[el]}]",),
        ConfigError,
        ["data.val.datasets.0 ('xquad-r') is the training dataset data.train.0", "data.val.fraction"],
    ),
    "validation set too small for one batch": (
        ("data.val.fraction=0.01", "data.val.batch_size=64"),
        ConfigError,
        ["cannot fill a batch of data.val.batch_size=64", "hold out more ids"],
    ),
    "a checkpoint that is not one": (
        ("ckpt_path=/etc/passwd",),
        ConfigError,
        ["ckpt_path: /etc/passwd is not a checkpoint written by train.py", "not a torch.save zip archive"],
    ),
    "a model directory that does not exist": (
        ("model.name_or_path=/nonexistent",),
        ConfigError,
        ["model.name_or_path='/nonexistent'", "does not exist", "hub id"],
    ),
}


@pytest.mark.parametrize("overrides, error, fragments", list(CASES.values()), ids=list(CASES))
def test_bad_config_fails_before_any_model(
    compose: Compose, no_model: None, overrides: tuple[str, ...], error: type, fragments: list[str]
) -> None:
    with pytest.raises(error) as info:
        train(compose("experiment=smoke", *overrides))
    message = str(info.value)
    for fragment in fragments:
        assert fragment in message


@pytest.mark.parametrize(
    "overrides",
    [
        ("model.name_or_path=/nonexistent",),
        ("trainer.max_epochs=-1", "trainer.max_steps=-1"),
        ("data.batch_size=1",),
        ("datamodule.batch_size=1",),
        ("datamodule.batch_size=abc",),
        ("data=jsonl",),
        ("callbacks=validation",),
        ("data.val.fraction=1.5",),
    ],
)
def test_config_errors_come_before_the_data_loads(
    compose: Compose, no_model: None, monkeypatch: pytest.MonkeyPatch, overrides: tuple[str, ...]
) -> None:
    def refuse(*args: object, **kwargs: object) -> None:
        raise AssertionError("training data was loaded before the error was reported")

    monkeypatch.setattr(datamodule_module, "load_corpus", refuse)
    with pytest.raises(ConfigError):
        train(compose("experiment=smoke", *overrides))


def test_cross_batches_on_a_single_language_dataset_fail_before_the_model(
    compose: Compose, no_model: None, tmp_path: Path
) -> None:
    path = write_jsonl(tmp_path / "en.jsonl", pair_records(40, ["en"]))
    with pytest.raises(ConfigError, match=r"no full batch of 8 cross pairs.*at most 0 pairs per cross batch"):
        train(compose("experiment=smoke", "data=jsonl", f"data.train.0.path={path}", "sampler=cross"))


def test_a_dataset_too_small_for_one_batch_fails_before_the_model(
    compose: Compose, no_model: None, tmp_path: Path
) -> None:
    path = write_jsonl(tmp_path / "sw.jsonl", pair_records(5, ["en", "sw"]))
    cfg = compose("experiment=smoke")
    cfg.data.train.append({"name": "sw", "format": "jsonl", "path": str(path)})
    with pytest.raises(ConfigError, match=r"training dataset 'sw' \(data.train.1\) contributes no batch"):
        train(cfg)


@pytest.mark.parametrize(
    ("overrides", "fragment"),
    [
        (
            ("model.name_or_path=/nonexistent",),
            "model.name_or_path='/nonexistent': /nonexistent does not exist",
        ),
        (("ckpt_path=/etc/passwd",), "ckpt_path: /etc/passwd is not a checkpoint written by train.py"),
    ],
)
def test_evaluate_reports_bad_model_sources_before_any_model(
    compose: Compose, no_model: None, overrides: tuple[str, ...], fragment: str
) -> None:
    with pytest.raises(ConfigError, match=re.escape(fragment)):
        evaluate(compose(*overrides, config="evaluate"))


def test_config_errors_of_built_objects_keep_their_type(compose: Compose, no_model: None) -> None:
    """Hydra wraps errors raised while instantiating; the ConfigError stays reachable as the cause."""
    with pytest.raises(InstantiationException) as info:
        train(compose("experiment=smoke", "sampler.alpha=-0.1"))
    assert isinstance(info.value.__cause__, ConfigError)


def test_the_command_line_reports_the_error_and_exits_nonzero(tmp_path) -> None:
    """A DDP config with a batch too small for its two ranks: ``train.py`` exits with status 1 and prints the
    message, without starting any rank or loading any data."""
    proc = subprocess.run(
        [sys.executable, "train.py", "experiment=smoke", "trainer=ddp_cpu", "data.batch_size=3",
         f"hydra.run.dir={tmp_path / 'run'}"],
        cwd=REPO, env=run_env(), capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert proc.returncode == 1
    assert "data.batch_size=3 is the global batch" in proc.stderr
    assert "training data xquad-r" not in proc.stdout + proc.stderr
    assert not (tmp_path / "run" / "checkpoints").exists()


def test_monitoring_a_zero_shot_metric_is_warned_about(
    compose: Compose, caplog: pytest.LogCaptureFixture
) -> None:
    check_monitors(compose("callbacks.model_checkpoint.monitor=eval/mlqa-r/map_multi"))
    assert "callbacks.model_checkpoint monitors the zero-shot metric eval/mlqa-r/map_multi" in caplog.text
    assert "selects on a test set" in caplog.text
    caplog.clear()
    check_monitors(compose("data.val.fraction=0.1", "callbacks=validation"))
    assert "zero-shot" not in caplog.text
