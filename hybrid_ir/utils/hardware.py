"""Hardware and precision: whether bf16 is fast here, the default precision, the one mapping from a Lightning
precision string to autocast (used by training, evaluation and the benchmarks), and the CPU threads of each
training process and DataLoader worker, so the ranks and workers of one machine do not oversubscribe its cores
(what is set and how to override it: ``docs/usage.md``)."""

from __future__ import annotations

import contextlib
import functools
import logging
import os
from pathlib import Path

import torch
from lightning.fabric.utilities.seed import pl_worker_init_function

from hybrid_ir.utils.errors import ConfigError

log = logging.getLogger(__name__)

BF16_CPU_FLAGS = ("amx_bf16", "avx512_bf16")
# The Lightning precision strings accepted for encoding (``eval.precision``).
PRECISIONS = (
    "32",
    "32-true",
    "64",
    "64-true",
    "16",
    "16-mixed",
    "16-true",
    "bf16",
    "bf16-mixed",
    "bf16-true",
)
AUTOCAST_PREFIXES = ("bf16", "16")


@functools.lru_cache(maxsize=1)
def cpu_has_fast_bf16() -> bool:
    """True when the CPU has native bf16 matrix instructions (AMX or AVX-512-BF16). Without them PyTorch
    emulates bf16 matmuls, which is orders of magnitude slower than fp32."""
    try:
        flags = Path("/proc/cpuinfo").read_text(encoding="utf-8", errors="replace")
    except OSError:
        return False
    return any(flag in flags.split() for flag in BF16_CPU_FLAGS)


def best_precision(accelerator: str = "auto") -> str:
    """The Lightning ``precision`` to use: ``bf16-mixed`` on a bf16-capable GPU or CPU, else ``32-true``."""
    use_cuda = accelerator in ("auto", "gpu", "cuda") and torch.cuda.is_available()
    if use_cuda:
        return "bf16-mixed" if torch.cuda.is_bf16_supported() else "16-mixed"
    return "bf16-mixed" if cpu_has_fast_bf16() else "32-true"


def accelerator_device(accelerator: str = "auto") -> torch.device:
    """The device for work outside Lightning's Trainer (``evaluate.py``), from ``trainer.accelerator``:
    ``cpu``; ``gpu``/``cuda`` (the current CUDA device; an error when none is visible); ``auto`` (CUDA when
    visible, else CPU)."""
    if accelerator == "cpu":
        return torch.device("cpu")
    if accelerator not in ("auto", "gpu", "cuda"):
        raise ConfigError(
            f"trainer.accelerator={accelerator!r} is not supported here; choose cpu, gpu or auto"
        )
    if torch.cuda.is_available():
        return torch.device("cuda", torch.cuda.current_device())
    if accelerator == "auto":
        return torch.device("cpu")
    raise ConfigError(f"trainer.accelerator={accelerator!r} but no CUDA device is visible; use trainer=cpu")


def autocast_context(device: torch.device, precision: str) -> contextlib.AbstractContextManager:
    """``torch.autocast`` for a bf16 / 16 ``precision`` (``bf16``, ``bf16-mixed``, ``16-mixed``, ...); a no-op
    for 32 / 64."""
    if precision.startswith("bf16"):
        return torch.autocast(device.type, dtype=torch.bfloat16)
    if precision.startswith("16"):
        return torch.autocast(device.type, dtype=torch.float16)
    return contextlib.nullcontext()


def eval_precision(trainer_precision: object) -> str:
    """The encoding precision for a trainer precision: itself for bf16/16 variants (autocast), else ``"32"``."""
    text = str(trainer_precision)
    return text if text.startswith(AUTOCAST_PREFIXES) else "32"


def available_cores() -> int:
    """The CPU cores this process may run on: its affinity mask (``os.sched_getaffinity``, which a container's
    cpuset, ``taskset`` or a SLURM allocation limit) where the platform has one, else ``os.cpu_count()``."""
    affinity = getattr(os, "sched_getaffinity", None)
    if affinity is not None:
        return max(1, len(affinity(0)))
    return os.cpu_count() or 1


def local_ranks(devices_per_node: int) -> int:
    """The training processes sharing this machine: ``LOCAL_WORLD_SIZE`` (set by torchrun) when set, else
    ``devices_per_node`` (the trainer's devices: Lightning's launcher and SLURM start one process per device)."""
    value = os.environ.get("LOCAL_WORLD_SIZE", "").strip()
    if not value:
        return max(1, devices_per_node)
    if not value.isdigit() or int(value) < 1:
        raise ConfigError(
            f"LOCAL_WORLD_SIZE={value!r}: give the processes on this machine as a whole number >= 1"
        )
    return int(value)


def set_training_threads(devices_per_node: int) -> int:
    """Give this training process its share of the machine's cores as torch's intra-op threads: ``available_cores()
    // local_ranks(devices_per_node)`` (at least 1, at most torch's own count: its default is the machine's physical
    cores, blind to the affinity mask and to the other ranks), unless ``OMP_NUM_THREADS`` is set (the user's choice,
    which torch already follows: left as it is). Logs the choice; returns the threads torch now uses."""
    user = os.environ.get("OMP_NUM_THREADS", "").strip()
    if user:
        log.info(
            "torch uses %d CPU threads in this process (OMP_NUM_THREADS=%s)", torch.get_num_threads(), user
        )
        return torch.get_num_threads()
    cores, ranks = available_cores(), local_ranks(devices_per_node)
    threads = max(1, min(torch.get_num_threads(), cores // ranks))
    torch.set_num_threads(threads)
    log.info(
        "torch uses %d CPU threads in this process: %d available cores for %d training processes on this machine "
        "(set OMP_NUM_THREADS to choose)",
        threads,
        cores,
        ranks,
    )
    return threads


def worker_init(worker_id: int, rank: int = 0) -> None:
    """The ``worker_init_fn`` of the training and validation DataLoaders: a worker uses one torch thread and no
    tokenizer parallelism (``TOKENIZERS_PARALLELISM=false``), so ``num_workers`` workers beside the training
    processes do not oversubscribe the cores. It then seeds the worker as Lightning's own ``worker_init_fn`` does
    after ``seed_everything(workers=True)`` (Lightning adds its own only to a loader without one)."""
    os.environ["TOKENIZERS_PARALLELISM"] = "false"
    torch.set_num_threads(1)
    if int(os.environ.get("PL_SEED_WORKERS", 0)):
        pl_worker_init_function(worker_id, rank)
