"""Embedding texts (each distinct text once, sharded over DDP ranks), for evaluation and mining; the index that
searches them is :mod:`hybrid_ir.retrieval.index`.

* :func:`encode_texts` / :func:`encode_benchmark`: a benchmark's embeddings as one tensor.
* :func:`encode_corpus`: a large collection, encoded chunk by chunk into a ``[N, D]`` array (a ``.npy``
  memory map when given a path), so memory holds one chunk of embeddings at a time besides the result.

Under ``torch.distributed`` with world size ``W > 1``, :func:`encode_texts` and :func:`encode_corpus` are
collectives: every rank must call them with the same texts; rank ``r`` embeds the ``r``-th contiguous shard of
the distinct texts and ``all_gather`` gives every rank the full matrix.

See docs/architecture.md (one evaluation) and docs/negatives.md (mining).
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Literal, Protocol

import numpy as np
import torch
import torch.distributed as dist
from torch import Tensor

from hybrid_ir.data.corpus import RetrievalBenchmark
from hybrid_ir.models.tokenizer import TextKind
from hybrid_ir.utils.distributed import world_info

log = logging.getLogger(__name__)


class TextEncoder(Protocol):
    """What the evaluation needs of an encoder (:class:`hybrid_ir.models.encoder.Encoder` fits)."""

    @property
    def dim(self) -> int: ...

    def encode(
        self,
        texts: Sequence[str],
        kind: TextKind,
        batch_size: int = ...,
        precision: str = ...,
        progress: bool = ...,
    ) -> Tensor: ...


def shard_bounds(n: int, rank: int, world: int) -> tuple[int, int]:
    """``[start, stop)`` of rank ``rank``'s contiguous shard of ``n`` items: ``floor(rank * n / world)`` to
    ``floor((rank + 1) * n / world)``. Shard sizes differ by at most one and cover ``0..n`` in rank order."""
    return rank * n // world, (rank + 1) * n // world


def encoder_device(encoder: object) -> torch.device:
    """The device of the encoder's parameters (CPU for an encoder without parameters)."""
    parameters = getattr(encoder, "parameters", None)
    first = next(parameters(), None) if callable(parameters) else None
    return torch.device("cpu") if first is None else first.device


def _gather_device(encoder: TextEncoder) -> torch.device:
    """CPU for gloo; for NCCL (which only moves CUDA tensors) the encoder's CUDA device, else the current one."""
    if dist.get_backend() != "nccl":
        return torch.device("cpu")
    device = encoder_device(encoder)
    return device if device.type == "cuda" else torch.device("cuda", torch.cuda.current_device())


def encode_texts(
    encoder: TextEncoder, texts: Sequence[str], kind: TextKind, batch_size: int, precision: str = "32"
) -> Tensor:
    """Embed ``texts`` -> ``[N, D]`` float32 on CPU (row ``i`` for ``texts[i]``), each distinct text once:
    :func:`encode_corpus` in one chunk, in memory. Collective under DDP (see the module docstring)."""
    return torch.from_numpy(
        encode_corpus(encoder, texts, kind, batch_size, precision, chunk_size=max(1, len(texts)))
    )


def encode_benchmark(
    encoder: TextEncoder, bench: RetrievalBenchmark, batch_size: int, precision: str = "32"
) -> tuple[Tensor, Tensor]:
    """Embed a benchmark: ``(q_emb [Nq, D], c_emb [Nc, D])`` row-aligned with ``bench.queries`` and
    ``bench.candidates``; each distinct query text and each distinct candidate text is embedded once
    (many candidates repeat). Collective under DDP."""
    q_emb = encode_texts(encoder, [q.text for q in bench.queries], "query", batch_size, precision)
    c_emb = encode_texts(encoder, [c.text for c in bench.candidates], "passage", batch_size, precision)
    return q_emb, c_emb


def _unique_with_inverse(texts: Sequence[str]) -> tuple[list[str], np.ndarray | None]:
    """The distinct texts in order of first occurrence, and ``inverse`` (``texts[i] == unique[inverse[i]]``);
    ``None`` for ``inverse`` when all texts are distinct."""
    row: dict[str, int] = {}
    inverse = np.fromiter((row.setdefault(t, len(row)) for t in texts), dtype=np.int64, count=len(texts))
    return list(row), None if len(row) == len(texts) else inverse


