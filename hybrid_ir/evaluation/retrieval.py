"""Embedding benchmarks (each distinct text once, sharded over DDP ranks) and exact faiss search.

Under ``torch.distributed`` with world size ``W > 1``, :func:`encode_texts` is a collective: every rank
must call it with the same texts; rank ``r`` embeds the ``r``-th contiguous shard of the distinct texts
and an ``all_gather`` gives every rank the full matrix.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Literal, Protocol

import faiss
import numpy as np
import torch
import torch.distributed as dist
from torch import Tensor

from hybrid_ir.data.collate import TextKind
from hybrid_ir.data.corpus import RetrievalBenchmark
from hybrid_ir.utils.distributed import world_info

SearchDevice = Literal["auto", "cpu", "gpu"]


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


def _all_gather_rows(local: Tensor, n: int, world: int, device: torch.device) -> Tensor:
    """Concatenate the shards ``[stop_r - start_r, D]`` of all ranks (see :func:`shard_bounds`) -> ``[n, D]``.

    Shards are zero-padded to the largest shard size so that every rank sends the same shape."""
    width = -(-n // world)
    padded = torch.zeros((width, local.shape[1]), dtype=local.dtype, device=device)
    padded[: local.shape[0]] = local.to(device)
    parts = [torch.empty_like(padded) for _ in range(world)]
    dist.all_gather(parts, padded)
    rows = [
        part[: stop - start]
        for part, (start, stop) in zip(parts, (shard_bounds(n, r, world) for r in range(world)), strict=True)
    ]
    return torch.cat(rows).cpu()


def encode_texts(
    encoder: TextEncoder, texts: Sequence[str], kind: TextKind, batch_size: int, precision: str = "32"
) -> Tensor:
    """Embed ``texts`` -> ``[N, D]`` float32 on CPU (row ``i`` for ``texts[i]``), each distinct text once.

    Distinct texts are taken in order of first occurrence. Collective under DDP (see the module docstring).
    """
    unique = list(dict.fromkeys(texts))
    rank, world = world_info()
    start, stop = shard_bounds(len(unique), rank, world)
    shard = unique[start:stop]
    if shard:
        local = encoder.encode(
            shard, kind, batch_size=batch_size, precision=precision, progress=rank == 0
        ).float()
    else:
        local = torch.zeros((0, encoder.dim), dtype=torch.float32)
    emb = _all_gather_rows(local, len(unique), world, _gather_device(encoder)) if world > 1 else local.cpu()
    row = {text: i for i, text in enumerate(unique)}
    return emb[torch.tensor([row[t] for t in texts], dtype=torch.long)]


def encode_benchmark(
    encoder: TextEncoder, bench: RetrievalBenchmark, batch_size: int, precision: str = "32"
) -> tuple[Tensor, Tensor]:
    """Embed a benchmark: ``(q_emb [Nq, D], c_emb [Nc, D])`` row-aligned with ``bench.queries`` and
    ``bench.candidates``; each distinct query text and each distinct candidate text is embedded once
    (many candidates repeat). Collective under DDP."""
    q_emb = encode_texts(encoder, [q.text for q in bench.queries], "query", batch_size, precision)
    c_emb = encode_texts(encoder, [c.text for c in bench.candidates], "passage", batch_size, precision)
    return q_emb, c_emb


def faiss_has_gpu() -> bool:
    """Whether this faiss build has GPU support and sees a GPU."""
    return hasattr(faiss, "StandardGpuResources") and faiss.get_num_gpus() > 0


def _as_float32(x: Tensor | np.ndarray) -> np.ndarray:
    array = x.detach().float().cpu().numpy() if isinstance(x, Tensor) else np.asarray(x, dtype=np.float32)
    return np.ascontiguousarray(array, dtype=np.float32)


def faiss_search(
    queries: Tensor | np.ndarray, docs: Tensor | np.ndarray, k: int, device: SearchDevice = "auto"
) -> tuple[Tensor, Tensor]:
    """Exact maximum-inner-product search with ``faiss.IndexFlatIP``.

    Args:
        queries: ``[Nq, D]``.
        docs: ``[Nd, D]``.
        k: results per query; clipped to ``Nd``.
        device: ``gpu`` (a faiss GPU index on torch's current CUDA device, so each DDP rank uses its own;
            error without GPU support), ``cpu``, or ``auto`` (GPU when :func:`faiss_has_gpu`, else CPU).

    Returns:
        ``(scores [Nq, k'] float32, indices [Nq, k'] int64)`` on CPU, best first, ``k' = min(k, Nd)``.
    """
    q, d = _as_float32(queries), _as_float32(docs)
    if q.ndim != 2 or d.ndim != 2 or q.shape[1] != d.shape[1]:
        raise ValueError(
            f"queries and docs must be [Nq, D] and [Nd, D] with the same D, got {q.shape}, {d.shape}"
        )
    if k < 1:
        raise ValueError(f"k must be >= 1, got {k}")
    if device not in ("auto", "cpu", "gpu"):
        raise ValueError(f"device must be 'auto', 'cpu' or 'gpu', got {device!r}")
    k = min(k, d.shape[0])
    if k == 0:
        return torch.zeros((q.shape[0], 0)), torch.zeros((q.shape[0], 0), dtype=torch.long)
    index = faiss.IndexFlatIP(d.shape[1])
    use_gpu = device == "gpu" or (device == "auto" and faiss_has_gpu())
    if use_gpu:
        if not faiss_has_gpu():
            raise RuntimeError("faiss_search(device='gpu') needs faiss with GPU support and a visible GPU")
        resources = faiss.StandardGpuResources()
        gpu = torch.cuda.current_device() if torch.cuda.is_available() else 0
        index = faiss.index_cpu_to_gpu(resources, gpu, index)
    index.add(d)
    scores, indices = index.search(q, k)
    return torch.from_numpy(scores), torch.from_numpy(indices.astype(np.int64))
