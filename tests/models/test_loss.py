"""InfoNCELoss against a hand computation with explicit exp/log loops over Python floats."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from hybrid_ir.models.loss import InfoNCELoss
from hybrid_ir.utils.errors import ConfigError


def _unit_rows(n: int, d: int, seed: int) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return F.normalize(torch.randn(n, d, generator=g, dtype=torch.float64), dim=1)


def _dot(u: list[float], v: list[float]) -> float:
    return sum(x * y for x, y in zip(u, v, strict=True))


def _nll(anchor: list[float], candidates: list[list[float]], target: int, tau: float) -> float:
    """-log softmax(anchor · candidates / tau)[target], by hand."""
    exps = [math.exp(_dot(anchor, c) / tau) for c in candidates]
    return -math.log(exps[target] / sum(exps))


def _hand_q_to_p(q: list[list[float]], p: list[list[float]], offset: int, tau: float) -> float:
    return sum(_nll(qi, p, offset + i, tau) for i, qi in enumerate(q)) / len(q)


def _hand_p_to_q(
    q: list[list[float]], q_all: list[list[float]], p: list[list[float]], offset: int, tau: float
) -> float:
    return sum(_nll(p[offset + i], q_all, offset + i, tau) for i in range(len(q))) / len(q)


@pytest.fixture
def batch() -> tuple[torch.Tensor, torch.Tensor]:
    """3 queries, 4 passages: the 3 positives then 1 hard negative, D = 5."""
    return _unit_rows(3, 5, seed=1), _unit_rows(4, 5, seed=2)


@pytest.mark.parametrize("tau", [0.05, 0.5, 1.0])
def test_matches_hand_computation(batch: tuple[torch.Tensor, torch.Tensor], tau: float) -> None:
    q, p = batch
    got = InfoNCELoss(temperature=tau)(q, p)
    assert got.ndim == 0
    assert got.item() == pytest.approx(_hand_q_to_p(q.tolist(), p.tolist(), 0, tau), rel=1e-12)


def test_q_offset_selects_the_positive(batch: tuple[torch.Tensor, torch.Tensor]) -> None:
    q, p = batch
    local = q[1:3]
    got = InfoNCELoss(temperature=0.1)(local, p, q_offset=1).item()
    assert got == pytest.approx(_hand_q_to_p(local.tolist(), p.tolist(), 1, 0.1), rel=1e-12)
    assert got != pytest.approx(_hand_q_to_p(local.tolist(), p.tolist(), 0, 0.1), rel=1e-6)


def test_symmetric_adds_passage_to_query_over_positives(batch: tuple[torch.Tensor, torch.Tensor]) -> None:
    q, p = batch
    tau = 0.2
    qs, ps = q.tolist(), p.tolist()
    expected = 0.5 * (_hand_q_to_p(qs, ps, 0, tau) + _hand_p_to_q(qs, qs, ps, 0, tau))
    assert InfoNCELoss(temperature=tau, symmetric=True)(q, p).item() == pytest.approx(expected, rel=1e-12)


def test_symmetric_with_offset_and_global_queries(batch: tuple[torch.Tensor, torch.Tensor]) -> None:
    q, p = batch
    tau = 0.2
    loss = InfoNCELoss(temperature=tau, symmetric=True)
    local = q[2:3]
    qs, ps = q.tolist(), p.tolist()
    expected = 0.5 * (_hand_q_to_p(local.tolist(), ps, 2, tau) + _hand_p_to_q(local.tolist(), qs, ps, 2, tau))
    assert loss(local, p, q_offset=2, q_global=q).item() == pytest.approx(expected, rel=1e-12)
    with pytest.raises(ValueError, match="q_global"):
        loss(local, p, q_offset=2)


def test_mean_of_shards_equals_full_batch_loss(batch: tuple[torch.Tensor, torch.Tensor]) -> None:
    q, p = batch
    loss = InfoNCELoss(temperature=0.1, symmetric=True)
    shards = [loss(q[i : i + 1], p, q_offset=i, q_global=q) for i in range(3)]
    assert torch.stack(shards).mean().item() == pytest.approx(loss(q, p).item(), rel=1e-12)


def test_learnable_temperature_gets_gradient(batch: tuple[torch.Tensor, torch.Tensor]) -> None:
    q, p = batch
    loss = InfoNCELoss(temperature=0.07, learnable_temperature=True)
    assert loss.temperature == pytest.approx(0.07)
    value = loss(q, p)
    assert value.item() == pytest.approx(_hand_q_to_p(q.tolist(), p.tolist(), 0, 0.07), rel=1e-6)
    value.backward()
    assert loss.log_scale is not None and loss.log_scale.grad is not None
    assert loss.log_scale.grad.abs().item() > 0
    assert [name for name, _ in loss.named_parameters()] == ["log_scale"]


def test_fixed_temperature_has_no_parameters() -> None:
    assert list(InfoNCELoss(temperature=0.05).parameters()) == []
    assert InfoNCELoss(temperature=0.05).temperature == pytest.approx(0.05)


def test_learnable_temperature_is_clamped() -> None:
    loss = InfoNCELoss(
        temperature=0.05, learnable_temperature=True, min_temperature=0.02, max_temperature=0.5
    )
    assert loss.log_scale is not None
    with torch.no_grad():
        loss.log_scale.fill_(math.log(1 / 1e-4))
    assert loss.temperature == pytest.approx(0.02)
    with torch.no_grad():
        loss.log_scale.fill_(math.log(1 / 10.0))
    assert loss.temperature == pytest.approx(0.5)


@pytest.mark.parametrize(
    "kwargs",
    [{"temperature": 0.0}, {"temperature": -1.0}, {"temperature": 2.0, "learnable_temperature": True}],
)
def test_rejects_bad_temperature(kwargs: dict) -> None:
    with pytest.raises(ConfigError, match="temperature"):
        InfoNCELoss(**kwargs)


def test_rejects_bad_shapes_and_offsets(batch: tuple[torch.Tensor, torch.Tensor]) -> None:
    q, p = batch
    loss = InfoNCELoss()
    with pytest.raises(ValueError, match="q_offset"):
        loss(q, p, q_offset=2)
    with pytest.raises(ValueError, match="expected q"):
        loss(q[:, :4], p)
