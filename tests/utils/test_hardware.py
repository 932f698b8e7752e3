"""best_precision and cpu_has_fast_bf16 with the CPU flags and CUDA availability faked; the precision helpers; the
thread counts of training processes and DataLoader workers with the affinity mask and the environment faked."""

from __future__ import annotations

import logging
import os
from collections.abc import Iterator

import pytest
import torch

from hybrid_ir.utils import hardware
from hybrid_ir.utils.errors import ConfigError
from hybrid_ir.utils.hardware import (
    accelerator_device,
    autocast_context,
    available_cores,
    best_precision,
    cpu_has_fast_bf16,
    eval_precision,
    local_ranks,
    set_training_threads,
    worker_init,
)


@pytest.fixture
def no_cuda(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)


@pytest.mark.parametrize(("fast", "expected"), [(False, "32-true"), (True, "bf16-mixed")])
@pytest.mark.parametrize("accelerator", ["cpu", "auto"])
def test_cpu_precision(monkeypatch, no_cuda, fast: bool, expected: str, accelerator: str) -> None:
    monkeypatch.setattr(hardware, "cpu_has_fast_bf16", lambda: fast)
    assert best_precision(accelerator) == expected


@pytest.mark.parametrize(("bf16", "expected"), [(True, "bf16-mixed"), (False, "16-mixed")])
def test_gpu_precision(monkeypatch, bf16: bool, expected: str) -> None:
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *a, **k: bf16)
    monkeypatch.setattr(hardware, "cpu_has_fast_bf16", lambda: False)
    assert best_precision("gpu") == expected
    assert best_precision("auto") == expected
    assert best_precision("cpu") == "32-true", "an explicit CPU run ignores the GPU"


@pytest.fixture
def fresh_flags() -> Iterator[None]:
    cpu_has_fast_bf16.cache_clear()
    yield
    cpu_has_fast_bf16.cache_clear()


class FakePath:
    """Replaces ``Path`` in the module: ``/proc/cpuinfo`` reads as ``text`` (or raises OSError)."""

    text: str | None = None

    def __init__(self, _path: str) -> None:
        pass

    def read_text(self, **_kwargs: object) -> str:
        if self.text is None:
            raise OSError("no /proc here")
        return self.text


@pytest.mark.parametrize(
    ("cpuinfo", "expected"),
    [
        ("flags\t\t: fpu sse2 avx512f avx512_bf16 avx512_vnni\n", True),
        ("flags\t\t: fpu sse2 amx_tile amx_bf16 amx_int8\n", True),
        ("flags\t\t: fpu sse2 avx2 avx512f avx512_vnni\n", False),
        ("flags\t\t: fpu xavx512_bf16y\n", False),
        (None, False),
    ],
)
def test_cpu_has_fast_bf16(monkeypatch, fresh_flags, cpuinfo: str | None, expected: bool) -> None:
    monkeypatch.setattr(FakePath, "text", cpuinfo)
    monkeypatch.setattr(hardware, "Path", FakePath)
    assert cpu_has_fast_bf16() is expected


@pytest.mark.parametrize(
    ("accelerator", "cuda", "expected"),
    [
        ("cpu", True, "cpu"),
        ("auto", False, "cpu"),
        ("auto", True, "cuda"),
        ("gpu", True, "cuda"),
        ("cuda", True, "cuda"),
    ],
)
def test_accelerator_device(monkeypatch, accelerator: str, cuda: bool, expected: str) -> None:
    monkeypatch.setattr(torch.cuda, "is_available", lambda: cuda)
    monkeypatch.setattr(torch.cuda, "current_device", lambda: 0)
    assert accelerator_device(accelerator).type == expected


def test_gpu_without_cuda_and_unknown_accelerator_are_config_errors(no_cuda) -> None:
    with pytest.raises(ConfigError, match="no CUDA device is visible; use trainer=cpu"):
        accelerator_device("gpu")
    with pytest.raises(ConfigError, match="choose cpu, gpu or auto"):
        accelerator_device("tpu")


@pytest.mark.parametrize(
    ("precision", "dtype"),
    [("bf16-mixed", torch.bfloat16), ("16-mixed", torch.float16), ("32", torch.float32)],
)
def test_autocast_context(precision: str, dtype: torch.dtype) -> None:
    a, b = torch.randn(2, 3), torch.randn(3, 2)
    with autocast_context(torch.device("cpu"), precision):
        assert (a @ b).dtype == dtype


def test_eval_precision() -> None:
    assert eval_precision("bf16-mixed") == "bf16-mixed"
    assert eval_precision("16-mixed") == "16-mixed"
    assert eval_precision("32-true") == "32"
    assert eval_precision(64) == "32"


