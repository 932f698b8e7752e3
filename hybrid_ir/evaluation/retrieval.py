"""Embedding texts (each distinct text once, sharded over DDP ranks) and faiss search, for evaluation and mining.

* :func:`encode_texts` / :func:`encode_benchmark`: a benchmark's embeddings as one tensor.
* :func:`encode_corpus`: a large collection, encoded chunk by chunk into a ``[N, D]`` array (a ``.npy``
  memory map when given a path), so memory holds one chunk of embeddings at a time besides the result.
* :func:`build_index` / :class:`VectorIndex`: a faiss inner-product index over such an array: exact
  (``IndexFlatIP``), IVF or HNSW (:class:`IndexConfig`), on GPU when faiss has GPU support, else CPU;
  :meth:`VectorIndex.search_chunks` searches in query chunks. :func:`faiss_search` is the exact one-shot form.

Under ``torch.distributed`` with world size ``W > 1``, :func:`encode_texts` and :func:`encode_corpus` are
collectives: every rank must call them with the same texts; rank ``r`` embeds the ``r``-th contiguous shard of
the distinct texts and ``all_gather`` gives every rank the full matrix.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, Protocol

import faiss
import numpy as np
import torch
import torch.distributed as dist
from torch import Tensor

from hybrid_ir.data.collate import TextKind
from hybrid_ir.data.corpus import RetrievalBenchmark
from hybrid_ir.utils.distributed import world_info
from hybrid_ir.utils.errors import ConfigError

log = logging.getLogger(__name__)

SearchDevice = Literal["auto", "cpu", "gpu"]
IndexKind = Literal["auto", "flat", "ivf", "hnsw"]


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


def faiss_has_gpu() -> bool:
    """Whether this faiss build has GPU support and sees a GPU."""
    return hasattr(faiss, "StandardGpuResources") and faiss.get_num_gpus() > 0


def _as_float32(x: Tensor | np.ndarray) -> np.ndarray:
    array = x.detach().float().cpu().numpy() if isinstance(x, Tensor) else np.asarray(x, dtype=np.float32)
    return np.ascontiguousarray(array, dtype=np.float32)


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


@dataclass(frozen=True)
class IndexConfig:
    """How :func:`build_index` indexes a collection (inner product throughout).

    Attributes:
        kind: ``flat`` (exact ``IndexFlatIP``), ``ivf`` (``IndexIVFFlat``: ``nlist`` k-means cells, ``nprobe``
            searched), ``hnsw`` (``IndexHNSWFlat``, CPU only), or ``auto``: ``flat`` up to ``exact_max``
            vectors, ``ivf`` above.
        exact_max: the largest collection ``auto`` searches exactly.
        nlist: IVF cells; ``None``: ``4 * sqrt(N)`` (at most ``N // 39``, the fewest k-means training points
            per cell faiss accepts without a warning, and at least 1).
        nprobe: IVF cells searched per query.
        train_size: vectors (an evenly spaced sample) the IVF k-means trains on; ``None``: ``64 * nlist``.
        hnsw_m: HNSW neighbours per node.
        ef_construction: HNSW build-time beam width.
        ef_search: HNSW search-time beam width (raised to ``k`` when smaller).
        device: ``gpu`` (error without faiss GPU support), ``cpu``, or ``auto`` (GPU when
            :func:`faiss_has_gpu`; HNSW stays on CPU).
        add_chunk: vectors added to the index per call (the collection may be a memory map).
    """

    kind: IndexKind = "auto"
    exact_max: int = 500_000
    nlist: int | None = None
    nprobe: int = 32
    train_size: int | None = None
    hnsw_m: int = 32
    ef_construction: int = 200
    ef_search: int = 128
    device: SearchDevice = "auto"
    add_chunk: int = 65536

    def check(self, prefix: str) -> None:
        """Raise :class:`ConfigError` naming ``<prefix>.<key>`` for a setting out of range."""
        if self.kind not in ("auto", "flat", "ivf", "hnsw"):
            raise ConfigError(f"{prefix}.kind={self.kind!r}: expected one of auto, flat, ivf, hnsw")
        if self.device not in ("auto", "cpu", "gpu"):
            raise ConfigError(f"{prefix}.device={self.device!r}: expected one of auto, cpu, gpu")
        if self.kind == "hnsw" and self.device == "gpu":
            raise ConfigError(
                f"{prefix}.device=gpu: faiss has no GPU HNSW index; use kind=ivf or flat on GPU"
            )
        if self.device == "gpu" and not faiss_has_gpu():
            raise ConfigError(
                f"{prefix}.device=gpu needs faiss with GPU support (faiss-gpu) and a visible GPU; use auto or cpu"
            )
        for key in ("exact_max", "nprobe", "hnsw_m", "ef_construction", "ef_search", "add_chunk"):
            value = getattr(self, key)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ConfigError(f"{prefix}.{key}={value!r}: expected an integer >= 1")
        for key in ("nlist", "train_size"):
            value = getattr(self, key)
            if value is not None and (isinstance(value, bool) or not isinstance(value, int) or value < 1):
                raise ConfigError(f"{prefix}.{key}={value!r}: expected an integer >= 1 or null")

    def resolved_kind(self, n: int) -> Literal["flat", "ivf", "hnsw"]:
        """The index type used for ``n`` vectors."""
        if self.kind == "auto":
            return "flat" if n <= self.exact_max else "ivf"
        return self.kind


@dataclass
class VectorIndex:
    """A faiss inner-product index over ``n`` vectors (row numbers are the ids), from :func:`build_index`."""

    index: Any
    kind: str
    device: str
    n: int
    ef_search: int = 0
    keepalive: Any = None  # faiss objects (CPU index, quantizer, GPU resources) the index needs alive

    def search_chunks(
        self, queries: Tensor | np.ndarray, k: int, chunk_size: int = 4096
    ) -> Iterator[tuple[int, np.ndarray, np.ndarray]]:
        """Search ``chunk_size`` queries at a time: yields ``(start, scores [c, k'] float32, ids [c, k'] int64)``
        best first, ``k' = min(k, n)``; an id of ``-1`` marks a missing result (possible with IVF / HNSW)."""
        if k < 1:
            raise ValueError(f"k must be >= 1, got {k}")
        k = min(k, self.n)
        if self.kind == "hnsw":
            self.index.hnsw.efSearch = max(self.ef_search, k)
        for start in range(0, len(queries), chunk_size):
            q = _as_float32(queries[start : start + chunk_size])
            if k == 0:
                yield start, np.zeros((len(q), 0), np.float32), np.zeros((len(q), 0), np.int64)
                continue
            scores, ids = self.index.search(q, k)
            yield start, scores, ids.astype(np.int64)


