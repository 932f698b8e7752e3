"""The training components built from the config: what ``train.py`` runs and the benchmarks measure."""

from __future__ import annotations

from pathlib import Path

import lightning as L
import pytest
import torch
from lightning.pytorch.callbacks import LearningRateMonitor, TQDMProgressBar

from hybrid_ir.pipeline import build_components
from hybrid_ir.utils.instantiate import compose_config

CONF = Path(__file__).resolve().parents[1] / "conf"


@pytest.mark.usefixtures("shared_e5_tokenizer")
def test_build_components_wires_the_run(tmp_path: Path) -> None:
    overrides = [
        f"paths.output_dir={tmp_path}",
        "model=tiny",
        "logger=none",
        "~callbacks.zero_shot_eval",
        "trainer.precision=32-true",
    ]
    marker = L.Callback()
    run = build_components(compose_config(CONF, "train", overrides), [marker])
    again = build_components(compose_config(CONF, "train", overrides))
    assert run.module.encoder is run.encoder
    assert run.datamodule.tokenizer is run.encoder.text_tokenizer
    assert run.callbacks[0] is marker and marker in run.trainer.callbacks
    assert any(isinstance(cb, TQDMProgressBar) for cb in run.trainer.callbacks)
    assert not any(isinstance(cb, LearningRateMonitor) for cb in run.callbacks)  # no logger: dropped
    assert run.loggers == [] and str(run.trainer.precision) == "32-true"
    for a, b in zip(run.encoder.parameters(), again.encoder.parameters(), strict=True):
        assert torch.equal(a, b)  # seeded before anything is built
