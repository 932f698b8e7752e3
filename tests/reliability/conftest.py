"""Real ``train.py`` processes shared by the reliability tests, started once per session.

``train_runs`` starts three runs of the same tiny configuration (:data:`runs.SMOKE`, 12 steps) at once, then
a fourth:

* ``reference`` and ``repeat``: uninterrupted runs (determinism: they must agree exactly);
* ``killed``: the same run slowed down by :class:`tests.helpers.fakes.StepDelay`, SIGKILLed as soon as its
  ``checkpoints/last.ckpt`` holds step >= ``KILL_AFTER_STEP``;
* ``resumed``: the uninterrupted runs' command with ``ckpt_path=last`` in the killed run's ``hydra.run.dir``.

The in-process fixtures compose the real configs (``compose``: :func:`hybrid_ir.tasks.instantiate.compose_config`),
forbid building a model (``no_model``) or make building the tiny one fast (``fast_tiny_model``: the session's
tokenizer, one thread).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import torch
from omegaconf import DictConfig
from transformers import AutoTokenizer, PreTrainedTokenizerBase

from hybrid_ir.models import encoder as encoder_module
from hybrid_ir.models.encoder import Encoder
from hybrid_ir.tasks.instantiate import compose_config
from hybrid_ir.utils.checkpoint_io import checkpoint_global_step
from tests.helpers.repo import REPO

from .runs import (
    DELAY,
    KILL_AFTER_STEP,
    RUN_TIMEOUT_S,
    SMOKE,
    TrainRuns,
    finish,
    kill_after_checkpoint,
    start_train,
)

CONF = REPO / "conf"
Compose = Callable[..., DictConfig]


@pytest.fixture(scope="session")
def train_runs(tmp_path_factory: pytest.TempPathFactory) -> Iterator[TrainRuns]:
    base = tmp_path_factory.mktemp("train_runs")
    reference, repeat, resumed = base / "reference", base / "repeat", base / "resumed"
    procs = {reference: start_train(reference, *SMOKE), repeat: start_train(repeat, *SMOKE)}
    try:
        killed = start_train(resumed, *SMOKE, *DELAY)
        ckpt = resumed / "checkpoints" / "last.ckpt"
        alive = kill_after_checkpoint(killed, ckpt, KILL_AFTER_STEP, RUN_TIMEOUT_S)
        killed_log = resumed.with_suffix(".log").rename(base / "killed.log")
        if not ckpt.is_file():
            pytest.fail(f"the run to be killed wrote no checkpoint:\n{killed_log.read_text()[-4000:]}")
        resume_step = checkpoint_global_step(ckpt)
        procs[resumed] = start_train(resumed, *SMOKE, "ckpt_path=last")
        for run_dir, proc in procs.items():
            finish(proc, run_dir)
        yield TrainRuns(
            reference=reference,
            repeat=repeat,
            resumed=resumed,
            killed_while_running=alive,
            killed_rc=killed.returncode,
            resume_step=resume_step,
            resumed_log=resumed.with_suffix(".log").read_text(errors="replace"),
        )
    finally:
        for proc in procs.values():
            if proc.poll() is None:
                proc.kill()
                proc.wait()


@pytest.fixture
def compose(tmp_path: Path) -> Compose:
    """``compose(*overrides, config="train")``: a config of ``conf/`` as ``train.py`` would get it, writing
    to ``<tmp_path>/run``."""

    def _compose(*overrides: str, config: str = "train") -> DictConfig:
        return compose_config(CONF, config, [f"paths.output_dir={tmp_path / 'run'}", *overrides])

    return _compose


@pytest.fixture
def no_model(monkeypatch: pytest.MonkeyPatch) -> None:
    """Building any :class:`Encoder` fails the test: errors must come before a model is loaded."""

    def refuse(self: Encoder, *args: Any, **kwargs: Any) -> None:
        raise AssertionError("a model was built before the error was reported")

    monkeypatch.setattr(Encoder, "__init__", refuse)


@pytest.fixture
def fast_tiny_model(
    monkeypatch: pytest.MonkeyPatch, e5_dir: Path, e5_tokenizer: PreTrainedTokenizerBase
) -> Iterator[None]:
    """In-process training runs build the tiny model with the session's e5 tokenizer (loading it takes
    seconds) and compute with one thread (see ``runs.py``)."""

    class SharedTokenizer:
        @staticmethod
        def from_pretrained(path: str, **kwargs: Any) -> PreTrainedTokenizerBase:
            return e5_tokenizer if str(path) == str(e5_dir) else AutoTokenizer.from_pretrained(path, **kwargs)

    monkeypatch.setattr(encoder_module, "AutoTokenizer", SharedTokenizer)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)
