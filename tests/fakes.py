"""Model stand-ins for tests that need an encoder's interface but not a trained model."""

from __future__ import annotations

import zlib
from collections.abc import Sequence

import torch
import torch.nn.functional as F


class BagOfWordsEncoder:
    """Deterministic stand-in for :class:`~hybrid_ir.models.encoder.Encoder`: the normalised sum of a fixed
    random vector per word (seeded by a CRC32 of the word), so texts that share words are similar. Implements
    :class:`~hybrid_ir.evaluation.retrieval.TextEncoder` and records every ``encode`` call in ``calls``."""

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
