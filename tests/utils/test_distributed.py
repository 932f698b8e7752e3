"""gather_with_grad under 2-process gloo DDP gives the single-process loss and gradients of the global batch;
gather_objects gives every rank every rank's value.

The same spawn also runs grad_cache_backward under DDP (one spawn costs ~15 s, mostly DDP's import of
torch._dynamo), so the GradCache DDP case lives here rather than in tests/training/test_gradcache.py.
"""

from __future__ import annotations

import socket
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.parallel import DistributedDataParallel

from hybrid_ir.training.gradcache import grad_cache_backward
from hybrid_ir.training.loss import InfoNCELoss, positives_first
from hybrid_ir.utils.distributed import (
    gather_objects,
    gather_with_grad,
    is_global_zero,
    launch_rank,
    world_info,
)
from tests.helpers.ddp import gloo_group, spawn

WORLD = 2
LOCAL = 4
GLOBAL = WORLD * LOCAL
IN_DIM, EMB_DIM = 6, 5
TAU = 0.1
VARIANTS = {"plain": False, "symmetric": True}
CHUNK = 2


def _encoder() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(IN_DIM, 8), nn.Tanh(), nn.Linear(8, EMB_DIM)).double()


def _features() -> dict[str, torch.Tensor]:
    """Global batch: queries, their positives, one hard negative per query; each [GLOBAL, IN_DIM]."""
    g = torch.Generator().manual_seed(1)
    return {k: torch.randn(GLOBAL, IN_DIM, generator=g, dtype=torch.float64) for k in ("q", "pos", "neg")}


def _embed(model: nn.Module, x: torch.Tensor) -> torch.Tensor:
    return F.normalize(model(x), dim=1)


def _grads(model: nn.Module) -> dict[str, torch.Tensor]:
    return {name: param.grad.clone() for name, param in model.named_parameters()}


def _single_process(symmetric: bool) -> tuple[float, dict[str, torch.Tensor]]:
    model, x = _encoder(), _features()
    p = torch.cat([_embed(model, x["pos"]), _embed(model, x["neg"])])
    loss = InfoNCELoss(temperature=TAU, symmetric=symmetric)(_embed(model, x["q"]), p)
    loss.backward()
    return loss.item(), _grads(model)


