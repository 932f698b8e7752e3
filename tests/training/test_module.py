"""BiEncoderModule: loss of a step, learning, hard negatives, GradCache equivalence, DDP equivalence, non-finite
guard, optimiser and schedule, the random state a checkpoint keeps (every rank's)."""

from __future__ import annotations

import logging
import math
import os
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import lightning as L
import pytest
import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch.utils.data import DataLoader

from hybrid_ir.models.encoder import Encoder
from hybrid_ir.training.loss import InfoNCELoss
from hybrid_ir.training.module import (
    BiEncoderModule,
    NonFiniteLossError,
    hard_negatives,
    positive_ranks,
    rank_rng_state,
)
from hybrid_ir.training.optim import adamw_with_schedule, linear_warmup_decay, optimizer_param_groups
from hybrid_ir.utils.errors import ConfigError
from tests.helpers.ddp import AGENT_STORE_ENV, gloo_group, spawn

QUESTIONS = [
    "Who wrote the novel War and Peace?",
    "Wann wurde die Berliner Mauer gebaut?",
    "¿Cuál es el río más largo de Europa?",
    "What is the boiling point of water at sea level?",
    "Wie viele Einwohner hat Hamburg?",
    "¿Quién pintó la Mona Lisa?",
]
PASSAGES = [
    "Leo Tolstoy wrote War and Peace, published in 1869.",
    "Die Berliner Mauer wurde im August 1961 errichtet.",
    "El Volga es el río más largo de Europa.",
    "At sea level water boils at 100 degrees Celsius.",
    "Hamburg hat rund 1,9 Millionen Einwohner.",
    "Leonardo da Vinci pintó la Mona Lisa a principios del siglo XVI.",
]
NEGATIVES = [  # two hard negatives per question, in question order
    ["Leo Tolstoy also wrote Anna Karenina.", "War and Peace is set during the Napoleonic wars."],
    ["Die Berliner Mauer fiel im November 1989.", "Berlin ist die Hauptstadt Deutschlands."],
    ["El Danubio es el segundo río más largo de Europa.", "El Amazonas es el río más caudaloso del mundo."],
    ["Water freezes at 0 degrees Celsius.", "On Mount Everest water boils at about 70 degrees."],
    ["München hat rund 1,5 Millionen Einwohner.", "Hamburg liegt an der Elbe."],
    ["Leonardo da Vinci nació en Vinci en 1452.", "La Mona Lisa está en el Museo del Louvre."],
]
TAU = 0.05


def make_batch(encoder: Encoder, k: int = 0) -> dict[str, Any]:
    """The pairs above as a collated batch (``{q,p}_input_ids``/``_attention_mask`` [6, L], ``mono``), with the
    first ``k`` negatives of each question as ``n_input_ids``/``n_attention_mask`` [6k, L] (query-major)."""
    tt = encoder.text_tokenizer
    q_ids, q_mask = tt.pad(tt(QUESTIONS, "query"))
    p_ids, p_mask = tt.pad(tt(PASSAGES, "passage"))
    batch = {
        "q_input_ids": q_ids,
        "q_attention_mask": q_mask,
        "p_input_ids": p_ids,
        "p_attention_mask": p_mask,
        "mono": False,
    }
    if k:
        n_ids, n_mask = tt.pad(tt([text for texts in NEGATIVES for text in texts[:k]], "passage"))
        batch.update(n_input_ids=n_ids, n_attention_mask=n_mask)
    return batch


def reference_step(
    encoder: Encoder, loss: InfoNCELoss, batch: dict[str, Any]
) -> tuple[float, dict[str, torch.Tensor]]:
    """Loss and parameter gradients (named as in the module) of InfoNCE over [positives; negatives] of the whole
    ``batch``, by plain autograd without a Trainer."""
    module = BiEncoderModule(encoder, loss)
    q = encoder(batch["q_input_ids"], batch["q_attention_mask"])
    p = [
        encoder(batch[f"{k}_input_ids"], batch[f"{k}_attention_mask"])
        for k in ("p", "n")
        if f"{k}_input_ids" in batch
    ]
    value = loss(q, torch.cat(p))
    value.backward()
    grads = {n: p.grad.detach().clone() for n, p in module.named_parameters() if p.grad is not None}
    module.zero_grad(set_to_none=True)
    return value.item(), grads


