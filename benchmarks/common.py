"""Shared pieces of the in-process benchmarks: the configuration ``train.py`` uses, timing statistics, a plain
PyTorch training loop and interleaved timing inside a Lightning run (process-level helpers: :mod:`benchmarks.process`).

Fairness rules every benchmark follows: the competitors get the same model weights, the same batches (same
pairs, same padding, same sequence lengths), the same loss, optimiser and schedule; all run in one process,
warm-up steps are dropped, and the timed steps alternate between the competitors (A B A B ...) so that load
from other programs on the machine hits all of them alike. Figures are medians; means are kept as well,
since a median hides costs paid every n-th step.
"""

from __future__ import annotations

import copy
import math
import os
import platform
import statistics
import tempfile
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import lightning as L
import torch
from hydra import compose, initialize_config_dir
from hydra.core.global_hydra import GlobalHydra
from omegaconf import DictConfig
from torch import Tensor

from benchmarks.process import REPO
from hybrid_ir.data.datamodule import ParallelQADataModule, batch_to_device
from hybrid_ir.models.encoder import Encoder, autocast_context
from hybrid_ir.models.gradcache import grad_cache_backward
from hybrid_ir.models.loss import InfoNCELoss
from hybrid_ir.models.module import linear_warmup_decay
from hybrid_ir.utils.hardware import cpu_has_fast_bf16
from hybrid_ir.utils.instantiate import instantiate_loggers, register_resolvers
from hybrid_ir.utils.io import atomic_write_json

CONF_DIR = REPO / "conf"
RESULTS_DIR = Path(__file__).resolve().parent / "results"
STEP_SEED = 1234
"""Every competitor's step ``i`` starts from ``torch.manual_seed(STEP_SEED + i)``: same dropout masks."""

Batch = dict[str, Any]


EXTRA_OVERRIDES: list[str] = []
"""Hydra overrides applied after every benchmark's own (``python -m benchmarks.run --set KEY=VALUE ...``)."""


def compose_config(overrides: Sequence[str] = ()) -> DictConfig:
    """``conf/train.yaml`` composed as ``train.py experiment=cpu`` (the run ``make train`` makes) would, with
    ``overrides`` (Hydra syntax), then :data:`EXTRA_OVERRIDES`, and the output directory set to a fresh temporary
    folder (Hydra's run directory does not exist outside ``train.py``)."""
    register_resolvers()
    if GlobalHydra.instance().is_initialized():
        GlobalHydra.instance().clear()
    out = tempfile.mkdtemp(prefix="hybrid_ir_bench_")
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        return compose(
            config_name="train",
            overrides=[f"paths.output_dir={out}", "experiment=cpu", *overrides, *EXTRA_OVERRIDES],
        )


def stats(samples: Sequence[float]) -> dict[str, Any]:
    """``{"n", "median_s", "mean_s", "min_s", "max_s", "samples_s"}`` of timings in seconds."""
    if not samples:
        raise ValueError("no timing samples")
    return {
        "n": len(samples),
        "median_s": statistics.median(samples),
        "mean_s": statistics.fmean(samples),
        "min_s": min(samples),
        "max_s": max(samples),
        "samples_s": list(samples),
    }


def goal(name: str, value: float, target: float, higher_is_better: bool) -> dict[str, Any]:
    """A goal record: ``met`` when ``value >= target`` (``higher_is_better``) or ``value <= target``."""
    met = value >= target if higher_is_better else value <= target
    return {"name": name, "value": value, "target": target, "higher_is_better": higher_is_better, "met": met}


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text(encoding="utf-8", errors="replace").splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def machine_info() -> dict[str, Any]:
    """CPU model (``/proc/cpuinfo``), logical CPUs, torch version and thread counts, Python, load average."""
    return {
        "cpu": _cpu_model(),
        "logical_cpus": os.cpu_count(),
        "torch": torch.__version__,
        "torch_threads": torch.get_num_threads(),
        "torch_interop_threads": torch.get_num_interop_threads(),
        "fast_bf16": cpu_has_fast_bf16(),
        "python": platform.python_version(),
        "platform": platform.platform(),
        "load_average_1_5_15": list(os.getloadavg()) if hasattr(os, "getloadavg") else None,
    }


def write_result(out_dir: Path, name: str, result: Mapping[str, Any]) -> Path:
    """Write ``<out_dir>/<name>.json`` atomically; returns the path."""
    path = Path(out_dir) / f"{name}.json"
    atomic_write_json(path, dict(result))
    return path


