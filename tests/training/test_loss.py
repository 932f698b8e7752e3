"""InfoNCELoss against a hand computation with explicit exp/log loops over Python floats; the hard-negative
layout across ranks (positives_first); fp32 logits under bf16 autocast."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from hybrid_ir.training.loss import InfoNCELoss, positives_first
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


# Two queries with one hard negative each (k = 1), 2-D unit vectors, τ = 0.5.
Q = [[1.0, 0.0], [0.0, 1.0]]
POS = [[0.8, 0.6], [0.6, 0.8]]
NEG = [[0.6, -0.8], [0.0, 1.0]]  # q1's negative scores above its positive
# Scores / τ: q0 · [d0 d1 n0 n1] = [0.8 0.6 0.6 0.0] / 0.5; q1 · [d0 d1 n0 n1] = [0.6 0.8 -0.8 1.0] / 0.5.
L_Q0 = -math.log(math.exp(1.6) / (math.exp(1.6) + math.exp(1.2) + math.exp(1.2) + math.exp(0.0)))
L_Q1 = -math.log(math.exp(1.6) / (math.exp(1.2) + math.exp(1.6) + math.exp(-1.6) + math.exp(2.0)))
# Passage -> query, positives only: d0 · [q0 q1] = [0.8 0.6], d1 · [q0 q1] = [0.6 0.8].
L_D = -math.log(math.exp(1.6) / (math.exp(1.6) + math.exp(1.2)))


def _t(rows: list[list[float]]) -> torch.Tensor:
    return torch.tensor(rows, dtype=torch.float64)


def test_hard_negative_k1_by_hand() -> None:
    q, p = _t(Q), _t(POS + NEG)
    assert InfoNCELoss(temperature=0.5)(q, p).item() == pytest.approx((L_Q0 + L_Q1) / 2, rel=1e-12)
    symmetric = InfoNCELoss(temperature=0.5, symmetric=True)(q, p).item()
    assert symmetric == pytest.approx(0.5 * ((L_Q0 + L_Q1) / 2 + L_D), rel=1e-12)


def test_hard_negative_k1_on_two_ranks_by_hand() -> None:
    """Rank r holds query r, its positive and its negative; the rank-major gather [d0 n0 d1 n1] reordered to
    [d0 d1 n0 n1] gives each rank its query's loss, while the interleaved gather would label n0 as q1's positive."""
    gathered = _t([POS[0], NEG[0], POS[1], NEG[1]])
    p = positives_first(gathered, world_size=2, positives_per_rank=1)
    assert torch.equal(p, _t(POS + NEG))
    loss = InfoNCELoss(temperature=0.5)
    rank1 = loss(_t(Q[1:]), p, q_offset=1).item()
    assert rank1 == pytest.approx(L_Q1, rel=1e-12)
    assert loss(_t(Q[:1]), p, q_offset=0).item() == pytest.approx(L_Q0, rel=1e-12)
    assert loss(_t(Q[1:]), gathered, q_offset=1).item() != pytest.approx(rank1, rel=1e-6)


def test_positives_first_keeps_blocks_for_k2() -> None:
    """2 ranks, 2 queries each, 2 negatives per query (query-major): row ids make the order visible."""
    rank0 = ["d0", "d1", "n0a", "n0b", "n1a", "n1b"]
    rank1 = ["d2", "d3", "n2a", "n2b", "n3a", "n3b"]
    names = rank0 + rank1
    gathered = torch.arange(len(names), dtype=torch.float64).unsqueeze(1).expand(-1, 3)
    out = positives_first(gathered, world_size=2, positives_per_rank=2)
    assert [names[int(i)] for i in out[:, 0]] == [
        "d0", "d1", "d2", "d3", "n0a", "n0b", "n1a", "n1b", "n2a", "n2b", "n3a", "n3b"
    ]  # fmt: skip
    assert torch.equal(out, out[:, :1].expand(-1, 3))


def test_positives_first_without_negatives_is_the_input() -> None:
    gathered = torch.randn(4, 3)
    assert positives_first(gathered, world_size=2, positives_per_rank=2) is gathered


@pytest.mark.parametrize(("rows", "world", "positives"), [(5, 2, 2), (4, 2, 3), (4, 0, 1)])
def test_positives_first_rejects_uneven_blocks(rows: int, world: int, positives: int) -> None:
    with pytest.raises(ValueError, match="rank blocks"):
        positives_first(torch.zeros(rows, 2), world_size=world, positives_per_rank=positives)


def _near_duplicates(seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """8 float32 queries [8, 64], then their positives (cosine ~0.95) and one close negative each [16, 64]:
    logits near 1/τ = 20, where the bf16 spacing is 0.125."""
    g = torch.Generator().manual_seed(seed)
    q = F.normalize(torch.randn(8, 64, generator=g), dim=1)
    pos = F.normalize(q + 0.04 * torch.randn(8, 64, generator=g), dim=1)
    neg = F.normalize(q + 0.06 * torch.randn(8, 64, generator=g), dim=1)
    return q, torch.cat([pos, neg])


@pytest.mark.parametrize("symmetric", [False, True])
def test_bf16_autocast_keeps_fp32_logits(symmetric: bool) -> None:
    q, p = _near_duplicates(seed=1)
    loss = InfoNCELoss(temperature=0.05, symmetric=symmetric)
    fp32 = loss(q, p).item()
    with torch.autocast("cpu", dtype=torch.bfloat16):
        mixed = loss(q, p)
    assert mixed.dtype == torch.float32
    assert mixed.item() == pytest.approx(fp32, abs=1e-3)


def test_direct_bf16_logits_miss_fp32_by_more_than_the_tolerance() -> None:
    """What the loss computed before: the matmul under autocast yields bf16 logits on a 0.125 grid near 20 and a
    loss more than 1e-3 away from fp32 (so the test above can fail)."""
    q, p = _near_duplicates(seed=1)
    targets = torch.arange(q.shape[0])
    fp32 = F.cross_entropy(20.0 * (q @ p.T), targets).item()
    with torch.autocast("cpu", dtype=torch.bfloat16):
        logits = 20.0 * (q @ p.T)
        direct = F.cross_entropy(logits, targets).item()
    assert logits.dtype == torch.bfloat16
    high = logits.float()[logits.float() >= 16]
    assert high.numel() >= q.shape[0]
    assert torch.equal(high * 8, (high * 8).round())
    assert abs(direct - fp32) > 1e-3


def test_bf16_embeddings_are_scored_in_fp32() -> None:
    """Embeddings handed over in bf16 give exactly the loss of the same values in fp32, gradients included."""
    q, p = (x.bfloat16() for x in _near_duplicates(seed=2))
    loss = InfoNCELoss(temperature=0.05, symmetric=True)
    q16, p16 = q.clone().requires_grad_(), p.clone().requires_grad_()
    q32, p32 = q.float().requires_grad_(), p.float().requires_grad_()
    got, expected = loss(q16, p16), loss(q32, p32)
    assert got.dtype == torch.float32
    assert got.item() == expected.item()
    got.backward()
    expected.backward()
    assert q16.grad is not None and q16.grad.dtype == torch.bfloat16
    assert q32.grad is not None and torch.equal(q16.grad, q32.grad.bfloat16())
