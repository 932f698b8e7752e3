"""Process-group helpers: rank/world size, an all-gather of any picklable value (a checkpoint's per-rank random
states) and an all-gather that carries gradients back to the owning rank.

See docs/multinode.md."""

from __future__ import annotations

import os
from typing import Any, TypeVar

import torch
import torch.distributed as dist
from torch import Tensor

T = TypeVar("T")


def world_info() -> tuple[int, int]:
    """``(rank, world_size)`` of the default process group; ``(0, 1)`` when not running distributed."""
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


def launch_rank(devices_per_node: int = 1) -> int:
    """This process's global rank as its launcher's environment gives it, before ``torch.distributed`` is set up:
    ``RANK`` (torchrun), else ``SLURM_PROCID`` (SLURM), else ``NODE_RANK × devices_per_node + LOCAL_RANK``
    (Lightning's own launcher: ``NODE_RANK`` per node, ``LOCAL_RANK`` in the processes it starts); 0 when none is
    set. Lightning's own guess before the Trainer sets up ignores ``NODE_RANK``, so every node started by its
    launcher would take its first process for global rank 0 until then."""
    env = os.environ
    for name in ("RANK", "SLURM_PROCID"):
        if env.get(name, "").strip():
            return int(env[name])
    node = int(env.get("NODE_RANK", "").strip() or env.get("GROUP_RANK", "").strip() or 0)
    return node * devices_per_node + int(env.get("LOCAL_RANK", "").strip() or 0)


def is_global_zero() -> bool:
    """Whether this process is global rank 0: by the process group once it exists, before that (a run's checks
    before the Trainer starts) by its launcher's environment (:func:`launch_rank`). What only one process of a run
    should log is logged where this holds."""
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank() == 0
    return launch_rank() == 0


def gather_objects(obj: T) -> list[T]:
    """``obj`` of every rank, in rank order (``torch.distributed.all_gather_object``: pickled, any picklable
    value); ``[obj]`` when not distributed or with world size 1.

    A collective: every rank must call it at the same point, or the ranks that did wait for the others."""
    _, world = world_info()
    if world == 1:
        return [obj]
    gathered: list[Any] = [None] * world
    dist.all_gather_object(gathered, obj)
    return gathered


def gather_with_grad(x: Tensor, check_sizes: bool = True) -> Tensor:
    """Concatenate ``x`` ``[B, ...]`` from every rank in rank order: ``[W * B, ...]``, differentiable.

    Identity when not distributed or with world size 1. The backward all-reduces (sums) the gradient
    of the gathered tensor over all ranks and returns to each rank the rows it owns, so gradients flow
    back to the rank that computed each row. (This is what ``torch.distributed.nn.functional.all_gather``
    does; that function is deprecated from torch 2.13 on and its suggested replacement is private, so a
    small autograd function on the public ``all_gather``/``all_reduce`` is used instead.)

    Every rank must pass the same shape. With ``check_sizes`` the shapes are all-gathered first (one
    extra tiny collective) and a ``ValueError`` naming them is raised on every rank on mismatch;
    without it a mismatch fails inside the collective or hangs.

    Semantics under DDP: rank ``r`` holds local queries ``q_r`` and computes
    ``L_r = loss(q_r, gather_with_grad(p), q_offset=r * B)``, the mean over its local queries against
    the global passages, so ``mean_r L_r`` is the single-process loss ``L`` of the global batch. The
    backward of the gather gives rank ``r`` the gradient ``sum_{r'} dL_{r'}/dp_r`` for its passages,
    so rank ``r``'s parameter gradient is the part of ``d(sum_{r'} L_{r'})/dθ`` that flows through the
    embeddings rank ``r`` computed. DDP then averages over the ``W`` ranks; the parts add up to
    ``(1/W) d(sum_r L_r)/dθ = dL/dθ``: exactly the gradient of the single-process loss over the global
    batch. (The same holds for the gathered queries that the symmetric loss takes as ``q_global``.)
    """
    _, world = world_info()
    if world == 1:
        return x
    if check_sizes:
        _check_equal_shapes(x, world)
    return _AllGatherWithGrad.apply(x)


class _AllGatherWithGrad(torch.autograd.Function):
    """``[B, ...]`` per rank -> ``[W * B, ...]`` in rank order; backward: sum over ranks, keep own rows."""

    @staticmethod
    def forward(ctx: Any, x: Tensor) -> Tensor:
        ctx.rank, world = world_info()
        ctx.rows = x.shape[0]
        x = x.contiguous()
        parts = [torch.empty_like(x) for _ in range(world)]
        dist.all_gather(parts, x)
        return torch.cat(parts, dim=0)

    @staticmethod
    def backward(ctx: Any, grad: Tensor) -> Tensor:
        total = grad.clone(memory_format=torch.contiguous_format)
        dist.all_reduce(total, op=dist.ReduceOp.SUM)
        return total[ctx.rank * ctx.rows : (ctx.rank + 1) * ctx.rows]


def _check_equal_shapes(x: Tensor, world: int) -> None:
    """All-gather ``x.shape`` and raise ``ValueError`` (on every rank) unless all ranks agree."""
    shape = torch.tensor(x.shape, dtype=torch.long, device=x.device)
    shapes = [torch.empty_like(shape) for _ in range(world)]
    dist.all_gather(shapes, shape)
    as_tuples = [tuple(s.tolist()) for s in shapes]
    if len(set(as_tuples)) != 1:
        raise ValueError(f"gather_with_grad needs the same shape on every rank, got (by rank) {as_tuples}")
