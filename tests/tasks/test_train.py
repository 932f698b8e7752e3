"""The training components built from the config: what ``train.py`` runs and the benchmarks measure."""

from __future__ import annotations

import os
from pathlib import Path

import lightning as L
import pytest
import torch
from lightning.pytorch.callbacks import LearningRateMonitor, TQDMProgressBar
from lightning.pytorch.utilities.rank_zero import rank_zero_only

from hybrid_ir.tasks.instantiate import compose_config
from hybrid_ir.tasks.train import build_components
from tests.helpers.repo import REPO

CONF = REPO / "conf"


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


@pytest.mark.usefixtures("shared_e5_tokenizer")
@pytest.mark.parametrize("checkpoint", [True, False])
def test_a_run_without_a_checkpoint_callback_writes_no_checkpoint(tmp_path: Path, checkpoint: bool) -> None:
    """``callbacks.model_checkpoint=null`` (the replication: only metrics are kept) leaves no checkpointing at all;
    Lightning used to add its own ModelCheckpoint, which wrote a 640 MB e5-small checkpoint per replication run
    into the CSV logger's folder."""
    overrides = [f"paths.output_dir={tmp_path}", "model=tiny", "logger=csv", "~callbacks.zero_shot_eval"]
    overrides += [] if checkpoint else ["callbacks.model_checkpoint=null", "callbacks.export_encoder=null"]
    trainer = build_components(compose_config(CONF, "train", overrides)).trainer
    assert len(trainer.checkpoint_callbacks) == int(checkpoint)
    if checkpoint:
        assert Path(trainer.checkpoint_callbacks[0].dirpath) == tmp_path / "checkpoints"


@pytest.mark.usefixtures("shared_e5_tokenizer")
@pytest.mark.parametrize("node", [0, 1])
def test_only_the_first_node_logs_the_hyperparameters(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, node: int
) -> None:
    """Lightning's multi-node launcher gives a node its place by ``NODE_RANK`` only, which Lightning's rank-zero-only
    calls ignore until the Trainer sets up: node 1 logged the hyper-parameters as rank 0 (with W&B, a run of its
    own; with the CSV logger, into the shared run folder)."""
    monkeypatch.setattr(rank_zero_only, "rank", rank_zero_only.rank)  # put back after the test
    for name in ("RANK", "SLURM_PROCID", "GROUP_RANK", "LOCAL_RANK"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("NODE_RANK", str(node))
    overrides = [
        f"paths.output_dir={tmp_path}",
        "model=tiny",
        "logger=csv",
        "~callbacks.zero_shot_eval",
        "trainer=ddp_cpu",
        "trainer.devices=1",
        "trainer.num_nodes=2",
        "trainer.precision=32-true",
    ]
    build_components(compose_config(CONF, "train", overrides))
    assert (tmp_path / "csv" / "hparams.yaml").is_file() == (node == 0)


@pytest.mark.usefixtures("shared_e5_tokenizer")
@pytest.mark.parametrize(("omp", "expected"), [(None, [4]), ("2", [])])
def test_each_rank_gets_its_share_of_the_cores_unless_omp_num_threads_is_set(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, omp: str | None, expected: list[int]
) -> None:
    """``trainer=ddp_cpu`` with 2 devices on a machine whose affinity mask holds 8 cores: 4 torch threads per rank;
    a set OMP_NUM_THREADS is left to torch."""
    given: list[int] = []
    monkeypatch.setattr(torch, "set_num_threads", given.append)
    monkeypatch.setattr(torch, "get_num_threads", lambda: 16)
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: set(range(8)), raising=False)
    monkeypatch.delenv("LOCAL_WORLD_SIZE", raising=False)
    if omp is None:
        monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    else:
        monkeypatch.setenv("OMP_NUM_THREADS", omp)
    overrides = [
        f"paths.output_dir={tmp_path}",
        "model=tiny",
        "logger=none",
        "~callbacks.zero_shot_eval",
        "trainer=ddp_cpu",
        "trainer.devices=2",
        "trainer.precision=32-true",
    ]
    build_components(compose_config(CONF, "train", overrides))
    assert given == expected
