"""Splitting a large file into verified parts and joining them back (``benchmarks.transfer``)."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from benchmarks.transfer import TransferError, file_sha256, join, main, split
from tests.helpers.repo import REPO


@pytest.mark.parametrize(
    ("size", "part", "n_parts"), [(1000, 300, 4), (900, 300, 3), (0, 300, 1), (5, 300, 1)]
)
def test_split_then_join_restores_the_file(tmp_path: Path, size: int, part: int, n_parts: int) -> None:
    src = tmp_path / "model.safetensors"
    src.write_bytes(os.urandom(size))
    manifest = split(src, tmp_path / "parts", part)
    listed = json.loads(manifest.read_text())
    assert len(listed["parts"]) == n_parts and all(p["size"] <= part for p in listed["parts"])
    assert listed["sha256"] == file_sha256(src) and sum(p["size"] for p in listed["parts"]) == size
    out = join(manifest, tmp_path / "elsewhere" / "model.safetensors")
    assert out.read_bytes() == src.read_bytes()


def test_corrupted_part_is_named_and_nothing_is_written(tmp_path: Path) -> None:
    src = tmp_path / "wheel.whl"
    src.write_bytes(os.urandom(1000))
    manifest = split(src, tmp_path / "parts", 400)
    bad = tmp_path / "parts" / "wheel.whl.part001"
    data = bytearray(bad.read_bytes())
    data[10] ^= 0xFF
    bad.write_bytes(bytes(data))
    out = tmp_path / "joined" / "wheel.whl"
    with pytest.raises(TransferError, match=r"wheel\.whl\.part001: .*bring this part again"):
        join(manifest, out)
    assert not out.exists()


def test_missing_part_is_named(tmp_path: Path) -> None:
    src = tmp_path / "f.bin"
    src.write_bytes(os.urandom(100))
    manifest = split(src, tmp_path / "parts", 40)
    (tmp_path / "parts" / "f.bin.part002").unlink()
    with pytest.raises(TransferError, match=r"f\.bin\.part002: part missing"):
        join(manifest)


def test_cli_round_trip(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    src = tmp_path / "f.bin"
    src.write_bytes(os.urandom(3 << 20))
    manifest = main(["split", str(src), str(tmp_path / "parts"), "--part-mb", "1"])
    assert len(json.loads(manifest.read_text())["parts"]) == 3
    out = main(["join", str(manifest)])
    assert out == tmp_path / "parts" / "f.bin" and out.read_bytes() == src.read_bytes()
    assert str(out) in capsys.readouterr().out


def test_gpu_check_joins_the_payload_then_stops_without_cuda(tmp_path: Path) -> None:
    import subprocess
    import sys

    import torch

    if torch.cuda.is_available():
        pytest.skip("a CUDA device is visible: the script would run the GPU benchmarks")
    root = REPO
    src = tmp_path / "tokenizer.json"
    src.write_bytes(os.urandom(5000))
    payload = tmp_path / "payload"
    split(src, payload, 2048)
    proc = subprocess.run(
        ["bash", str(root / "benchmarks" / "gpu_check.sh"), str(payload)],
        capture_output=True,
        text=True,
        env={**os.environ, "PYTHON": sys.executable, "OUT": str(tmp_path / "out")},
        timeout=120,
        check=False,
    )
    assert proc.returncode != 0 and "no CUDA device visible" in proc.stderr
    assert (payload / "tokenizer.json").read_bytes() == src.read_bytes()
