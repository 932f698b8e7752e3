"""Stand-ins for tests: an encoder's interface without a trained model, a tokenizer that counts its calls, a callback
that slows a run down, and a checkpoint whose unpickling would run code."""

from __future__ import annotations

import math
import time
import zlib
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import lightning as L
import torch
import torch.nn.functional as F

from hybrid_ir.models.tokenizer import TextKind, TextTokenizer
from hybrid_ir.utils.errors import ConfigError


class BagOfWordsEncoder:
    """Deterministic stand-in for :class:`~hybrid_ir.models.encoder.Encoder`: the normalised sum of a fixed
    random vector per word (seeded by a CRC32 of the word), so texts that share words are similar. Implements
    :class:`~hybrid_ir.retrieval.encode.TextEncoder` and records every ``encode`` call in ``calls``."""

    dim = 24

    def __init__(self) -> None:
        self.calls: list[tuple[str, list[str]]] = []

    def word(self, word: str) -> torch.Tensor:
        """The vector [dim] of one word."""
        gen = torch.Generator().manual_seed(zlib.crc32(word.encode()))
        return torch.randn(self.dim, generator=gen)

    def encode(
        self,
        texts: Sequence[str],
        kind: str,
        batch_size: int = 64,
        precision: str = "32",
        progress: bool = False,
    ) -> torch.Tensor:
        """Embeddings [len(texts), dim]; an empty text is the vector of the empty word."""
        self.calls.append((kind, list(texts)))
        rows = [torch.stack([self.word(w) for w in text.split() or [""]]).sum(0) for text in texts]
        return F.normalize(torch.stack(rows), dim=1)


class CountingTokenizer(TextTokenizer):
    """A :class:`~hybrid_ir.models.tokenizer.TextTokenizer` that counts its calls and the texts it tokenises."""

    calls: int = 0
    texts: int = 0

    def __call__(self, texts: Sequence[str], kind: TextKind) -> list[list[int]]:
        self.calls += 1
        self.texts += len(texts)
        return super().__call__(texts, kind)


class StepDelay(L.Callback):
    """Sleep ``seconds`` after every training batch, e.g. to make a seconds-long run slow enough to interrupt::

        python train.py experiment=smoke +callbacks.step_delay._target_=tests.helpers.fakes.StepDelay \\
            +callbacks.step_delay.seconds=0.5

    A test helper (the reliability tests slow down the run they kill with it). It only waits: it holds no
    state and draws no random numbers, so a delayed run trains exactly as an undelayed one.
    """

    def __init__(self, seconds: float) -> None:
        super().__init__()
        if isinstance(seconds, bool) or not isinstance(seconds, (int, float)) or not math.isfinite(seconds):
            raise ConfigError(f"StepDelay.seconds must be a finite number >= 0, got {seconds!r}")
        if seconds < 0:
            raise ConfigError(f"StepDelay.seconds must be >= 0, got {seconds!r}")
        self.seconds = float(seconds)

    def on_train_batch_end(
        self, trainer: L.Trainer, pl_module: L.LightningModule, outputs: Any, batch: Any, batch_idx: int
    ) -> None:
        time.sleep(self.seconds)


class CreatesFile:
    """Unpickling this object opens (creates) ``path``: a stand-in for any code a pickle can run."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def __reduce__(self) -> tuple:
        return (open, (str(self.path), "w"))


def write_malicious_checkpoint(folder: Path) -> tuple[Path, Path]:
    """``(checkpoint, marker)``: a Lightning-shaped checkpoint in ``folder`` whose loading by plain unpickling
    creates ``marker``; checked once with an unsafe load (else a test of its refusal would prove nothing), then the
    marker is removed."""
    marker, path = folder / "pwned", folder / "evil.ckpt"
    torch.save(
        {"state_dict": {"encoder.w": torch.zeros(2)}, "global_step": 2, "x": CreatesFile(marker)}, path
    )
    torch.load(path, weights_only=False)
    assert marker.exists(), "the crafted checkpoint does not run code"
    marker.unlink()
    return path, marker


def refusal(path: Path) -> str:
    """The start of the one message every checkpoint loader gives for :func:`write_malicious_checkpoint`'s file: it
    names the file and the refused global, and never suggests the unsafe ``weights_only=False``."""
    return f"ckpt_path: {path} is not a checkpoint written by train.py (it holds a Python object (io.open)"
