"""A resume under changed data settings is refused: the checkpoint records what its batch plan depends on
(:meth:`ParallelQADataModule.plan_fingerprint`), and a resume whose plan differs would continue at the
checkpoint's position of another plan (ids skipped or repeated). The error names each changed key with its old
and new value, before any model is built; ``resume_allow_plan_change=true`` continues with a warning naming them;
a checkpoint of an older version, without the record, gets a warning that it cannot be checked."""

from __future__ import annotations

import logging
import re
import shutil
from pathlib import Path
from typing import Any

import pytest
import torch
from hydra.errors import InstantiationException
from hydra.utils import instantiate
from omegaconf import DictConfig

from hybrid_ir.data.runtime.datamodule import ParallelQADataModule
from hybrid_ir.tasks.train import train
from hybrid_ir.utils.errors import ConfigError
from tests.helpers.jsonl import pair_records, write_jsonl

from .conftest import Compose

SMOKE = ("experiment=smoke", "data.train.0.languages=[en,de]", "~callbacks.zero_shot_eval")
KEY = ParallelQADataModule.__qualname__


def datamodule_state(cfg: DictConfig) -> dict[str, Any]:
    """What a checkpoint of a run of ``cfg`` records of its DataModule (before any loader exists)."""
    datamodule: ParallelQADataModule = instantiate(cfg.datamodule)
    datamodule.load_corpora()
    return datamodule.state_dict()


def checkpoint_of(cfg: DictConfig, path: Path, state: dict[str, Any] | None = None) -> Path:
    """A checkpoint as ``train.py`` writes one for ``cfg`` at step 2 (the parts a resume reads first)."""
    state = datamodule_state(cfg) if state is None else state
    torch.save({"global_step": 2, "state_dict": {}, KEY: state}, path)
    return path


def refusal(compose: Compose, tmp_path: Path, before: tuple[str, ...], after: tuple[str, ...]) -> str:
    """The message of resuming a checkpoint of ``SMOKE + before`` with ``SMOKE + after`` (no model is built)."""
    ckpt = checkpoint_of(compose(*SMOKE, *before), tmp_path / "last.ckpt")
    with pytest.raises(ConfigError) as info:
        train(compose(*SMOKE, *after, f"ckpt_path={ckpt}"))
    return str(info.value)


@pytest.mark.parametrize(
    ("change", "fragment"),
    [
        (("data.batch_size=16",), "data.batch_size: 8 -> 16"),
        (("sampler=mono",), "sampler.mode: 'hybrid' -> 'mono'"),
        (("sampler.alpha=0.25",), "sampler.alpha: 0.5 -> 0.25"),
        (("sampler.epoch_steps=5",), "sampler.epoch_steps: None -> 5"),
        (("seed=1",), "seed: 0 -> 1"),
        (("data.val.fraction=0.2",), "data.val.fraction: 0.0 -> 0.2"),
        (
            ("data.train.0.languages=[en,de,es]",),
            "1190 ids in de, en -> xquad-r (*): 1190 ids in de, en, es (its ids, languages or answer groups differ)",
        ),
    ],
    ids=["batch size", "sampler", "alpha", "epoch steps", "seed", "validation split", "languages"],
)
def test_a_changed_setting_is_refused_naming_it(
    compose: Compose, no_model: None, tmp_path: Path, change: tuple[str, ...], fragment: str
) -> None:
    message = refusal(compose, tmp_path, (), change)
    assert re.search(re.escape(fragment).replace(r"\*", ".*"), message), message
    assert "Restore the checkpoint's setting to resume, or start a new run" in message
    assert "resume_allow_plan_change=true" in message


def test_every_changed_setting_is_named(compose: Compose, no_model: None, tmp_path: Path) -> None:
    message = refusal(compose, tmp_path, (), ("data.batch_size=16", "seed=3"))
    assert "data.batch_size: 8 -> 16; seed: 0 -> 3" in message


def test_a_changed_data_file_is_refused(compose: Compose, no_model: None, tmp_path: Path) -> None:
    old = write_jsonl(tmp_path / "old.jsonl", pair_records(40, ["en", "de"]))
    new = write_jsonl(tmp_path / "new.jsonl", pair_records(48, ["en", "de"]))
    message = refusal(
        compose,
        tmp_path,
        ("data=jsonl", f"data.train.0.path={old}"),
        ("data=jsonl", f"data.train.0.path={new}"),
    )
    assert f"data.train.0: my-data ({old}): 40 ids in de, en -> my-data ({new}): 48 ids in de, en" in message


