"""Bad configurations fail at start-up, before any model is built, with a message that says what is wrong and
what is allowed. Each case composes the real configs (``hydra.compose``, as ``train.py`` does) and calls
:func:`hybrid_ir.pipeline.train` with model construction forbidden (``no_model``)."""

from __future__ import annotations

import subprocess
import sys

import pytest
from hydra.errors import ConfigCompositionException, InstantiationException, MissingConfigException

from hybrid_ir.pipeline import train
from hybrid_ir.utils.errors import ConfigError, DataError

from .conftest import Compose
from .runs import REPO, run_env

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
        ["eval.max_qids must be a positive integer or null, got 0"],
    ),
    "resume without a checkpoint": (
        ("ckpt_path=last",),
        ConfigError,
        ["no checkpoint at", "last.ckpt", "rerun with the old run's hydra.run.dir"],
    ),
    "resume from a file that is not a checkpoint": (
        ("ckpt_path=/etc/passwd",),
        ConfigError,
        ["ckpt_path='/etc/passwd'", "is not a loadable checkpoint", "give a checkpoint written by train.py"],
    ),
    "JSONL data without a path": (("data=jsonl",), Exception, ["Missing mandatory value", "path"]),
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