def seed_step(step: int) -> None:
    """Seed the global generator for step ``step`` (the same for every competitor)."""
    torch.manual_seed(STEP_SEED + step)


def step_loss(outputs: Any) -> float:
    """The loss of a ``training_step`` output as Lightning hands it to ``on_train_batch_end``."""
    loss = outputs["loss"] if isinstance(outputs, Mapping) else outputs
    return float(loss)


def param_groups(
    named: Sequence[tuple[str, torch.nn.Parameter]], weight_decay: float
) -> list[dict[str, Any]]:
    """AdamW groups as :meth:`BiEncoderModule.configure_optimizers` builds them: no decay on biases,
    LayerNorm weights and the temperature; frozen parameters left out."""
    decay, no_decay = [], []
    for name, param in named:
        if not param.requires_grad:
            continue
        bucket = no_decay if param.ndim < 2 or "LayerNorm" in name or "log_scale" in name else decay
        bucket.append(param)
    return [{"params": decay, "weight_decay": weight_decay}, {"params": no_decay, "weight_decay": 0.0}]


def apply_update(
    params: Sequence[Tensor],
    max_grad_norm: float | None,
    optimizer: torch.optim.Optimizer,
    scheduler: torch.optim.lr_scheduler.LRScheduler,
) -> None:
    """What follows the backward pass in the module's step: clip the gradient norm (when set), step the
    optimiser, clear the gradients, step the schedule."""
    if max_grad_norm:
        torch.nn.utils.clip_grad_norm_(params, max_grad_norm)
    optimizer.step()
    optimizer.zero_grad(set_to_none=True)
    scheduler.step()


class BareLoop:
    """The step of a plain PyTorch training loop: encode queries and passages, InfoNCE over the batch,
    backward, clip the global gradient norm, AdamW, linear warm-up/decay schedule. No Lightning, no Hydra.

    Args:
        encoder: its own copy of the model (``copy.deepcopy`` of the competitor's, so the weights match).
        loss: the InfoNCE loss.
        hparams: ``lr``, ``weight_decay``, ``betas``, ``eps``, ``max_grad_norm``, ``warmup_ratio``,
            ``warmup_steps`` (the module's hyper-parameters).
        total_steps: length of the schedule (the trainer's ``estimated_stepping_batches``).
        grad_cache_chunk: embed and back-propagate with GradCache in chunks of this many texts
            (:func:`~hybrid_ir.models.gradcache.grad_cache_backward`, as the module does); ``None``: one pass.
        device: where the model lives; each step moves its batch there (as Lightning does for ours) and, on
            CUDA, waits for the GPU before returning, so that a step's time is its whole work.
        precision: the Trainer's precision; ``bf16-mixed``/``16-mixed`` run forward, loss and backward under
            ``torch.autocast`` as Lightning's precision plugin does around ``training_step``.
    """

    def __init__(
        self,
        encoder: Encoder,
        loss: InfoNCELoss,
        hparams: Mapping[str, Any],
        total_steps: int,
        grad_cache_chunk: int | None = None,
        device: torch.device | str = "cpu",
        precision: str = "32-true",
    ) -> None:
        self.device = torch.device(device)
        self.precision = precision
        self.encoder = encoder.to(self.device).train()
        self.grad_cache_chunk = grad_cache_chunk
        self.loss = loss.to(self.device)
        named = [*encoder.named_parameters(), *loss.named_parameters()]
        self.params = [p for _, p in named if p.requires_grad]
        self.optimizer = torch.optim.AdamW(
            param_groups(named, hparams["weight_decay"]),
            lr=hparams["lr"],
            betas=tuple(hparams["betas"]),
            eps=hparams["eps"],
        )
        warmup = hparams.get("warmup_steps")
        warmup = math.ceil(hparams["warmup_ratio"] * total_steps) if warmup is None else warmup
        self.scheduler = torch.optim.lr_scheduler.LambdaLR(
            self.optimizer, linear_warmup_decay(warmup, total_steps)
        )
        self.max_grad_norm = hparams.get("max_grad_norm")

    def step(self, batch: Batch) -> Tensor:
        """One optimisation step on a collated batch; returns the detached loss (0-dim)."""
        batch = batch_to_device(batch, self.device)
        with autocast_context(self.device, self.precision):
            if self.grad_cache_chunk:
                size = self.grad_cache_chunk
                loss = grad_cache_backward(
                    encode=lambda chunk: self.encoder(*chunk),
                    q_chunks=_chunks(batch, "q", size),
                    p_chunks=_chunks(batch, "p", size),
                    loss_fn=lambda q, p: self.loss(q, p, q_global=q),
                )
            else:
                q = self.encoder(batch["q_input_ids"], batch["q_attention_mask"])
                p = self.encoder(batch["p_input_ids"], batch["p_attention_mask"])
                loss = self.loss(q, p)
                loss.backward()
        apply_update(self.params, self.max_grad_norm, self.optimizer, self.scheduler)
        synchronize(self.device)
        return loss.detach()