def test_the_same_records_at_another_path_are_the_same_plan(compose: Compose, tmp_path: Path) -> None:
    old = write_jsonl(tmp_path / "old.jsonl", pair_records(40, ["en", "de"]))
    state = datamodule_state(compose(*SMOKE, "data=jsonl", f"data.train.0.path={old}"))
    moved = shutil.copy(old, tmp_path / "moved.jsonl")
    datamodule = instantiate(compose(*SMOKE, "data=jsonl", f"data.train.0.path={moved}").datamodule)
    datamodule.check_resume(state)  # no error


def test_an_unchanged_resume_passes_the_check(
    compose: Compose, no_model: None, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    ckpt = checkpoint_of(compose(*SMOKE), tmp_path / "last.ckpt")
    with caplog.at_level(logging.WARNING), pytest.raises(InstantiationException, match="a model was built"):
        train(compose(*SMOKE, f"ckpt_path={ckpt}"))  # passes every check: builds the model
    assert "data settings" not in caplog.text


def test_the_escape_hatch_warns_naming_each_change(
    compose: Compose, no_model: None, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    ckpt = checkpoint_of(compose(*SMOKE), tmp_path / "last.ckpt")
    overrides = (*SMOKE, "data.batch_size=16", "resume_allow_plan_change=true", f"ckpt_path={ckpt}")
    with caplog.at_level(logging.WARNING), pytest.raises(InstantiationException, match="a model was built"):
        train(compose(*overrides))
    assert re.search(r"resume_allow_plan_change=true: .*\(data.batch_size: 8 -> 16\)", caplog.text)


def test_an_old_checkpoint_is_resumed_with_a_warning_that_it_cannot_be_checked(
    compose: Compose, no_model: None, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    ckpt = checkpoint_of(compose(*SMOKE), tmp_path / "last.ckpt", state={"loader": {"epoch": 0}})
    with caplog.at_level(logging.WARNING), pytest.raises(InstantiationException, match="a model was built"):
        train(compose(*SMOKE, f"ckpt_path={ckpt}"))
    assert "does not record the data settings of its batch plan" in caplog.text
    assert "cannot be checked" in caplog.text


def test_lightning_restoring_the_datamodule_checks_too(compose: Compose) -> None:
    """Outside ``train.py`` (a Trainer of one's own), Lightning's ``load_state_dict`` makes the same check."""
    state = datamodule_state(compose(*SMOKE))
    datamodule = instantiate(compose(*SMOKE, "data.batch_size=16").datamodule)
    with pytest.raises(ConfigError, match=re.escape("data.batch_size: 8 -> 16")):
        datamodule.load_state_dict(state)


@pytest.mark.slow
def test_a_real_checkpoint_records_its_plan_and_refuses_another(
    compose: Compose, fast_tiny_model: None
) -> None:
    """Train 2 steps; resuming with another batch size is refused; allowed, it trains on to step 4 on the new
    plan, whose record the next checkpoint holds; resumed unchanged from there, it trains on to step 6."""
    run = (
        "trainer.max_steps=2",
        "callbacks.model_checkpoint.every_n_train_steps=2",
        "~callbacks.export_encoder",
    )
    cfg = compose(*SMOKE, *run)
    train(cfg)
    last = Path(cfg.paths.output_dir) / "checkpoints" / "last.ckpt"
    saved = torch.load(last, weights_only=True)[KEY]
    assert saved["plan"]["data.batch_size"] == 8 and saved["loader"]["batches_yielded"] == 2
    with pytest.raises(ConfigError, match=re.escape("data.batch_size: 8 -> 16")):
        train(compose(*SMOKE, *run, "data.batch_size=16", "ckpt_path=last"))
    allowed = ("data.batch_size=16", "resume_allow_plan_change=true", "trainer.max_steps=4", "ckpt_path=last")
    train(compose(*SMOKE, *run, *allowed))
    saved = torch.load(last, weights_only=True)
    assert saved["global_step"] == 4 and saved[KEY]["plan"]["data.batch_size"] == 16
    assert (
        saved[KEY]["loader"]["batches_yielded"] == 4
    )  # the checkpoint's position, then two batches of the new plan
    train(compose(*SMOKE, *run, "data.batch_size=16", "trainer.max_steps=6", "ckpt_path=last"))
    assert torch.load(last, weights_only=True)["global_step"] == 6