def _new_array(path: Path | None, rows: int, dim: int, dtype: np.dtype) -> np.ndarray:
    if path is None:
        return np.empty((rows, dim), dtype=dtype)
    path.parent.mkdir(parents=True, exist_ok=True)
    return np.lib.format.open_memmap(path, mode="w+", dtype=dtype, shape=(rows, dim))


def encode_corpus(
    encoder: TextEncoder,
    texts: Sequence[str],
    kind: TextKind,
    batch_size: int,
    precision: str = "32",
    chunk_size: int = 65536,
    path: str | Path | None = None,
    dtype: Literal["float32", "float16"] = "float32",
    desc: str | None = None,
) -> np.ndarray:
    """Embed ``texts`` -> ``[N, D]`` (row ``i`` for ``texts[i]``), each distinct text once, ``chunk_size``
    distinct texts at a time.

    Distinct texts are taken in order of first occurrence. With ``path`` the result is a ``.npy`` memory map
    written chunk by chunk (when texts repeat, the distinct rows go to ``<stem>.distinct.npy`` first), else an
    in-memory array. Collective under DDP: rank ``r`` encodes the ``r``-th contiguous shard of the distinct
    texts (:func:`shard_bounds`), ``chunk_size`` texts per round, and every rank receives all rows (with
    ``path``, rank ``r > 0`` writes ``<stem>.rank<r>.npy``). Rank 0 shows a progress bar.
    """
    if chunk_size < 1:
        raise ValueError(f"chunk_size must be >= 1, got {chunk_size}")
    unique, inverse = _unique_with_inverse(texts)
    rank, world = world_info()
    path = None if path is None else Path(path)
    if path is not None and world > 1 and rank > 0:
        path = path.with_name(f"{path.stem}.rank{rank}.npy")
    np_dtype = np.dtype(dtype)
    out = _new_array(
        path if inverse is None else _suffixed(path, ".distinct"), len(unique), encoder.dim, np_dtype
    )
    bounds = [shard_bounds(len(unique), r, world) for r in range(world)]
    widest = max(stop - start for start, stop in bounds)
    rounds = -(-widest // chunk_size)
    bar = None
    if rank == 0 and rounds > 1:
        from tqdm.auto import tqdm

        bar = tqdm(total=len(unique), desc=desc or f"encode {kind}s", unit="text")
    start, stop = bounds[rank]
    for i in range(rounds):
        lo, hi = min(start + i * chunk_size, stop), min(start + (i + 1) * chunk_size, stop)
        if hi > lo:
            local = encoder.encode(
                unique[lo:hi], kind, batch_size=batch_size, precision=precision, progress=rank == 0
            ).float()
        else:
            local = torch.zeros((0, encoder.dim), dtype=torch.float32)
        if world == 1:
            out[lo:hi] = local.numpy()
            done = hi - lo
        else:
            done = 0
            parts = _all_gather_chunk(local, min(chunk_size, widest), world, _gather_device(encoder))
            for part, (r_start, r_stop) in zip(parts, bounds, strict=True):
                a, b = min(r_start + i * chunk_size, r_stop), min(r_start + (i + 1) * chunk_size, r_stop)
                out[a:b] = part[: b - a].numpy()
                done += b - a
        if bar is not None:
            bar.update(done)
    if bar is not None:
        bar.close()
    if inverse is None:
        return _flush(out)
    rows = _new_array(path, len(texts), encoder.dim, np_dtype)
    for lo in range(0, len(texts), chunk_size):
        rows[lo : lo + chunk_size] = out[inverse[lo : lo + chunk_size]]
    return _flush(rows)


def _suffixed(path: Path | None, suffix: str) -> Path | None:
    return None if path is None else path.with_name(f"{path.stem}{suffix}.npy")


def _flush(array: np.ndarray) -> np.ndarray:
    if isinstance(array, np.memmap):
        array.flush()
    return array


def _all_gather_chunk(local: Tensor, width: int, world: int, device: torch.device) -> list[Tensor]:
    """Every rank's ``local`` (``<= width`` rows), zero-padded to ``width`` rows, gathered -> CPU tensors."""
    padded = torch.zeros((width, local.shape[1]), dtype=local.dtype, device=device)
    padded[: local.shape[0]] = local.to(device)
    parts = [torch.empty_like(padded) for _ in range(world)]
    dist.all_gather(parts, padded)
    return [part.cpu() for part in parts]
