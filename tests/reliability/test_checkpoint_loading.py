"""One checkpoint loader, one message: ``evaluate.py`` and ``mine.py`` (like ``train.py``) refuse a file that is not
a ``train.py`` checkpoint, or one holding code, with one ConfigError naming it, never torch's advice to load with
``weights_only=False``; and a checkpoint carries its architecture: one of the tiny model is evaluated without
repeating ``model=tiny``, and one of an older version (without the record) gets one message saying which
``model=`` to add, not a size mismatch per weight."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import torch
import yaml

from hybrid_ir.models.loading import load_encoder
from hybrid_ir.tasks.evaluate import evaluate
from hybrid_ir.tasks.mine import mine
from hybrid_ir.training.loss import InfoNCELoss
from hybrid_ir.training.module import BiEncoderModule
from hybrid_ir.utils.errors import ConfigError
from tests.helpers.fakes import refusal, write_malicious_checkpoint
from tests.helpers.repo import REPO

from .conftest import Compose
from .runs import run_env


@pytest.fixture
def malicious(tmp_path: Path) -> tuple[Path, Path]:
    return write_malicious_checkpoint(tmp_path)


def test_evaluate_refuses_code_with_one_message(compose: Compose, no_model: None, malicious: tuple) -> None:
    path, marker = malicious
    with pytest.raises(ConfigError) as info:
        evaluate(compose(f"ckpt_path={path}", config="evaluate"))
    assert str(info.value).startswith(refusal(path))
    assert "weights_only" not in str(info.value)
    assert not marker.exists()


def test_mine_refuses_code_with_one_message(compose: Compose, no_model: None, malicious: tuple) -> None:
    path, marker = malicious
    with pytest.raises(ConfigError) as info:
        mine(
            compose(
                "data=default",
                "data.train.0.languages=[en,de]",
                "data.download=false",
                f"ckpt_path={path}",
                config="mine",
            )
        )
    assert str(info.value).startswith(refusal(path))
    assert "weights_only" not in str(info.value)
    assert not marker.exists()


def test_evaluate_py_prints_the_message_not_torchs(tmp_path: Path, malicious: tuple) -> None:
    path, marker = malicious
    proc = subprocess.run(
        [sys.executable, "evaluate.py", f"ckpt_path={path}", f"hydra.run.dir={tmp_path / 'run'}"],
        cwd=REPO, env=run_env(), capture_output=True, text=True, timeout=180,
    )  # fmt: skip
    assert proc.returncode != 0
    assert refusal(path) in proc.stdout + proc.stderr
    assert "weights_only" not in proc.stdout + proc.stderr
    assert not marker.exists()


def tiny_checkpoint(encoder: Any, path: Path, record_architecture: bool = True) -> Path:
    """A checkpoint of ``encoder`` as ``train.py`` writes it (the module's ``on_save_checkpoint`` included);
    without ``record_architecture``, as versions before the record wrote it."""
    module = BiEncoderModule(encoder, InfoNCELoss())
    checkpoint: dict[str, Any] = {"state_dict": module.state_dict(), "global_step": 3}
    module.on_save_checkpoint(checkpoint)
    if not record_architecture:
        checkpoint["hybrid_ir"].pop("config_overrides", None)
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save(checkpoint, path)
    return path


def test_a_tiny_checkpoint_is_evaluated_without_repeating_its_model(
    compose: Compose, tiny_encoder_factory, tmp_path: Path
) -> None:
    trained = tiny_encoder_factory()
    ckpt = tiny_checkpoint(trained, tmp_path / "last.ckpt")
    cfg = compose(f"ckpt_path={ckpt}", config="evaluate")  # the default model: e5-small, 384 wide
    encoder, tag, step = load_encoder(cfg, str(ckpt))
    assert (tag, step, encoder.dim) == (str(ckpt), 3, trained.dim)
    theirs = encoder.state_dict()
    assert all(torch.equal(v, theirs[k]) for k, v in trained.state_dict().items())


def test_an_old_checkpoint_of_another_architecture_says_which_model_to_add(
    compose: Compose, tiny_encoder_factory, tmp_path: Path
) -> None:
    run = tmp_path / "run"
    ckpt = tiny_checkpoint(
        tiny_encoder_factory(), run / "checkpoints" / "last.ckpt", record_architecture=False
    )
    (run / ".hydra").mkdir()
    (run / ".hydra" / "hydra.yaml").write_text(
        yaml.safe_dump({"hydra": {"runtime": {"choices": {"model": "tiny"}}}})
    )
    (run / ".hydra" / "overrides.yaml").write_text(
        yaml.safe_dump(["experiment=smoke", "model.max_length=32"])
    )
    with pytest.raises(ConfigError) as info:
        load_encoder(compose(f"ckpt_path={ckpt}", config="evaluate"), str(ckpt))
    message = str(info.value)
    assert message.startswith(f"ckpt_path={str(ckpt)!r} holds the weights of another architecture than model")
    assert "weights differ in shape, e.g. " in message
    assert message.endswith(
        f"add the model config of its training run ({run / '.hydra'}): model=tiny model.max_length=32"
    )
    assert "size mismatch" not in message and "\n" not in message