def _chunks(batch: Batch, side: str, size: int) -> list[tuple[Tensor, Tensor]]:
    """``(input_ids, attention_mask)`` row chunks of ``size`` of the ``side`` (``q`` or ``p``) of a batch."""
    ids, mask = batch[f"{side}_input_ids"], batch[f"{side}_attention_mask"]
    return [(ids[i : i + size], mask[i : i + size]) for i in range(0, ids.shape[0], size)]


def bare_loop_like(
    module: L.LightningModule,
    total_steps: int,
    grad_cache_chunk: int | None = None,
    device: torch.device | str = "cpu",
    precision: str = "32-true",
) -> BareLoop:
    """A :class:`BareLoop` with copies of ``module``'s encoder and loss and its hyper-parameters."""
    return BareLoop(
        copy.deepcopy(module.encoder),
        copy.deepcopy(module.loss),
        dict(module.hparams),
        total_steps,
        grad_cache_chunk,
        device,
        precision,
    )


def synchronize(device: torch.device) -> None:
    """Wait for the queued GPU work of ``device`` (nothing to wait for on CPU), so a timer sees all of it."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def build_training(cfg: DictConfig) -> tuple[ParallelQADataModule, L.LightningModule]:
    """The DataModule and LightningModule exactly as :func:`hybrid_ir.pipeline.train` builds them (data set up)."""
    from hydra.utils import instantiate

    L.seed_everything(cfg.seed, workers=True, verbose=False)
    datamodule: ParallelQADataModule = instantiate(cfg.datamodule)
    datamodule.load_corpora()
    encoder: Encoder = instantiate(cfg.model)
    module = instantiate(cfg.module, encoder=encoder, loss=instantiate(cfg.loss))
    datamodule.attach_tokenizer(encoder.text_tokenizer)
    datamodule.setup("fit")
    return datamodule, module


def precollate(datamodule: ParallelQADataModule, n: int) -> list[Batch]:
    """The first ``n`` batches of epoch 0 of the DataModule's training loader, collated up front (the same
    batches a Trainer gets: the sampler is deterministic in ``(seed, epoch)``)."""
    loader = datamodule.train_dataloader()
    if n > len(loader):
        raise ValueError(f"asked for {n} batches but an epoch has {len(loader)}; lower the step count")
    batches = []
    for batch in loader:
        batches.append(batch)
        if len(batches) == n:
            break
    return batches


def same_batch(a: Batch, b: Batch) -> bool:
    """Whether two collated batches hold the same token ids and masks."""
    keys = ("q_input_ids", "q_attention_mask", "p_input_ids", "p_attention_mask")
    return all(torch.equal(a[k].cpu(), b[k].cpu()) for k in keys)


class InterleavedSteps(L.Callback):
    """Times the Trainer's own steps and, after each, one step of every other competitor (A B A B ...).

    The Trainer's step ``i`` is timed from the end of this callback's work for step ``i - 1`` (or the start of
    training) to the call of ``on_train_batch_end`` for step ``i``: the whole loop cycle, i.e. fetching and
    collating the batch, Lightning's hooks, logging, the progress bar and the ``training_step``. Then each
    competitor ``name -> step(i) -> loss`` runs on batch ``i`` (its own copy of it), timed alone.
    Before every step of every competitor the global generator is seeded with :func:`seed_step`.

    Attributes:
        times: ``{name: [seconds per step]}`` (the Trainer's under ``ours_name``).
        losses: ``{name: [loss per step]}``.
        batches_match: whether the Trainer's batch ``i`` equaled ``reference[i]`` for every step.
    """

    def __init__(
        self,
        competitors: Mapping[str, Callable[[int], Tensor]],
        reference: Sequence[Batch] | None = None,
        ours_name: str = "ours",
    ) -> None:
        self.competitors = dict(competitors)
        self.reference = reference
        self.ours_name = ours_name
        self.times: dict[str, list[float]] = {ours_name: [], **{name: [] for name in competitors}}
        self.losses: dict[str, list[float]] = {ours_name: [], **{name: [] for name in competitors}}
        self.batches_match = True
        self._step = 0
        self._resume = 0.0

    def on_train_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._resume = time.perf_counter()

    def on_train_batch_start(
        self, trainer: L.Trainer, pl_module: L.LightningModule, batch: Any, batch_idx: int
    ):
        seed_step(self._step)

    def on_train_batch_end(
        self, trainer: L.Trainer, pl_module: L.LightningModule, outputs: Any, batch: Any, batch_idx: int
    ) -> None:
        synchronize(pl_module.device)
        self.times[self.ours_name].append(time.perf_counter() - self._resume)
        self.losses[self.ours_name].append(step_loss(outputs))
        i = self._step
        if self.reference is not None:
            self.batches_match &= same_batch(batch, self.reference[i])
        for name, step in self.competitors.items():
            seed_step(i)
            start = time.perf_counter()
            loss = step(i)
            self.times[name].append(time.perf_counter() - start)
            self.losses[name].append(float(loss))
        self._step += 1
        self._resume = time.perf_counter()


def timed_trainer(cfg: DictConfig, timer: InterleavedSteps) -> L.Trainer:
    """The Trainer of ``train.py`` for a timed run: ``cfg.trainer`` with its loggers and the configured progress
    bar (``callbacks.progress_bar``), plus ``timer``; no checkpoint, export or evaluation callbacks."""
    from hydra.utils import instantiate

    callbacks: list[L.Callback] = [timer]
    bar = (cfg.get("callbacks") or {}).get("progress_bar")
    if bar is not None:
        callbacks.append(instantiate(bar))
    return instantiate(cfg.trainer, callbacks=callbacks, logger=instantiate_loggers(cfg.logger))


def compare_timings(
    times: Mapping[str, Sequence[float]], warmup: int, items_per_step: int, ours: str = "ours"
) -> dict[str, Any]:
    """Statistics of each competitor after dropping ``warmup`` steps and its throughput (``items_per_step`` /
    median time), and per other competitor ``name`` three estimates of our throughput / theirs:

    * ``ratio_<name>``: median over rounds of ``t_name[i] / t_ours[i]``, the two steps of round ``i`` having
      run back to back; robust to load on the machine that changes between rounds (the goals use it);
    * ``median_ratio_<name>``: ratio of the median step times;
    * ``mean_ratio_<name>``: ratio of the mean step times (shows costs paid every n-th step, which medians hide);

    and ``extra_s_vs_<name>``: median over rounds of ``t_ours[i] - t_name[i]`` (our extra seconds per step).
    """
    out: dict[str, Any] = {}
    for name, samples in times.items():
        s = stats(samples[warmup:])
        s["items_per_s"] = items_per_step / s["median_s"]
        out[name] = s
    for name in times:
        if name != ours:
            pairs = list(zip(times[name][warmup:], times[ours][warmup:], strict=True))
            out[f"ratio_{name}"] = statistics.median(theirs / mine for theirs, mine in pairs)
            out[f"extra_s_vs_{name}"] = statistics.median(mine - theirs for theirs, mine in pairs)
            out[f"median_ratio_{name}"] = out[name]["median_s"] / out[ours]["median_s"]
            out[f"mean_ratio_{name}"] = out[name]["mean_s"] / out[ours]["mean_s"]
    return out


def loss_agreement(losses: Mapping[str, Sequence[float]], ours: str = "ours") -> dict[str, Any]:
    """``{"first_step": {name: loss}, "max_abs_diff_first": d, "max_abs_diff_all": d}`` against ``ours``."""
    first = {name: values[0] for name, values in losses.items()}
    others = [name for name in losses if name != ours]
    return {
        "first_step": first,
        "max_abs_diff_first": max((abs(first[n] - first[ours]) for n in others), default=0.0),
        "max_abs_diff_all": max(
            (abs(a - b) for n in others for a, b in zip(losses[n], losses[ours], strict=True)), default=0.0
        ),
    }
