"""The faiss inner-product index that evaluation and mining search embeddings with.

:func:`build_index` / :class:`VectorIndex`: an index over a ``[N, D]`` array (a memory map of
:func:`~hybrid_ir.retrieval.encode.encode_corpus` or a tensor): exact (``IndexFlatIP``), IVF or HNSW
(:class:`IndexConfig`), on GPU when faiss has GPU support, else CPU; :meth:`VectorIndex.search_chunks` searches in
query chunks. Settings: ``docs/negatives.md`` (``mine.index``).
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any, Literal

import faiss
import numpy as np
import torch
from torch import Tensor

from hybrid_ir.utils.errors import ConfigError
from hybrid_ir.utils.settings import check_int

SearchDevice = Literal["auto", "cpu", "gpu"]
IndexKind = Literal["auto", "flat", "ivf", "hnsw"]


def _as_float32(x: Tensor | np.ndarray) -> np.ndarray:
    array = x.detach().float().cpu().numpy() if isinstance(x, Tensor) else np.asarray(x, dtype=np.float32)
    return np.ascontiguousarray(array, dtype=np.float32)


def faiss_has_gpu() -> bool:
    """Whether this faiss build has GPU support and sees a GPU."""
    return hasattr(faiss, "StandardGpuResources") and faiss.get_num_gpus() > 0


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

    def check(self, key: str) -> None:
        """Raise :class:`ConfigError` naming ``<key>.<field>`` for a setting out of range."""
        if self.kind not in ("auto", "flat", "ivf", "hnsw"):
            raise ConfigError(f"{key}.kind={self.kind!r}: expected one of auto, flat, ivf, hnsw")
        if self.device not in ("auto", "cpu", "gpu"):
            raise ConfigError(f"{key}.device={self.device!r}: expected one of auto, cpu, gpu")
        if self.kind == "hnsw" and self.device == "gpu":
            raise ConfigError(f"{key}.device=gpu: faiss has no GPU HNSW index; use kind=ivf or flat on GPU")
        if self.device == "gpu" and not faiss_has_gpu():
            raise ConfigError(
                f"{key}.device=gpu needs faiss with GPU support (faiss-gpu) and a visible GPU; use auto or cpu"
            )
        for name in ("exact_max", "nprobe", "hnsw_m", "ef_construction", "ef_search", "add_chunk"):
            check_int(getattr(self, name), f"{key}.{name}")
        for name in ("nlist", "train_size"):
            check_int(getattr(self, name), f"{key}.{name}", null=True)

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
