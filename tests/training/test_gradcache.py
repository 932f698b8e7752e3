"""grad_cache_backward equals one plain pass over the same chunks, dropout included (RNG replay).

The 2-process DDP case runs in tests/utils/test_distributed.py, sharing that file's process spawn.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from hybrid_ir.training.gradcache import grad_cache_backward, row_chunks
from hybrid_ir.training.loss import InfoNCELoss

BATCH, IN_DIM, EMB_DIM = 6, 7, 5


def _encoder() -> nn.Module:
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(IN_DIM, 16), nn.Dropout(0.1), nn.Tanh(), nn.Linear(16, EMB_DIM)).double()
    return model.train()


def _features() -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(1)
    return {k: torch.randn(BATCH, IN_DIM, generator=g, dtype=torch.float64) for k in ("q", "pos", "neg")}


def _chunks(x: dict[str, torch.Tensor], size: int) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
    return list(x["q"].split(size)), [*x["pos"].split(size), *x["neg"].split(size)]


def _grads(*modules: nn.Module) -> dict[str, torch.Tensor]:
    return {f"{i}.{name}": p.grad.clone() for i, m in enumerate(modules) for name, p in m.named_parameters()}


def _plain(size: int, seed: int, loss_fn: nn.Module) -> tuple[float, dict[str, torch.Tensor]]:
    """Reference: embed the same chunks in the same order with autograd on, one loss, one backward."""
    model = _encoder()
    q_chunks, p_chunks = _chunks(_features(), size)
    torch.manual_seed(seed)
    embed = [F.normalize(model(c), dim=1) for c in [*q_chunks, *p_chunks]]
    loss = loss_fn(torch.cat(embed[: len(q_chunks)]), torch.cat(embed[len(q_chunks) :]))
    loss.backward()
    return loss.item(), _grads(model, loss_fn)


def _cached(size: int, seed: int, loss_fn: nn.Module, **kwargs) -> tuple[float, dict[str, torch.Tensor]]:
    model = _encoder()
    q_chunks, p_chunks = _chunks(_features(), size)
    torch.manual_seed(seed)
    loss = grad_cache_backward(lambda c: F.normalize(model(c), dim=1), q_chunks, p_chunks, loss_fn, **kwargs)
    assert not loss.requires_grad
    return loss.item(), _grads(model, loss_fn)


def _assert_same(
    got: dict[str, torch.Tensor], expected: dict[str, torch.Tensor], atol: float = 1e-10
) -> None:
    assert got.keys() == expected.keys()
    for name, grad in got.items():
        assert torch.allclose(grad, expected[name], atol=atol, rtol=0), name


@pytest.mark.parametrize("size", [1, 3, BATCH])
@pytest.mark.parametrize("symmetric", [False, True])
def test_matches_plain_pass_with_dropout(size: int, symmetric: bool) -> None:
    loss, grads = _cached(size, 123, InfoNCELoss(temperature=0.1, symmetric=symmetric))
    expected_loss, expected_grads = _plain(size, 123, InfoNCELoss(temperature=0.1, symmetric=symmetric))
    assert loss == pytest.approx(expected_loss, rel=1e-10)
    _assert_same(grads, expected_grads)


def test_dropout_masks_matter() -> None:
    """Different masks give different gradients, so the equality above depends on the RNG replay."""
    _, grads = _cached(3, 123, InfoNCELoss(temperature=0.1))
    _, other = _plain(3, 124, InfoNCELoss(temperature=0.1))
    assert not torch.allclose(grads["0.0.weight"], other["0.0.weight"], atol=1e-6)


def test_rng_state_afterwards_is_that_of_one_pass() -> None:
    _cached(3, 7, InfoNCELoss())
    after_cached = torch.get_rng_state()
    _plain(3, 7, InfoNCELoss())
    assert torch.equal(after_cached, torch.get_rng_state())


def test_learnable_temperature_gradient() -> None:
    _, grads = _cached(2, 5, InfoNCELoss(temperature=0.05, learnable_temperature=True))
    _, expected = _plain(2, 5, InfoNCELoss(temperature=0.05, learnable_temperature=True))
    assert grads["1.log_scale"].abs().item() > 0
    _assert_same(grads, expected, atol=1e-8)


def test_backward_callable_is_applied_once_to_the_loss() -> None:
    """A loss-scaling backward (like AMP's via Lightning's manual_backward) scales every gradient once."""
    calls: list[torch.Tensor] = []

    def scaled_backward(loss: torch.Tensor) -> None:
        calls.append(loss.detach())
        (8.0 * loss).backward()

    loss, grads = _cached(3, 9, InfoNCELoss(), backward=scaled_backward)
    _, expected = _plain(3, 9, InfoNCELoss())
    assert len(calls) == 1 and calls[0].item() == pytest.approx(loss)
    _assert_same(grads, {k: 8.0 * v for k, v in expected.items()}, atol=1e-9)


def test_no_sync_wraps_all_but_the_last_chunk() -> None:
    state = {"inside": False, "entered": 0}
    synced_forwards: list[bool] = []

    @contextmanager
    def no_sync() -> Iterator[None]:
        state["inside"] = True
        state["entered"] += 1
        yield
        state["inside"] = False

    model = _encoder()

    def encode(chunk: torch.Tensor) -> torch.Tensor:
        if torch.is_grad_enabled():
            synced_forwards.append(not state["inside"])
        return F.normalize(model(chunk), dim=1)

    q_chunks, p_chunks = _chunks(_features(), 2)
    grad_cache_backward(encode, q_chunks, p_chunks, InfoNCELoss(), no_sync=no_sync)
    n_chunks = len(q_chunks) + len(p_chunks)
    assert state["entered"] == n_chunks - 1
    assert synced_forwards == [False] * (n_chunks - 1) + [True]


def test_rejects_empty_chunk_lists() -> None:
    with pytest.raises(ValueError, match="at least one"):
        grad_cache_backward(lambda c: c, [], [torch.zeros(1, 2)], InfoNCELoss())


def test_row_chunks_split_one_side_in_order() -> None:
    ids = torch.arange(10).view(5, 2)
    batch = {"q_input_ids": ids, "q_attention_mask": ids % 2, "p_input_ids": -ids, "p_attention_mask": ids}
    chunks = row_chunks(batch, "p", 2)
    assert [c[0].shape[0] for c in chunks] == [2, 2, 1]
    assert torch.equal(torch.cat([c[0] for c in chunks]), -ids)
    assert torch.equal(torch.cat([c[1] for c in chunks]), ids)
