"""Contrastive InfoNCE loss with in-batch negatives, hard negatives and an optional learnable temperature."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from hybrid_ir.utils.errors import ConfigError


class InfoNCELoss(nn.Module):
    r"""InfoNCE (multiple-negatives ranking) loss over L2-normalised embeddings.

    Inputs: ``q`` ``[Bq, D]`` (this process's queries) and ``p`` ``[Bp, D]``: the positives of the
    *global* batch in query order, optionally followed by hard negatives, so ``Bp >= Bq``. The
    positive of local query ``i`` is ``p[q_offset + i]``; every other row of ``p`` is a negative for it.
    With ``s_ij = q_i · p_j`` (cosine, as the inputs are normalised) and ``τ`` the temperature:

    .. math::
        L_{q→p} = \frac{1}{B_q} \sum_{i} -\log
            \frac{\exp(s_{i, o+i} / τ)}{\sum_{j=0}^{B_p-1} \exp(s_{ij} / τ)},  \quad o = \text{q\_offset}.

    Symmetric variant (``symmetric=True``): adds the passage→query direction, computed over the
    positives only (hard negatives are not anchors). Let ``Q = q_global`` ``[N, D]`` be all queries of
    the global batch (``q`` itself when not given), so the positives are ``p[:N]``. For each local
    query ``i`` its positive ``p_{o+i}`` is classified against all ``N`` queries:

    .. math::
        L_{p→q} = \frac{1}{B_q} \sum_{i} -\log
            \frac{\exp(Q_{o+i} · p_{o+i} / τ)}{\sum_{k=0}^{N-1} \exp(Q_k · p_{o+i} / τ)},
        \qquad L = \tfrac12 (L_{q→p} + L_{p→q}).

    Under data parallelism each rank passes its local ``q``, the gathered ``p`` (and the gathered
    queries as ``q_global`` for the symmetric variant) and ``q_offset = rank * Bq``; the mean of the
    ranks' losses is then the loss of the global batch
    (see :func:`hybrid_ir.utils.distributed.gather_with_grad`).

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
        scale = self.logit_scale()
        targets = torch.arange(q.shape[0], device=q.device) + q_offset
        loss = F.cross_entropy(scale * (q @ p.T), targets)
        if not self.symmetric:
            return loss
        queries = q if q_global is None else q_global
        if queries.ndim != 2 or queries.shape[1] != q.shape[1]:
            raise ValueError(f"q_global must be [N, {q.shape[1]}], got {tuple(queries.shape)}")
        if not q_offset + q.shape[0] <= queries.shape[0] <= p.shape[0]:
            raise ValueError(
                f"symmetric loss needs q_offset + Bq <= N <= Bp (N = number of queries in the global batch), "
                f"got q_offset={q_offset}, Bq={q.shape[0]}, N={queries.shape[0]}, Bp={p.shape[0]}; "
                "pass the gathered queries as q_global when q_offset > 0"
            )
        positives = p[q_offset : q_offset + q.shape[0]]
        loss_pq = F.cross_entropy(scale * (positives @ queries.T), targets)
        return 0.5 * (loss + loss_pq)


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