def _ivf_cells(n: int, cfg: IndexConfig) -> int:
    return cfg.nlist if cfg.nlist is not None else max(1, min(int(4 * n**0.5), n // 39))


def build_index(vectors: Tensor | np.ndarray, cfg: IndexConfig = IndexConfig()) -> VectorIndex:
    """A :class:`VectorIndex` over the rows of ``vectors`` ``[N, D]`` (a tensor, array or memory map), added
    ``cfg.add_chunk`` rows at a time. GPU indexes live on torch's current CUDA device (each DDP rank its own)."""
    if vectors.ndim != 2:
        raise ValueError(f"vectors must be [N, D], got shape {tuple(vectors.shape)}")
    n, dim = int(vectors.shape[0]), int(vectors.shape[1])
    kind = cfg.resolved_kind(n)
    if cfg.device == "gpu" and not faiss_has_gpu():
        raise RuntimeError("device='gpu' needs faiss with GPU support and a visible GPU")
    use_gpu = kind != "hnsw" and (cfg.device == "gpu" or (cfg.device == "auto" and faiss_has_gpu()))
    keep: list[Any] = []  # faiss objects a wrapped index refers to without owning them
    if kind == "flat":
        index = faiss.IndexFlatIP(dim)
    elif kind == "ivf":
        keep.append(faiss.IndexFlatIP(dim))
        index = faiss.IndexIVFFlat(keep[-1], dim, _ivf_cells(n, cfg), faiss.METRIC_INNER_PRODUCT)
        index.nprobe = cfg.nprobe
    else:
        index = faiss.IndexHNSWFlat(dim, cfg.hnsw_m, faiss.METRIC_INNER_PRODUCT)
        index.hnsw.efConstruction = cfg.ef_construction
    if use_gpu:
        keep += [index, faiss.StandardGpuResources()]
        gpu = torch.cuda.current_device() if torch.cuda.is_available() else 0
        index = faiss.index_cpu_to_gpu(keep[-1], gpu, index)
        if kind == "ivf":
            faiss.GpuParameterSpace().set_index_parameter(index, "nprobe", cfg.nprobe)
    if kind == "ivf" and n:
        sample = cfg.train_size or 64 * _ivf_cells(n, cfg)
        rows = np.unique(np.linspace(0, n - 1, num=min(n, sample)).astype(np.int64))
        index.train(_as_float32(vectors[rows]))
    for start in range(0, n, cfg.add_chunk):
        index.add(_as_float32(vectors[start : start + cfg.add_chunk]))
    return VectorIndex(index, kind, "gpu" if use_gpu else "cpu", n, cfg.ef_search, keep)


def faiss_search(
    queries: Tensor | np.ndarray, docs: Tensor | np.ndarray, k: int, device: SearchDevice = "auto"
) -> tuple[Tensor, Tensor]:
    """Exact maximum-inner-product search (:func:`build_index` with ``kind="flat"``).

    Args:
        queries: ``[Nq, D]``.
        docs: ``[Nd, D]``.
        k: results per query; clipped to ``Nd``.
        device: ``gpu`` (a faiss GPU index on torch's current CUDA device, so each DDP rank uses its own;
            error without GPU support), ``cpu``, or ``auto`` (GPU when :func:`faiss_has_gpu`, else CPU).

    Returns:
        ``(scores [Nq, k'] float32, indices [Nq, k'] int64)`` on CPU, best first, ``k' = min(k, Nd)``.
    """
    if queries.ndim != 2 or docs.ndim != 2 or queries.shape[1] != docs.shape[1]:
        raise ValueError(
            f"queries and docs must be [Nq, D] and [Nd, D] with the same D, got {tuple(queries.shape)}, "
            f"{tuple(docs.shape)}"
        )
    if k < 1:
        raise ValueError(f"k must be >= 1, got {k}")
    if device not in ("auto", "cpu", "gpu"):
        raise ValueError(f"device must be 'auto', 'cpu' or 'gpu', got {device!r}")
    if device == "gpu" and not faiss_has_gpu():
        raise RuntimeError("faiss_search(device='gpu') needs faiss with GPU support and a visible GPU")
    index = build_index(docs, IndexConfig(kind="flat", device=device))
    k = min(k, int(docs.shape[0]))
    if k == 0 or len(queries) == 0:
        return torch.zeros((len(queries), k)), torch.zeros((len(queries), k), dtype=torch.long)
    scores, ids = zip(
        *((s, i) for _, s, i in index.search_chunks(queries, k, chunk_size=len(queries))), strict=True
    )
    return torch.from_numpy(np.concatenate(scores)), torch.from_numpy(np.concatenate(ids))
