"""best_precision and cpu_has_fast_bf16 with the CPU flags and CUDA availability faked; the precision helpers."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
import torch

from hybrid_ir.utils import hardware
from hybrid_ir.utils.errors import ConfigError
from hybrid_ir.utils.hardware import (
    accelerator_device,
    autocast_context,
    best_precision,
    cpu_has_fast_bf16,
    eval_precision,
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
