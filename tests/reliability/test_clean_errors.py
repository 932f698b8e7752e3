"""Failures speak the user's language (issue 28, items 8 and 9): settings that another library used to reject in its
own words (numpy's seed bounds, Lightning's missing GPU backend, a batch-size message that did not mention
``data.val.fraction``) stop before any model with a :class:`ConfigError` naming the key; and every entry point
prints an expected error as ``Error: <message>`` without a traceback (``HYDRA_FULL_ERROR=1`` shows it)."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from hybrid_ir.tasks.mine import mine
from hybrid_ir.tasks.train import train
from hybrid_ir.utils.errors import ConfigError
from tests.helpers.repo import REPO

from .conftest import Compose


@pytest.mark.parametrize("seed", ["-1", "4294967296", "1.5"])
def test_a_seed_outside_numpys_range_names_the_key_and_the_range(
    compose: Compose, no_model: None, seed: str
) -> None:
    with pytest.raises(
        ConfigError,
        match=re.escape(f"seed={seed}: expected an integer from 0 to 4294967295; numpy's seed range"),
    ):
        train(compose("experiment=smoke", f"seed={seed}"))


def test_mine_checks_the_seed_too(compose: Compose, no_model: None) -> None:
    with pytest.raises(ConfigError, match=r"seed=-1: expected an integer from 0 to 4294967295"):
        mine(compose("model=tiny", "seed=-1", config="mine"))


@pytest.mark.parametrize(
    ("trainer", "visible", "fragments"),
    [
        ("gpu", 0, ["trainer.devices=1 asks for 1 GPU(s)", "no CUDA GPU is visible", "trainer=cpu"]),
        ("ddp", 0, ["trainer.devices=4 asks for 4 GPU(s)", "no CUDA GPU is visible", "trainer=cpu"]),
        (
            "ddp",
            2,
            [
                "trainer.devices=4 asks for 4 GPU(s)",
                "only 2 CUDA GPU(s) are visible",
                "lower trainer.devices",
            ],
        ),
    ],
)
def test_a_gpu_trainer_without_enough_gpus_stops_before_any_model(
    compose: Compose,
    no_model: None,
    monkeypatch: pytest.MonkeyPatch,
    trainer: str,
    visible: int,
    fragments: list[str],
) -> None:
    monkeypatch.setattr(torch.cuda, "device_count", lambda: visible)
    with pytest.raises(ConfigError) as info:
        train(compose("experiment=smoke", f"trainer={trainer}"))
    for fragment in fragments:
        assert fragment in str(info.value)


def test_enough_gpus_pass_the_check(compose: Compose, monkeypatch: pytest.MonkeyPatch) -> None:
    from hybrid_ir.tasks.checks import check_accelerator

    monkeypatch.setattr(torch.cuda, "device_count", lambda: 4)
    check_accelerator(compose("trainer=ddp").trainer)
    check_accelerator(compose("trainer=gpu", "trainer.devices=[3]").trainer)
    with pytest.raises(ConfigError, match="asks for 5 GPU"):
        check_accelerator(compose("trainer=gpu", "trainer.devices=[4]").trainer)


@pytest.mark.parametrize(
    ("fraction", "start", "fragments"),
    [
        (
            "0.99",
            "data.val.fraction=0.99 holds out 1182 of the 1190 ids of xquad-r (8 left for training)",
            ["too few for training (lower data.val.fraction)"],
        ),
        (
            "0.005",
            "data.val.fraction=0.005 holds out 6 of the 1190 ids of xquad-r",
            ["too few for validation", "data.val.batch_size"],
        ),
    ],
    ids=["too-few-training-ids", "too-few-validation-ids"],
)
def test_a_validation_fraction_that_leaves_too_few_ids_says_so(
    compose: Compose, no_model: None, fraction: str, start: str, fragments: list[str]
) -> None:
    with pytest.raises(ConfigError) as info:
        train(compose("experiment=smoke", f"data.val.fraction={fraction}"))
    message = str(info.value)
    assert message.startswith(start)
    for fragment in fragments:
        assert fragment in message


def _run(args: list[str], tmp_path: Path, full_error: bool = False) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k != "HYDRA_FULL_ERROR"}
    env.update({"OMP_NUM_THREADS": "1", "WANDB_MODE": "offline", "HF_HUB_OFFLINE": "1"})
    if full_error:
        env["HYDRA_FULL_ERROR"] = "1"
    return subprocess.run(
        [sys.executable, *args], cwd=REPO, env=env, capture_output=True, text=True, timeout=300, check=False
    )


# A cheap config error of each entry point, found before any model is loaded, and its message.
ENTRY_POINT_ERRORS = {
    # raised inside hydra.utils.instantiate: Hydra wraps it in an InstantiationException
    "train.py": (
        ["train.py", "experiment=smoke", "sampler.alpha=1.5"],
        "alpha (probability of a monolingual",
    ),
    "evaluate.py": (
        ["evaluate.py", "model=tiny", "eval.max_qids=0"],
        "eval.max_qids=0: expected an integer >= 1 or null",
    ),
    "mine.py": (["mine.py", "model=tiny", "mine.rank_max=5"], "mine.rank_max=5 is below mine.rank_min=10"),
    "report": (["report.py", "{tmp}/no-such-dir"], "no such directory: {tmp}/no-such-dir"),
}


@pytest.mark.parametrize("entry", list(ENTRY_POINT_ERRORS))
def test_an_expected_error_is_printed_as_its_message_alone(entry: str, tmp_path: Path) -> None:
    args, message = ENTRY_POINT_ERRORS[entry]
    args = [a.format(tmp=tmp_path) for a in args]
    if entry != "report":
        args.append(f"hydra.run.dir={tmp_path / 'run'}")
    proc = _run(args, tmp_path)
    assert proc.returncode == 1, proc.stderr[-3000:]
    assert f"Error: {message.format(tmp=tmp_path)}" in proc.stderr
    assert "Traceback" not in proc.stderr + proc.stdout
    assert "InstantiationException" not in proc.stderr and "Error in call to target" not in proc.stderr


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["train.py", "experiment=smoke", "seed=-1"], "seed=-1: expected an integer from 0 to"),
        (["report.py", "{tmp}/no-such-dir"], "no such directory"),
    ],
)
def test_hydra_full_error_shows_the_traceback(args: list[str], message: str, tmp_path: Path) -> None:
    args = [a.format(tmp=tmp_path) for a in args]
    if args[0] == "train.py":
        args.append(f"hydra.run.dir={tmp_path / 'run'}")
    proc = _run(args, tmp_path, full_error=True)
    assert proc.returncode == 1
    assert "Traceback (most recent call last)" in proc.stderr
    assert message in proc.stderr
