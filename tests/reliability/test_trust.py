"""Nothing a run reads can execute code: checkpoints are loaded ``weights_only`` (tensors and plain
containers; anything else is refused unread with one ConfigError naming the file), every trainer config loads
through :class:`AtomicCheckpointIO`, and no model config trusts remote code."""

from __future__ import annotations

import inspect
import re
from pathlib import Path

import pytest
from hydra.utils import instantiate

from hybrid_ir.models.encoder import Encoder
from hybrid_ir.models.loading import load_checkpoint_weights
from hybrid_ir.utils.checkpoint_io import AtomicCheckpointIO
from hybrid_ir.utils.errors import ConfigError
from tests.helpers.fakes import refusal, write_malicious_checkpoint

from .conftest import CONF, Compose


@pytest.fixture
def malicious_checkpoint(tmp_path: Path) -> tuple[Path, Path]:
    return write_malicious_checkpoint(tmp_path)


def test_checkpoint_io_refuses_code(malicious_checkpoint: tuple[Path, Path]) -> None:
    path, marker = malicious_checkpoint
    with pytest.raises(ConfigError, match=re.escape(refusal(path))) as info:
        AtomicCheckpointIO().load_checkpoint(path)
    assert "weights_only" not in str(info.value)
    assert not marker.exists()


def test_evaluate_checkpoint_loading_refuses_code(
    malicious_checkpoint: tuple[Path, Path], tiny_encoder_factory
) -> None:
    path, marker = malicious_checkpoint
    with pytest.raises(ConfigError, match=re.escape(refusal(path))):
        load_checkpoint_weights(tiny_encoder_factory(), str(path))
    assert not marker.exists()


@pytest.mark.parametrize("trainer", sorted(p.stem for p in (CONF / "trainer").glob("*.yaml")))
def test_every_trainer_config_loads_weights_only(compose: Compose, trainer: str) -> None:
    cfg = compose(f"trainer={trainer}")
    targets = [p["_target_"] for p in cfg.trainer.plugins]
    assert targets == ["hybrid_ir.utils.checkpoint_io.AtomicCheckpointIO"]


def test_the_cpu_trainer_uses_the_refusing_checkpoint_io(
    compose: Compose, malicious_checkpoint: tuple[Path, Path]
) -> None:
    path, marker = malicious_checkpoint
    trainer = instantiate(compose("trainer=cpu").trainer, logger=False)
    assert isinstance(trainer.strategy.checkpoint_io, AtomicCheckpointIO)
    with pytest.raises(ConfigError, match=re.escape(refusal(path))):
        trainer.strategy.load_checkpoint(path)
    assert not marker.exists()


@pytest.mark.parametrize("config", ["train", "evaluate"])
@pytest.mark.parametrize("model", sorted(p.stem for p in (CONF / "model").glob("*.yaml")))
def test_no_model_config_trusts_remote_code(compose: Compose, config: str, model: str) -> None:
    cfg = compose(f"model={model}", config=config)
    assert cfg.model.trust_remote_code is False


def test_encoder_does_not_trust_remote_code_by_default() -> None:
    assert inspect.signature(Encoder).parameters["trust_remote_code"].default is False