def repeated(batch: dict[str, Any], n: int) -> DataLoader:
    """A loader yielding ``batch`` ``n`` times (``batch_size=None``: no re-collation)."""
    return DataLoader([batch] * n, batch_size=None)


def make_trainer(max_steps: int = -1, max_epochs: int = 1, callbacks: list | None = None) -> L.Trainer:
    return L.Trainer(
        accelerator="cpu",
        devices=1,
        precision="32-true",
        max_steps=max_steps,
        max_epochs=max_epochs,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        use_distributed_sampler=False,
        callbacks=callbacks or [],
    )


class RecordLosses(L.Callback):
    """Keeps the loss returned by every training step."""

    def __init__(self) -> None:
        self.losses: list[float] = []

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        self.losses.append(float(outputs["loss"]))


class RecordGrads(L.Callback):
    """Copies every parameter gradient just before the (first) optimiser step."""

    def __init__(self) -> None:
        self.grads: dict[str, torch.Tensor] | None = None

    def on_before_optimizer_step(self, trainer, pl_module, optimizer) -> None:
        if self.grads is None:
            self.grads = {
                n: p.grad.detach().clone() for n, p in pl_module.named_parameters() if p.grad is not None
            }


def _params(module: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {n: p.detach().clone() for n, p in module.named_parameters()}


@pytest.mark.slow
def test_step_loss_is_infonce_on_the_encoder_outputs(tiny_encoder_factory) -> None:
    encoder = tiny_encoder_factory(dropout=False)
    batch = make_batch(encoder)
    with torch.no_grad():
        q = encoder(batch["q_input_ids"], batch["q_attention_mask"])
        p = encoder(batch["p_input_ids"], batch["p_attention_mask"])
        expected = InfoNCELoss(TAU)(q, p)
        by_hand = -F.log_softmax(q @ p.T / TAU, dim=1).diagonal().mean()
    torch.testing.assert_close(expected, by_hand)

    record = RecordLosses()
    module = BiEncoderModule(encoder, InfoNCELoss(TAU), lr=1e-3)
    make_trainer(max_steps=1, callbacks=[record]).fit(module, repeated(batch, 1))
    assert record.losses == pytest.approx([float(expected)], rel=1e-5)


@pytest.mark.slow
def test_training_on_one_batch_lowers_its_loss(tiny_encoder_factory) -> None:
    encoder = tiny_encoder_factory(dropout=False, freeze_word_embeddings=True)
    batch = make_batch(encoder)
    loss_fn = InfoNCELoss(TAU)

    def batch_loss() -> float:
        with torch.no_grad():
            q = encoder(batch["q_input_ids"], batch["q_attention_mask"])
            p = encoder(batch["p_input_ids"], batch["p_attention_mask"])
            return float(loss_fn(q, p))

    before = batch_loss()
    record = RecordLosses()
    module = BiEncoderModule(encoder, loss_fn, lr=1e-3, warmup_steps=2)
    trainer = make_trainer(max_steps=15, callbacks=[record])
    trainer.fit(module, repeated(batch, 15))
    assert trainer.global_step == 15 and len(record.losses) == 15
    assert record.losses[0] == pytest.approx(before, rel=1e-5)
    after = batch_loss()
    assert after < 0.7 * before, (before, after, record.losses)
    assert module.skipped_steps == 0


def _first_step_grads(encoder: Encoder, loss: InfoNCELoss, chunk: int | None) -> dict[str, torch.Tensor]:
    record = RecordGrads()
    module = BiEncoderModule(encoder, loss, lr=1e-3, max_grad_norm=None, grad_cache_chunk_size=chunk)
    make_trainer(max_steps=1, callbacks=[record]).fit(module, repeated(make_batch(encoder), 1))
    assert record.grads
    return record.grads


@pytest.mark.slow
@pytest.mark.parametrize(
    "loss_kwargs", [{}, {"symmetric": True, "learnable_temperature": True}], ids=["plain", "sym-learnable"]
)
def test_grad_cache_gives_the_plain_gradients(tiny_encoder_factory, loss_kwargs: dict) -> None:
    plain = _first_step_grads(tiny_encoder_factory(dropout=False), InfoNCELoss(TAU, **loss_kwargs), None)
    cached = _first_step_grads(tiny_encoder_factory(dropout=False), InfoNCELoss(TAU, **loss_kwargs), 2)
    assert plain.keys() == cached.keys()
    assert any("word_embeddings" in n for n in plain)
    assert ("loss.log_scale" in plain) == bool(loss_kwargs)
    for name, grad in plain.items():
        assert grad.abs().sum() > 0 or "token_type" in name, name
        torch.testing.assert_close(cached[name], grad, atol=1e-6, rtol=1e-4, msg=name)


def _first_step(
    encoder: Encoder, loss: InfoNCELoss, batch: dict[str, Any], chunk: int | None
) -> tuple[float, dict[str, torch.Tensor]]:
    """Loss and parameter gradients of the module's first training step on ``batch`` (one process)."""
    record, losses = RecordGrads(), RecordLosses()
    module = BiEncoderModule(encoder, loss, lr=1e-3, max_grad_norm=None, grad_cache_chunk_size=chunk)
    make_trainer(max_steps=1, callbacks=[record, losses]).fit(module, repeated(batch, 1))
    assert record.grads
    return losses.losses[0], record.grads


@pytest.mark.slow
@pytest.mark.parametrize("k", [1, 2])
def test_hard_negatives_plain_and_grad_cache_match_reference(tiny_encoder_factory, k: int) -> None:
    """With k negatives per query the step's loss and gradients are those of InfoNCE over all positives and all
    negatives (symmetric, learnable temperature), in a plain and a GradCache step."""

    def loss() -> InfoNCELoss:
        return InfoNCELoss(TAU, symmetric=True, learnable_temperature=True)

    batch = make_batch(tiny_encoder_factory(dropout=False), k)
    assert batch["n_input_ids"].shape[0] == k * len(QUESTIONS)
    expected_loss, expected = reference_step(tiny_encoder_factory(dropout=False), loss(), batch)
    in_batch_only, _ = reference_step(
        tiny_encoder_factory(dropout=False), loss(), make_batch(tiny_encoder_factory())
    )
    assert expected_loss > in_batch_only + 1e-3
    for chunk in (None, 4):
        got_loss, got = _first_step(tiny_encoder_factory(dropout=False), loss(), batch, chunk)
        assert got_loss == pytest.approx(expected_loss, rel=1e-5), chunk
        assert got.keys() == expected.keys()
        for name, grad in expected.items():
            torch.testing.assert_close(got[name], grad, atol=1e-6, rtol=1e-4, msg=f"{chunk} {name}")


def test_hard_negatives_malformed_batch_is_an_error(tiny_encoder_factory) -> None:
    batch = make_batch(tiny_encoder_factory(), k=1)
    assert hard_negatives(make_batch(tiny_encoder_factory())) is None
    ids, mask = hard_negatives(batch)
    assert ids is batch["n_input_ids"] and mask is batch["n_attention_mask"]
    with pytest.raises(ValueError, match="both n_input_ids and n_attention_mask"):
        hard_negatives({**batch, "n_attention_mask": None})
    with pytest.raises(ValueError, match=r"b = 6 queries, got n_input_ids \(5, "):
        hard_negatives({**batch, "n_input_ids": ids[:5], "n_attention_mask": mask[:5]})
    with pytest.raises(ValueError, match="k >= 1"):
        hard_negatives({**batch, "n_input_ids": ids[:0], "n_attention_mask": mask[:0]})


class NaNLoss(InfoNCELoss):
    """InfoNCE times NaN: a non-finite loss that still has a graph to back-propagate."""

    def forward(self, *args: Any, **kwargs: Any) -> torch.Tensor:
        return super().forward(*args, **kwargs) * float("nan")


@pytest.mark.slow
def test_nonfinite_loss_raises_naming_the_step(tiny_encoder_factory) -> None:
    encoder = tiny_encoder_factory(dropout=False, freeze_word_embeddings=True)
    module = BiEncoderModule(encoder, NaNLoss(TAU), nonfinite="raise")
    with pytest.raises(NonFiniteLossError, match=r"global step 0 \(epoch 0, batch 0\)"):
        make_trainer(max_steps=2).fit(module, repeated(make_batch(encoder), 2))


@pytest.mark.slow
@pytest.mark.parametrize("chunk", [None, 2], ids=["plain", "gradcache"])
def test_nonfinite_loss_skip_leaves_parameters_unchanged(tiny_encoder_factory, chunk: int | None) -> None:
    encoder = tiny_encoder_factory(dropout=False, freeze_word_embeddings=True)
    module = BiEncoderModule(encoder, NaNLoss(TAU), nonfinite="skip", grad_cache_chunk_size=chunk)
    before = _params(module)
    trainer = make_trainer(max_epochs=1)
    trainer.fit(module, repeated(make_batch(encoder), 2))
    assert module.skipped_steps == 2
    assert trainer.global_step == 0
    for name, value in _params(module).items():
        assert torch.equal(value, before[name]), name
    assert all(p.grad is None for p in module.parameters())


def test_invalid_settings_are_config_errors(tiny_encoder_factory) -> None:
    encoder = tiny_encoder_factory()
    with pytest.raises(ConfigError, match="'raise' or 'skip'"):
        BiEncoderModule(encoder, InfoNCELoss(), nonfinite="ignore")  # type: ignore[arg-type]
    with pytest.raises(ConfigError, match="grad_cache_chunk_size"):
        BiEncoderModule(encoder, InfoNCELoss(), grad_cache_chunk_size=0)


def test_linear_warmup_decay_by_hand() -> None:
    f = linear_warmup_decay(warmup=4, total=12)
    assert [f(s) for s in range(4)] == pytest.approx([0.25, 0.5, 0.75, 1.0])
    assert [f(s) for s in (4, 6, 8, 11, 12, 20)] == pytest.approx([1.0, 0.75, 0.5, 0.125, 0.0, 0.0])
    g = linear_warmup_decay(warmup=0, total=5)
    assert [g(s) for s in range(6)] == pytest.approx([1.0, 0.8, 0.6, 0.4, 0.2, 0.0])


def _configured(encoder: Encoder, total: int, **kwargs: Any) -> tuple[BiEncoderModule, dict[str, Any]]:
    module = BiEncoderModule(encoder, InfoNCELoss(TAU, learnable_temperature=True), **kwargs)
    module.trainer = SimpleNamespace(estimated_stepping_batches=total)
    return module, module.configure_optimizers()


def test_configure_optimizers_groups(tiny_encoder_factory) -> None:
    encoder = tiny_encoder_factory(freeze_word_embeddings=True)
    module, config = _configured(encoder, total=20, lr=1e-3, weight_decay=0.05)
    opt = config["optimizer"]
    decay, no_decay = opt.param_groups
    assert decay["weight_decay"] == 0.05 and no_decay["weight_decay"] == 0.0
    names = {id(p): n for n, p in module.named_parameters()}
    decay_names = {names[id(p)] for p in decay["params"]}
    no_decay_names = {names[id(p)] for p in no_decay["params"]}
    assert not decay_names & no_decay_names
    trainable = {n for n, p in module.named_parameters() if p.requires_grad}
    assert decay_names | no_decay_names == trainable
    word = "encoder.model.embeddings.word_embeddings.weight"
    assert word not in trainable and word in dict(module.named_parameters())
    assert all(n.endswith(".bias") or "LayerNorm" in n or n == "loss.log_scale" for n in no_decay_names)
    assert any("LayerNorm.weight" in n for n in no_decay_names)
    assert any(n.endswith(".bias") for n in no_decay_names)
    assert "loss.log_scale" in no_decay_names
    assert all(n.endswith(".weight") and "LayerNorm" not in n for n in decay_names)
    assert "encoder.model.encoder.layer.0.attention.self.query.weight" in decay_names


def test_optimizer_param_groups_by_hand() -> None:
    net = torch.nn.ModuleDict(
        {"dense": torch.nn.Linear(3, 4), "LayerNorm": torch.nn.LayerNorm(4), "frozen": torch.nn.Linear(4, 4)}
    )
    net["frozen"].requires_grad_(False)
    log_scale = torch.nn.Parameter(torch.zeros(1, 1))  # 2-d, but the temperature is never decayed
    named = [*net.named_parameters(), ("loss.log_scale", log_scale)]
    decay, no_decay = optimizer_param_groups(named, 0.1)
    assert decay["weight_decay"] == 0.1 and no_decay["weight_decay"] == 0.0
    assert [id(p) for p in decay["params"]] == [id(net["dense"].weight)]
    expected = [net["dense"].bias, net["LayerNorm"].weight, net["LayerNorm"].bias, log_scale]
    assert [id(p) for p in no_decay["params"]] == [id(p) for p in expected]


def test_adamw_with_schedule_reads_warmup_steps_or_ratio() -> None:
    named = [("w", torch.nn.Parameter(torch.ones(2, 2)))]
    hp = {"lr": 1.0, "weight_decay": 0.0, "betas": (0.9, 0.999), "eps": 1e-8, "warmup_ratio": 0.25}
    _, by_ratio = adamw_with_schedule(named, {**hp, "warmup_steps": None}, total_steps=8)
    _, by_steps = adamw_with_schedule(named, {**hp, "warmup_steps": 4}, total_steps=8)
    assert by_ratio.lr_lambdas[0](0) == pytest.approx(0.5)  # ceil(0.25 * 8) = 2 warm-up steps
    assert by_steps.lr_lambdas[0](0) == pytest.approx(0.25)


def test_constant_schedule_warms_up_then_keeps_the_rate() -> None:
    named = [("w", torch.nn.Parameter(torch.ones(2, 2)))]
    hp = {"lr": 1.0, "weight_decay": 0.0, "betas": (0.9, 0.999), "eps": 1e-8, "warmup_ratio": 0.25}
    _, sched = adamw_with_schedule(named, {**hp, "warmup_steps": None, "schedule": "constant"}, total_steps=8)
    assert [sched.lr_lambdas[0](s) for s in range(10)] == pytest.approx([0.5, 1.0] + [1.0] * 8)
    _, flat = adamw_with_schedule(named, {**hp, "warmup_steps": 0, "schedule": "constant"}, total_steps=8)
    assert [flat.lr_lambdas[0](s) for s in range(8)] == pytest.approx([1.0] * 8)


def test_unknown_schedule_lists_the_choices(tiny_encoder_factory) -> None:
    with pytest.raises(ConfigError, match="linear, constant"):
        BiEncoderModule(tiny_encoder_factory(), InfoNCELoss(), schedule="cosine")


def test_configure_optimizers_schedule(tiny_encoder_factory) -> None:
    encoder = tiny_encoder_factory()
    _, config = _configured(encoder, total=20, lr=1e-3, warmup_ratio=0.1)
    opt, sched = config["optimizer"], config["lr_scheduler"]["scheduler"]
    assert config["lr_scheduler"]["interval"] == "step"
    warmup = math.ceil(0.1 * 20)
    lrs = []
    for _ in range(20):
        lrs.append(opt.param_groups[0]["lr"])
        opt.step()
        sched.step()
    expected = [1e-3 * (s + 1) / warmup if s < warmup else 1e-3 * (20 - s) / (20 - warmup) for s in range(20)]
    assert lrs == pytest.approx(expected)


class DrawBetweenEpochs(L.Callback):
    """Draws random numbers between two training steps, as validation, an evaluation or a new epoch's data
    loader do."""

    def on_train_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        torch.rand(7)


@pytest.mark.slow
def test_a_step_draws_from_the_random_state_the_previous_step_left(tiny_encoder_factory) -> None:
    """Random numbers drawn between two steps change no dropout mask: the random state a checkpoint saves after
    a step is the one the next step draws from, also after an epoch's validation or evaluation."""
    batch = make_batch(tiny_encoder_factory())

    def run(*callbacks: L.Callback) -> list[float]:
        encoder = tiny_encoder_factory()  # dropout on
        torch.manual_seed(0)
        record = RecordLosses()
        module = BiEncoderModule(encoder, InfoNCELoss(TAU), lr=1e-3, warmup_steps=0)
        make_trainer(max_epochs=2, callbacks=[record, *callbacks]).fit(module, repeated(batch, 2))
        return record.losses

    plain, disturbed = run(), run(DrawBetweenEpochs())
    assert len(plain) == 4 and len(set(plain)) == 4
    assert disturbed == plain


def test_checkpoint_hooks_keep_skipped_steps(tiny_encoder_factory) -> None:
    encoder = tiny_encoder_factory()
    module = BiEncoderModule(encoder, InfoNCELoss())
    module.skipped_steps = 4
    checkpoint: dict[str, Any] = {}
    module.on_save_checkpoint(checkpoint)
    fresh = BiEncoderModule(encoder, InfoNCELoss())
    fresh.on_load_checkpoint(checkpoint)
    assert fresh.skipped_steps == 4
    assert checkpoint["hybrid_ir"]["base_model"] == encoder.name_or_path


WORLD = 2
DDP_QUERIES = 4  # global batch of the DDP test: 2 queries per rank


def _ddp_loss() -> InfoNCELoss:
    return InfoNCELoss(TAU, symmetric=True, learnable_temperature=True)


def _ddp_first_step(
    encoder: Encoder, batch: dict[str, Any], chunk: int | None
) -> tuple[float, dict[str, torch.Tensor]]:
    """This rank's loss and the parameter gradients of the first step on ``batch`` as the optimiser sees them
    (after DDP's averaging), symmetric loss with a learnable temperature."""
    record, losses = RecordGrads(), RecordLosses()
    module = BiEncoderModule(encoder, _ddp_loss(), lr=1e-3, max_grad_norm=None, grad_cache_chunk_size=chunk)
    trainer = L.Trainer(
        accelerator="cpu",
        devices=WORLD,
        strategy="ddp",
        precision="32-true",
        max_steps=1,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        use_distributed_sampler=False,
        callbacks=[record, losses],
    )
    trainer.fit(module, repeated(batch, 1))
    assert record.grads
    return losses.losses[0], record.grads


def _global_batch(encoder: Encoder, k: int) -> dict[str, Any]:
    """The first DDP_QUERIES pairs with k negatives each."""
    batch = make_batch(encoder, k)
    return {
        key: v[: DDP_QUERIES * (k if key.startswith("n_") else 1)] if torch.is_tensor(v) else v
        for key, v in batch.items()
    }


def _rank_slice(batch: dict[str, Any], rank: int) -> dict[str, Any]:
    """Rank ``rank``'s share: its queries and positives and (query-major) their negatives."""
    return {k: v.chunk(WORLD)[rank] if torch.is_tensor(v) else v for k, v in batch.items()}


def _ddp_worker(
    rank: int, port: int, encoder: Encoder, batches: dict[int, dict[str, Any]], out_dir: str
) -> None:
    """One of ``WORLD`` externally launched Lightning DDP ranks: loss and first-step gradients of a plain and a
    GradCache step on this rank's slice of each global batch (k negatives per query)."""
    os.environ.update(
        AGENT_STORE_ENV,
        MASTER_PORT=str(port),
        NODE_RANK="0",
        LOCAL_RANK=str(rank),
        WORLD_SIZE=str(WORLD),
    )
    torch.set_num_threads(1)
    initial = {k: v.clone() for k, v in encoder.state_dict().items()}
    result = {}
    for k, batch in batches.items():
        for name, chunk in (("plain", None), ("gradcache", 1)):
            encoder.load_state_dict(initial)
            result[k, name] = _ddp_first_step(encoder, _rank_slice(batch, rank), chunk)
    torch.save(result, Path(out_dir) / f"rank{rank}.pt")


@pytest.mark.slow
def test_ddp_plain_and_grad_cache_match_single_process(tiny_encoder_factory, tmp_path: Path) -> None:
    """Two DDP ranks with half the global batch each get the loss and gradient of one process on the whole
    batch, with and without GradCache (GradCache once all-reduced only its first chunk's gradient), without
    hard negatives and with k = 1 and 2 (a rank-major gather once interleaved [pos0; neg0; pos1; neg1])."""
    encoder = tiny_encoder_factory(dropout=False)
    batches = {k: _global_batch(encoder, k) for k in (0, 1, 2)}
    spawn(_ddp_worker, encoder, batches, str(tmp_path), nprocs=WORLD, timeout_s=600)
    ranks = [torch.load(tmp_path / f"rank{r}.pt") for r in range(WORLD)]
    for k, batch in batches.items():
        expected_loss, expected = reference_step(tiny_encoder_factory(dropout=False), _ddp_loss(), batch)
        assert "loss.log_scale" in expected
        # A plain step returns the rank's loss (mean over its queries); GradCache, the global batch's loss.
        plain_losses = [result[k, "plain"][0] for result in ranks]
        assert sum(plain_losses) / WORLD == pytest.approx(expected_loss, rel=1e-5), k
        for rank, result in enumerate(ranks):
            assert result[k, "gradcache"][0] == pytest.approx(expected_loss, rel=1e-5), (k, rank)
            for name in ("plain", "gradcache"):
                grads = result[k, name][1]
                assert grads.keys() == expected.keys()
                for param, grad in expected.items():
                    torch.testing.assert_close(
                        grads[param], grad, atol=1e-6, rtol=1e-4, msg=f"k={k} rank {rank} {name} {param}"
                    )


def _rng_worker(rank: int, port: int, encoder: Encoder, out_dir: str) -> None:
    """One of ``WORLD`` ranks: save a checkpoint (every rank builds it, rank 0 writes it, as in Lightning), draw
    what this rank's next step would draw, then resume from the file in a fresh module and draw again."""
    with gloo_group(rank, port, WORLD):
        torch.manual_seed(rank)  # the ranks' generators differ, as after steps on batches of their own
        checkpoint: dict[str, Any] = {}
        BiEncoderModule(encoder, InfoNCELoss()).on_save_checkpoint(checkpoint)  # a collective
        expected = torch.rand(8)
        path = Path(out_dir) / "last.ckpt"
        if rank == 0:
            torch.save(checkpoint, path)
        dist.barrier()
        resumed = BiEncoderModule(encoder, InfoNCELoss())
        resumed.on_load_checkpoint(torch.load(path, weights_only=True))
        torch.manual_seed(100)  # the resumed process starts from another state
        resumed.on_train_batch_start(None, 0)
        torch.save({"expected": expected, "resumed": torch.rand(8)}, Path(out_dir) / f"rank{rank}.pt")


def test_a_ddp_checkpoint_resumes_each_rank_from_its_own_random_state(
    tiny_encoder_factory, tmp_path: Path
) -> None:
    """Each rank draws its own dropout masks: the checkpoint gathers every rank's random state and a resumed rank
    draws what it would have drawn next (each rank once resumed from rank 0's)."""
    spawn(_rng_worker, tiny_encoder_factory(), str(tmp_path), nprocs=WORLD)
    ranks = [torch.load(tmp_path / f"rank{r}.pt") for r in range(WORLD)]
    assert not torch.equal(ranks[0]["expected"], ranks[1]["expected"])
    for rank, result in enumerate(ranks):
        assert torch.equal(result["resumed"], result["expected"]), f"rank {rank}"
    saved = torch.load(tmp_path / "last.ckpt", weights_only=True)["hybrid_ir"]
    assert len(saved["rng_state_by_rank"]) == WORLD


def test_a_checkpoint_of_fewer_ranks_resumes_the_others_from_rank_0s_state(
    caplog: pytest.LogCaptureFixture,
) -> None:
    own = [{"torch": torch.full((4,), r, dtype=torch.uint8)} for r in range(2)]
    ddp = {"rng_state": own[0], "rng_state_by_rank": own}
    single = {
        "rng_state": own[0]
    }  # a single process's checkpoint, or a DDP one from before the ranks' states
    with caplog.at_level(logging.WARNING, logger="hybrid_ir.training.module"):
        assert [rank_rng_state(ddp, r, 2) for r in range(2)] == own
        assert rank_rng_state(ddp, 0, 1) is own[0]  # fewer ranks than saved: each has its own
        assert rank_rng_state(single, 0, 1) is own[0]
        assert rank_rng_state({}, 0, 2) is None  # no random state saved: none restored, nothing to warn about
        assert not caplog.records
        assert rank_rng_state(single, 1, 2) is own[0]
        assert not caplog.records  # rank 0 warns for all
        assert rank_rng_state(single, 0, 2) is own[0]
        assert rank_rng_state(ddp, 3, 4) is own[0]
        assert rank_rng_state(ddp, 0, 4) is own[0]
    assert [r.getMessage() for r in caplog.records] == [
        "the checkpoint holds the random states of 1 rank(s) and this run has 2: ranks 1 to 1 start from rank "
        "0's, so their dropout masks differ from those of an uninterrupted run",
        "the checkpoint holds the random states of 2 rank(s) and this run has 4: ranks 2 to 3 start from rank "
        "0's, so their dropout masks differ from those of an uninterrupted run",
    ]


def test_positive_ranks_by_hand() -> None:
    # 2 queries of rank 1 of a 2-rank global batch (offset 2); passages p0 … p3, positives at rows 2 and 3
    q = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    passages = torch.tensor([[0.9, 0.1], [0.5, 0.5], [0.8, 0.0], [0.0, 1.0]])
    # query 0 scores 0.9, 0.5, 0.8, 0.0: its positive (0.8) is second; query 1 scores 0.1, 0.5, 0.0, 1.0: first
    assert positive_ranks(q, passages, offset=2).tolist() == [2, 1]


def test_positive_ranks_count_ties_against_the_positive() -> None:
    same = torch.ones(3, 4)  # collapsed embeddings: every passage scores like the positive
    assert positive_ranks(same, same).tolist() == [3, 3, 3]