def _port_is_taken(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            return True
        return False


def _worker(rank: int, port: int, out_dir: str) -> None:
    # The rendezvous port must be held from before the workers start: a port picked free and released could be
    # taken by another process before rank 0 binds it (a gloo abort seen once).
    held = _port_is_taken(port)
    with gloo_group(rank, port, WORLD):
        model = DistributedDataParallel(_encoder())
        x = {k: v[rank * LOCAL : (rank + 1) * LOCAL] for k, v in _features().items()}
        result: dict[str, object] = {"world_info": world_info(), "port_held": held}
        for name, symmetric in VARIANTS.items():
            model.zero_grad(set_to_none=True)
            q = _embed(model, x["q"])
            p = torch.cat([gather_with_grad(_embed(model, x[k])) for k in ("pos", "neg")])
            q_global = gather_with_grad(q) if symmetric else None
            loss_fn = InfoNCELoss(temperature=TAU, symmetric=symmetric)
            loss = loss_fn(q, p, q_offset=rank * LOCAL, q_global=q_global)
            loss.backward()
            result[name] = (loss.item(), _grads(model.module))
        for name, symmetric in VARIANTS.items():
            model.zero_grad(set_to_none=True)
            loss_fn = InfoNCELoss(temperature=TAU, symmetric=symmetric)
            loss = grad_cache_backward(
                lambda chunk: _embed(model, chunk),
                list(x["q"].split(CHUNK)),
                [*x["pos"].split(CHUNK), *x["neg"].split(CHUNK)],
                lambda q, p, loss_fn=loss_fn: loss_fn(q, positives_first(p, WORLD, LOCAL)),
                no_sync=model.no_sync,
                gather=gather_with_grad,
            )
            result[f"gradcache-{name}"] = (loss.item(), _grads(model.module))
        result["order"] = gather_with_grad(torch.full((2, 3), float(rank)))
        result["objects"] = gather_objects(
            {"rank": rank, "state": torch.full((rank + 1,), rank, dtype=torch.uint8)}
        )
        try:
            gather_with_grad(torch.zeros(3 + rank, 2))
        except ValueError as err:
            result["mismatch"] = str(err)
        torch.save(result, Path(out_dir) / f"rank{rank}.pt")


def _spawn(fn, out_dir: Path) -> list[dict]:
    """Run ``fn(rank, port, out_dir)`` on WORLD processes; return each rank's saved result."""
    spawn(fn, str(out_dir), nprocs=WORLD)
    return [torch.load(out_dir / f"rank{r}.pt", weights_only=False) for r in range(WORLD)]


@pytest.fixture(scope="module")
def ddp_results(tmp_path_factory: pytest.TempPathFactory) -> list[dict]:
    return _spawn(_worker, tmp_path_factory.mktemp("ddp"))


def test_the_rendezvous_port_is_held_while_the_workers_start(ddp_results: list[dict]) -> None:
    assert [res["port_held"] for res in ddp_results] == [True] * WORLD


@pytest.mark.parametrize("variant", list(VARIANTS))
def test_ddp_loss_and_gradients_equal_single_process(ddp_results: list[dict], variant: str) -> None:
    expected_loss, expected_grads = _single_process(VARIANTS[variant])
    losses = [res[variant][0] for res in ddp_results]
    assert sum(losses) / WORLD == pytest.approx(expected_loss, abs=1e-6)
    assert losses[0] != pytest.approx(losses[1], abs=1e-6)
    for res in ddp_results:
        grads = res[variant][1]
        assert grads.keys() == expected_grads.keys()
        for name, grad in grads.items():
            assert torch.allclose(grad, expected_grads[name], atol=1e-6, rtol=0), (variant, name)
            assert grad.abs().max() > 1e-4


@pytest.mark.parametrize("variant", list(VARIANTS))
def test_ddp_grad_cache_equals_single_process(ddp_results: list[dict], variant: str) -> None:
    expected_loss, expected_grads = _single_process(VARIANTS[variant])
    for res in ddp_results:
        loss, grads = res[f"gradcache-{variant}"]
        assert loss == pytest.approx(expected_loss, abs=1e-6)
        for name, grad in grads.items():
            assert torch.allclose(grad, expected_grads[name], atol=1e-6, rtol=0), (variant, name)


def test_world_info_inside_process_group(ddp_results: list[dict]) -> None:
    assert [res["world_info"] for res in ddp_results] == [(0, WORLD), (1, WORLD)]


def test_gather_concatenates_in_rank_order(ddp_results: list[dict]) -> None:
    expected = torch.cat([torch.zeros(2, 3), torch.ones(2, 3)])
    for res in ddp_results:
        assert torch.equal(res["order"], expected)


def test_gather_objects_gives_every_rank_all_values_in_rank_order(ddp_results: list[dict]) -> None:
    for res in ddp_results:
        assert [obj["rank"] for obj in res["objects"]] == list(range(WORLD))
        assert [obj["state"].tolist() for obj in res["objects"]] == [[0], [1, 1]]


def test_gather_rejects_unequal_shapes_on_every_rank(ddp_results: list[dict]) -> None:
    for res in ddp_results:
        assert "same shape" in res["mismatch"] and "(3, 2)" in res["mismatch"] and "(4, 2)" in res["mismatch"]


def test_identity_when_not_distributed() -> None:
    x = torch.randn(3, 2, requires_grad=True)
    assert world_info() == (0, 1)
    assert gather_with_grad(x) is x
    gathered = gather_objects(x)
    assert len(gathered) == 1 and gathered[0] is x


@pytest.mark.parametrize(
    ("env", "devices", "rank"),
    [
        ({}, 4, 0),
        ({"RANK": "5", "NODE_RANK": "1", "LOCAL_RANK": "1"}, 4, 5),  # torchrun
        ({"SLURM_PROCID": "6", "LOCAL_RANK": "2"}, 4, 6),  # SLURM
        ({"NODE_RANK": "1"}, 4, 4),  # Lightning's launcher: the first process of node 1
        ({"NODE_RANK": "1", "LOCAL_RANK": "3"}, 4, 7),  # ... and a process it started there
        ({"NODE_RANK": "1"}, 1, 1),
        ({"LOCAL_RANK": "1"}, 2, 1),  # one node: the second process Lightning started
    ],
)
def test_launch_rank_reads_the_launchers_environment(
    monkeypatch: pytest.MonkeyPatch, env: dict[str, str], devices: int, rank: int
) -> None:
    for name in ("RANK", "SLURM_PROCID", "NODE_RANK", "GROUP_RANK", "LOCAL_RANK"):
        monkeypatch.delenv(name, raising=False)
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    assert launch_rank(devices) == rank
    assert is_global_zero() == (rank == 0)
