"""Contrastive InfoNCE loss with in-batch negatives, hard negatives and an optional learnable temperature.
See docs/method.md (the loss) and docs/usage.md (training)."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from hybrid_ir.utils.errors import ConfigError


class InfoNCELoss(nn.Module):
    r"""InfoNCE (multiple-negatives ranking) loss over L2-normalised embeddings, with in-batch and hard negatives.

    Inputs:

    * ``q`` ``[Bq, D]``: this process's queries.
    * ``p`` ``[Bp, D]``: every passage of the global batch, **positives first**: the ``N`` positives of all
      queries of the global batch in query order (the positive of global query ``j`` is ``p[j]``), then the
      hard negatives of every query (their order does not matter), so ``Bp = N + N·k >= Bq``. Under DDP,
      gather each rank's ``[positives; negatives]`` and reorder with :func:`positives_first`; a plain
      rank-major gather would interleave ``[pos₀; neg₀; pos₁; neg₁]`` and put positives at wrong rows.
    * ``q_offset``: global index of ``q[0]``; the positive of local query ``i`` is ``p[q_offset + i]``.
    * ``q_global`` ``[N, D]``: all queries of the global batch (symmetric variant only; ``q`` when omitted).

    With ``s_ij = q_i · p_j`` (cosine, as the inputs are normalised), ``τ`` the temperature and
    ``o = q_offset``, every query is classified over all ``Bp`` passages, its positive being the label:

    .. math::
        L_{q→p} = \frac{1}{B_q} \sum_{i} -\log
            \frac{\exp(s_{i, o+i} / τ)}{\sum_{j=0}^{B_p-1} \exp(s_{ij} / τ)}.

    Symmetric variant (``symmetric=True``) adds the passage→query direction, in which only the positives
    are anchors (a hard negative has no query of its own to be classified to). With ``Q = q_global``, the
    positive ``p_{o+i}`` of each local query ``i`` is classified against all ``N`` queries:

    .. math::
        L_{p→q} = \frac{1}{B_q} \sum_{i} -\log
            \frac{\exp(Q_{o+i} · p_{o+i} / τ)}{\sum_{m=0}^{N-1} \exp(Q_m · p_{o+i} / τ)},
        \qquad L = \tfrac12 (L_{q→p} + L_{p→q}).

    Under data parallelism each rank passes its local ``q``, the gathered, reordered ``p`` (and the gathered
    queries as ``q_global`` for the symmetric variant) and ``q_offset = rank · Bq``; the mean of the ranks'
    losses is then the loss of the global batch (see :func:`hybrid_ir.utils.distributed.gather_with_grad`).

    Example: 2 ranks with 2 queries each and k = 1 hard negative per query. Rank 0 holds queries q0 q1, their
    positives d0 d1 and negatives n0 n1; rank 1 holds q2 q3, d2 d3, n2 n3. Both ranks build
    ``p = [d0 d1 d2 d3 n0 n1 n2 n3]``; rank 1 calls ``loss(q=[q2, q3], p, q_offset=2)``: the label of q2 is 2
    (d2), and q2 is contrasted with d0 d1 d3 (in-batch negatives) and n0 … n3 (hard negatives). In the
    symmetric variant d2 is classified among q0 … q3 (label 2); n0 … n3 are never anchors. In one process::

        loss = InfoNCELoss(temperature=0.05)
        q = F.normalize(torch.randn(2, 8), dim=1)  # 2 queries
        d = F.normalize(torch.randn(2, 8), dim=1)  # their positives
        n = F.normalize(torch.randn(2, 8), dim=1)  # one hard negative per query
        value = loss(q, torch.cat([d, n]))         # label of q[i] is i

    Precision: the similarities, the temperature scaling and the softmax/cross-entropy run in float32 (float64
    inputs stay float64) with autocast disabled, whatever the dtype of the embeddings: under bf16 autocast a
    logit near ``1/τ = 20`` would otherwise be rounded to a multiple of 0.125.

    Temperature: fixed, or learnable like CLIP, which learns ``log(1/τ)`` and keeps ``τ`` inside
    ``[min_temperature, max_temperature]`` by clamping (no gradient flows while clamped).
    """

    def __init__(
        self,
        temperature: float = 0.05,
        learnable_temperature: bool = False,
        symmetric: bool = False,
        min_temperature: float = 0.01,
        max_temperature: float = 1.0,
    ) -> None:
        super().__init__()
        if not temperature > 0:
            raise ConfigError(f"temperature must be > 0, got {temperature}")
        if learnable_temperature and not 0 < min_temperature <= temperature <= max_temperature:
            raise ConfigError(
                f"a learnable temperature needs 0 < min_temperature <= temperature <= max_temperature, got "
                f"{min_temperature} <= {temperature} <= {max_temperature}"
            )
        self.symmetric = symmetric
        self.learnable_temperature = learnable_temperature
        self._fixed_temperature = float(temperature)
        self._min_log_scale = math.log(1.0 / max_temperature)
        self._max_log_scale = math.log(1.0 / min_temperature)
        self.log_scale: nn.Parameter | None = (
            nn.Parameter(torch.tensor(math.log(1.0 / temperature))) if learnable_temperature else None
        )

    def logit_scale(self) -> Tensor | float:
        """``1/τ``: a 0-dim tensor carrying the gradient when learnable, else a Python float."""
        if self.log_scale is None:
            return 1.0 / self._fixed_temperature
        return self.log_scale.clamp(self._min_log_scale, self._max_log_scale).exp()

    @property
    def temperature(self) -> float:
        """Current temperature ``τ`` (after clamping), as a float for logging."""
        scale = self.logit_scale()
        return 1.0 / float(scale.detach()) if isinstance(scale, Tensor) else 1.0 / scale

    def forward(self, q: Tensor, p: Tensor, q_offset: int = 0, q_global: Tensor | None = None) -> Tensor:
        """Mean loss of the queries in ``q`` (0-dim tensor); shapes and formula in the class docstring."""
        _check_inputs(q, p, q_offset)
        with torch.autocast(q.device.type, enabled=False):
            q, p = _at_least_fp32(q), _at_least_fp32(p)
            scale = self.logit_scale()
            targets = torch.arange(q.shape[0], device=q.device) + q_offset
            loss = F.cross_entropy(scale * (q @ p.T), targets)
            if not self.symmetric:
                return loss
            queries = q if q_global is None else _at_least_fp32(q_global)
            if queries.ndim != 2 or queries.shape[1] != q.shape[1]:
                raise ValueError(f"q_global must be [N, {q.shape[1]}], got {tuple(queries.shape)}")
            if not q_offset + q.shape[0] <= queries.shape[0] <= p.shape[0]:
                raise ValueError(
                    f"symmetric loss needs q_offset + Bq <= N <= Bp (N = number of queries in the global "
                    f"batch), got q_offset={q_offset}, Bq={q.shape[0]}, N={queries.shape[0]}, Bp={p.shape[0]}; "
                    "pass the gathered queries as q_global when q_offset > 0"
                )
            positives = p[q_offset : q_offset + q.shape[0]]
            loss_pq = F.cross_entropy(scale * (positives @ queries.T), targets)
            return 0.5 * (loss + loss_pq)


def positives_first(passages: Tensor, world_size: int, positives_per_rank: int) -> Tensor:
    """Reorder passages gathered rank-major into the layout :class:`InfoNCELoss` expects.

    Each of the ``world_size`` ranks contributed ``[positives (positives_per_rank rows); its hard negatives]``,
    so the gather is ``[pos_0; neg_0; pos_1; neg_1; ...]``. Returns ``[pos_0; pos_1; ...; neg_0; neg_1; ...]``:
    one block of all positives (rank-major, so the positive of rank ``r``'s query ``i`` is row
    ``r * positives_per_rank + i``), then one block of all negatives. Without negatives the input is returned
    as it is. Raises ``ValueError`` unless the rows split into ``world_size`` equal parts of at least
    ``positives_per_rank`` rows.
    """
    rows = passages.shape[0]
    if world_size < 1 or rows % world_size or rows // world_size < positives_per_rank:
        raise ValueError(
            f"cannot split {rows} gathered passages into {world_size} rank blocks of {positives_per_rank} "
            "positives followed by that rank's hard negatives"
        )
    per_rank = rows // world_size
    if per_rank == positives_per_rank:
        return passages
    blocks = passages.unflatten(0, (world_size, per_rank))
    return torch.cat(
        [blocks[:, :positives_per_rank].flatten(0, 1), blocks[:, positives_per_rank:].flatten(0, 1)]
    )


def _at_least_fp32(x: Tensor) -> Tensor:
    """``x`` in float32, or unchanged when it is already float32 or float64."""
    return x.to(torch.promote_types(x.dtype, torch.float32))


def _check_inputs(q: Tensor, p: Tensor, q_offset: int) -> None:
    """Raise ``ValueError`` unless q is ``[Bq, D]``, p is ``[Bp, D]`` and ``0 <= q_offset <= Bp - Bq``."""
    if q.ndim != 2 or p.ndim != 2 or q.shape[1] != p.shape[1]:
        raise ValueError(f"expected q [Bq, D] and p [Bp, D], got {tuple(q.shape)} and {tuple(p.shape)}")
    if q.shape[0] == 0:
        raise ValueError("q is empty")
    if not 0 <= q_offset <= p.shape[0] - q.shape[0]:
        raise ValueError(
            f"q_offset must be in [0, Bp - Bq] = [0, {p.shape[0] - q.shape[0]}] so that every query's "
            f"positive p[q_offset + i] exists, got {q_offset}"
        )
