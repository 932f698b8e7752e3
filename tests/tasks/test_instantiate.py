"""Composing the project's configs outside a Hydra run."""

from __future__ import annotations

from pathlib import Path

from hybrid_ir.tasks.instantiate import compose_config
from tests.helpers.repo import REPO

CONF = REPO / "conf"


def test_compose_config_applies_overrides_and_can_run_twice(tmp_path: Path) -> None:
    first = compose_config(CONF, "train", [f"paths.output_dir={tmp_path}", "model=tiny", "seed=7"])
    second = compose_config(CONF, "evaluate", [f"paths.output_dir={tmp_path}"])  # Hydra re-initialised
    assert first.seed == 7 and first.model.random_init is True
    assert first.paths.output_dir == str(tmp_path)
    assert second.task_name == "evaluate"
    assert str(first.trainer.precision) in ("32-true", "bf16-mixed")  # the ${best_precision:...} resolver
