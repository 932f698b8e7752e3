"""GradCache: contrastive training with a large batch in bounded memory.

Gao et al. 2021, "Scaling Deep Contrastive Learning Batch Size under Memory Limited Setup".
The loss couples every query with every passage, so it cannot be split into per-chunk losses, but
its gradient factorises through the embeddings: ``dL/dθ = sum_c J_c(θ)^T g_c`` with ``g_c = dL/de_c``
the gradient w.r.t. chunk ``c``'s embeddings ``e_c`` and ``J_c`` the encoder's Jacobian on that chunk.
So: embed all chunks without a graph, get ``g`` from the loss on the cached embeddings, then
re-embed chunk by chunk with a graph and back-propagate the surrogate ``sum(e_c * g_c)``, whose
gradient is ``J_c^T g_c``. Peak activation memory is that of one chunk.

See docs/method.md (the loss) and docs/usage.md (training).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import AbstractContextManager, contextmanager, nullcontext
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor


@dataclass(frozen=True)
class RngState:
    """The CPU generator's state and, when CUDA is initialised, every CUDA device's generator state."""

    cpu: Tensor
    cuda: tuple[Tensor, ...]

    @classmethod
    def capture(cls) -> RngState:
        """Snapshot the current generator states."""
        cuda = tuple(torch.cuda.get_rng_state_all()) if _cuda_initialised() else ()
        return cls(cpu=torch.get_rng_state(), cuda=cuda)

    def restore(self) -> None:
        """Set the generators back to this snapshot."""
        torch.set_rng_state(self.cpu)
        if self.cuda:
            torch.cuda.set_rng_state_all(list(self.cuda))

    @contextmanager
    def replay(self) -> Iterator[None]:
        """Context in which the generators start from this state; the outer state is restored on exit."""
        with torch.random.fork_rng(devices=list(range(len(self.cuda)))):
            self.restore()
            yield


def _cuda_initialised() -> bool:
    """Whether CUDA generators exist to capture (never initialises CUDA itself)."""
    return torch.cuda.is_available() and torch.cuda.is_initialized()


def grad_cache_backward(
    encode: Callable[[Any], Tensor],
    q_chunks: Sequence[Any],
    p_chunks: Sequence[Any],
    loss_fn: Callable[[Tensor, Tensor], Tensor],
    backward: Callable[[Tensor], None] = Tensor.backward,
    no_sync: Callable[[], AbstractContextManager[Any]] | None = None,
    gather: Callable[[Tensor], Tensor] | None = None,
) -> Tensor:
    """Accumulate into ``.grad`` the gradient of ``loss_fn(cat(q embeddings), cat(p embeddings))``.

    Args:
        encode: maps one chunk of inputs to embeddings ``[b_c, D]`` (queries and passages may share it;
            to use two encoders, make the chunks say which one to use). Under DDP call the DDP-wrapped
            module here, so that each re-forward is a DDP forward.
        q_chunks, p_chunks: query and passage input chunks, in batch order.
        loss_fn: ``(q [Nq, D], p [Np, D]) -> 0-dim loss``, e.g. an :class:`InfoNCELoss` (positives of
            query ``i`` at ``p[i]``). With ``gather`` it receives the gathered global batch.
        backward: applied once, to the loss (pass Lightning's ``manual_backward`` so loss scaling and
            precision hooks apply). It fills the gradients of any parameters of ``loss_fn`` (a learnable
            temperature) and the cached embedding gradients. The chunk surrogates are back-propagated with
            plain ``Tensor.backward``, since their cached gradients already carry any loss scaling.
        no_sync: DDP's ``module.no_sync``; all chunk re-forwards and backwards but the last run inside
            it, so gradients are all-reduced once.
        gather: e.g. :func:`~hybrid_ir.utils.distributed.gather_with_grad`, applied to the local query and
            passage embeddings before ``loss_fn``. The gathered rows are rank-major (rank 0's chunks,
            then rank 1's, ...): when each rank's passages are ``[positives, hard negatives]``,
            ``loss_fn`` must move all positives to the front
            (:func:`~hybrid_ir.training.loss.positives_first`). Every rank computes the same global loss; the
            gather's backward sums ``W`` identical copies of each rank's embedding gradient, and DDP's
            average over the ``W`` ranks cancels that factor, so the encoder gradient equals the
            single-process one. Parameters used only by ``loss_fn`` receive the global gradient on every
            rank without any reduction: keep them outside the DDP-wrapped module (DDP would expect their
            gradient in the last chunk's backward).

    Dropout: the RNG state is captured before each chunk's first forward and replayed for its
    re-forward, so both see the same dropout masks and the result equals one pass that embeds the same
    chunks in the same order with autograd on. The global RNG state afterwards is that after the first
    pass.

    Every rank must use the same number of chunks (each DDP forward may run collectives).

    Returns:
        The loss, detached (0-dim).
    """
    chunks = [*q_chunks, *p_chunks]
    if not q_chunks or not p_chunks:
        raise ValueError("grad_cache_backward needs at least one query chunk and one passage chunk")
    states: list[RngState] = []
    cached: list[Tensor] = []
    with torch.no_grad():
        for chunk in chunks:
            states.append(RngState.capture())
            cached.append(encode(chunk))
    q_leaf = torch.cat(cached[: len(q_chunks)]).requires_grad_()
    p_leaf = torch.cat(cached[len(q_chunks) :]).requires_grad_()
    q_all, p_all = (q_leaf, p_leaf) if gather is None else (gather(q_leaf), gather(p_leaf))
    loss = loss_fn(q_all, p_all)
    backward(loss)
    grads = _split_like(torch.cat([_grad_of(q_leaf), _grad_of(p_leaf)]), cached)
    for k, (chunk, state, grad) in enumerate(zip(chunks, states, grads, strict=True)):
        sync = nullcontext() if no_sync is None or k == len(chunks) - 1 else no_sync()
        with sync, state.replay():
            emb = encode(chunk)
            (emb * grad).sum().backward()
    return loss.detach()


def row_chunks(batch: Mapping[str, Any], side: str, size: int) -> list[tuple[Tensor, Tensor]]:
    """``(input_ids, attention_mask)`` blocks of ``size`` rows (the last may be shorter) of the ``side``
    (``"q"`` or ``"p"``) of a collated batch: the chunks a GradCache step embeds one at a time."""
    ids, mask = batch[f"{side}_input_ids"], batch[f"{side}_attention_mask"]
    return [(ids[i : i + size], mask[i : i + size]) for i in range(0, ids.shape[0], size)]


def _grad_of(leaf: Tensor) -> Tensor:
    """The leaf's gradient; zeros when the loss did not depend on it."""
    return leaf.grad if leaf.grad is not None else torch.zeros_like(leaf)


def _split_like(flat: Tensor, parts: list[Tensor]) -> tuple[Tensor, ...]:
    """Split ``flat`` ``[sum b_c, D]`` into row blocks of the sizes of ``parts``."""
    return torch.split(flat, [part.shape[0] for part in parts])
