"""Hardware and precision: whether bf16 is fast here, the default precision, and the one mapping from a
Lightning precision string to autocast (used by training, evaluation and the benchmarks)."""

from __future__ import annotations

import contextlib
import functools
from pathlib import Path

import torch

from hybrid_ir.utils.errors import ConfigError

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