@pytest.fixture
def threads(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """The thread counts given to ``torch.set_num_threads`` during the test (which then changes nothing); torch's
    own count reads as 32."""
    given: list[int] = []
    monkeypatch.setattr(torch, "set_num_threads", given.append)
    monkeypatch.setattr(torch, "get_num_threads", lambda: 32)
    for name in ("OMP_NUM_THREADS", "LOCAL_WORLD_SIZE"):
        monkeypatch.delenv(name, raising=False)
    return given


def test_available_cores_are_the_affinity_mask_else_the_cpu_count(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(os, "cpu_count", lambda: 64)
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: {0, 5, 7}, raising=False)
    assert available_cores() == 3
    monkeypatch.delattr(os, "sched_getaffinity")
    assert available_cores() == 64
    monkeypatch.setattr(os, "cpu_count", lambda: None)
    assert available_cores() == 1


def test_local_ranks_are_torchruns_local_world_size_else_the_devices(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("LOCAL_WORLD_SIZE", raising=False)
    assert local_ranks(4) == 4 and local_ranks(0) == 1
    monkeypatch.setenv("LOCAL_WORLD_SIZE", "2")
    assert local_ranks(4) == 2
    for bad in ("two", "0", "-1"):
        monkeypatch.setenv("LOCAL_WORLD_SIZE", bad)
        with pytest.raises(ConfigError, match=rf"^LOCAL_WORLD_SIZE='{bad}': give the processes"):
            local_ranks(4)


@pytest.mark.parametrize(
    ("cores", "devices", "local_world", "expected"),
    [(16, 4, None, 4), (16, 4, "8", 2), (6, 4, None, 1), (3, 8, None, 1), (128, 1, None, 32)],
    ids=["devices", "torchrun", "rounded-down", "at-least-one", "at-most-torchs-own"],
)
def test_each_training_process_gets_its_share_of_the_cores(
    monkeypatch, threads, caplog, cores: int, devices: int, local_world: str | None, expected: int
) -> None:
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: set(range(cores)), raising=False)
    if local_world is not None:
        monkeypatch.setenv("LOCAL_WORLD_SIZE", local_world)
    with caplog.at_level(logging.INFO, logger=hardware.__name__):
        assert set_training_threads(devices) == expected
    assert threads == [expected]
    (record,) = caplog.records
    ranks = int(local_world or devices)
    assert record.getMessage() == (
        f"torch uses {expected} CPU threads in this process: {cores} available cores for {ranks} training processes "
        "on this machine (set OMP_NUM_THREADS to choose)"
    )


def test_omp_num_threads_is_respected(monkeypatch, threads, caplog) -> None:
    monkeypatch.setenv("OMP_NUM_THREADS", "3")
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: set(range(16)), raising=False)
    with caplog.at_level(logging.INFO, logger=hardware.__name__):
        assert set_training_threads(1) == 32
    assert threads == []
    assert [r.getMessage() for r in caplog.records] == [
        "torch uses 32 CPU threads in this process (OMP_NUM_THREADS=3)"
    ]


@pytest.mark.parametrize("seeded", [True, False])
def test_a_worker_takes_one_thread_no_tokenizer_parallelism_and_lightnings_seeding(
    monkeypatch, threads, seeded: bool
) -> None:
    monkeypatch.setenv("TOKENIZERS_PARALLELISM", "true")  # put back after the test
    if seeded:
        monkeypatch.setenv("PL_SEED_WORKERS", "1")
    else:
        monkeypatch.delenv("PL_SEED_WORKERS", raising=False)
    seeds: list[tuple[int, int | None]] = []
    monkeypatch.setattr(
        hardware, "pl_worker_init_function", lambda worker_id, rank: seeds.append((worker_id, rank))
    )
    worker_init(3, rank=2)
    assert threads == [1] and os.environ["TOKENIZERS_PARALLELISM"] == "false"
    assert seeds == ([(3, 2)] if seeded else [])


class _WorkerState(torch.utils.data.Dataset):
    """One item: the torch threads, the tokenizers' parallelism setting and a draw of torch's generator in the
    process that reads it."""

    def __len__(self) -> int:
        return 1

    def __getitem__(self, index: int) -> tuple[int, str | None, float]:
        return torch.get_num_threads(), os.environ.get("TOKENIZERS_PARALLELISM"), torch.rand(1).item()


def test_a_dataloader_worker_runs_the_init(monkeypatch: pytest.MonkeyPatch) -> None:
    """In a real worker process: one thread, no tokenizer parallelism, and the generators seeded as Lightning
    seeds them (the same draw as a loader with Lightning's own worker_init_fn)."""
    from functools import partial

    from lightning.fabric.utilities.seed import pl_worker_init_function

    monkeypatch.delenv("TOKENIZERS_PARALLELISM", raising=False)
    monkeypatch.setenv("PL_SEED_WORKERS", "1")

    def first(init) -> tuple[int, str | None, float]:
        torch.manual_seed(5)
        loader = torch.utils.data.DataLoader(
            _WorkerState(), num_workers=1, worker_init_fn=init, batch_size=None
        )
        return next(iter(loader))

    threads, parallelism, draw = first(partial(worker_init, rank=1))
    assert (threads, parallelism) == (1, "false")
    assert draw == first(partial(pl_worker_init_function, rank=1))[2]
    assert "TOKENIZERS_PARALLELISM" not in os.environ
