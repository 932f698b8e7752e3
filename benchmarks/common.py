"""Shared pieces of the benchmarks: the configuration ``train.py`` uses, timing statistics, a plain PyTorch
training loop, interleaved timing inside a Lightning run, peak-memory probes and subprocess workers.

Fairness rules every benchmark follows: the competitors get the same model weights, the same batches (same
pairs, same padding, same sequence lengths), the same loss, optimiser and schedule; all run in one process,
warm-up steps are dropped, and the timed steps alternate between the competitors (A B A B ...) so that load
from other programs on the machine hits all of them alike. Figures are medians; means are kept as well,
since a median hides costs paid every n-th step.
"""

from __future__ import annotations

import contextlib
import copy
import io
import json
import logging
import math
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
import warnings
from collections.abc import Callable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import lightning as L
import torch
from hydra import compose, initialize_config_dir
from hydra.core.global_hydra import GlobalHydra
from omegaconf import DictConfig
from torch import Tensor

from hybrid_ir.data.datamodule import ParallelQADataModule
from hybrid_ir.models.encoder import Encoder
from hybrid_ir.models.loss import InfoNCELoss
from hybrid_ir.models.module import linear_warmup_decay
from hybrid_ir.utils.hardware import cpu_has_fast_bf16
from hybrid_ir.utils.instantiate import register_resolvers
from hybrid_ir.utils.io import atomic_write_json

REPO = Path(__file__).resolve().parents[1]
CONF_DIR = REPO / "conf"
RESULTS_DIR = Path(__file__).resolve().parent / "results"
STEP_SEED = 1234
"""Every competitor's step ``i`` starts from ``torch.manual_seed(STEP_SEED + i)``: same dropout masks."""

Batch = dict[str, Any]


def compose_config(overrides: Sequence[str] = ()) -> DictConfig:
    """``conf/train.yaml`` composed as ``train.py`` would, with ``overrides`` (Hydra syntax) and the output
    directory set to a fresh temporary folder (Hydra's run directory does not exist outside ``train.py``)."""
    register_resolvers()
    if GlobalHydra.instance().is_initialized():
        GlobalHydra.instance().clear()
    out = tempfile.mkdtemp(prefix="hybrid_ir_bench_")
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        return compose(config_name="train", overrides=[f"paths.output_dir={out}", *overrides])


@contextlib.contextmanager
def quiet() -> Iterator[None]:
    """Silence Lightning's info logs, library warnings and progress bars (written to a buffer, so their
    formatting cost stays in the timings while the terminal stays readable)."""
    names = ("lightning", "lightning.pytorch", "lightning.fabric", "pytorch_lightning", "hybrid_ir")
    levels = {name: logging.getLogger(name).level for name in names}
    for name in names:
        logging.getLogger(name).setLevel(logging.WARNING)
    try:
        with warnings.catch_warnings(), contextlib.redirect_stderr(io.StringIO()):
            warnings.simplefilter("ignore")
            yield
    finally:
        for name, level in levels.items():
            logging.getLogger(name).setLevel(level)


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


def param_groups(named: Sequence[tuple[str, torch.nn.Parameter]], weight_decay: float) -> list[dict[str, Any]]:
    """AdamW groups as :meth:`BiEncoderModule.configure_optimizers` builds them: no decay on biases,
    LayerNorm weights and the temperature; frozen parameters left out."""
    decay, no_decay = [], []
    for name, param in named:
        if not param.requires_grad:
            continue
        bucket = no_decay if param.ndim < 2 or "LayerNorm" in name or "log_scale" in name else decay
        bucket.append(param)
    return [{"params": decay, "weight_decay": weight_decay}, {"params": no_decay, "weight_decay": 0.0}]


class BareLoop:
    """The step of a plain PyTorch training loop: encode queries and passages, InfoNCE over the batch,
    backward, clip the global gradient norm, AdamW, linear warm-up/decay schedule. No Lightning, no Hydra.

    Args:
        encoder: its own copy of the model (``copy.deepcopy`` of the competitor's, so the weights match).
        loss: the InfoNCE loss.
        hparams: ``lr``, ``weight_decay``, ``betas``, ``eps``, ``max_grad_norm``, ``warmup_ratio``,
            ``warmup_steps`` (the module's hyper-parameters).
        total_steps: length of the schedule (the trainer's ``estimated_stepping_batches``).
    """

    def __init__(self, encoder: Encoder, loss: InfoNCELoss, hparams: Mapping[str, Any], total_steps: int):
        self.encoder = encoder.train()
        self.loss = loss
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
        q = self.encoder(batch["q_input_ids"], batch["q_attention_mask"])
        p = self.encoder(batch["p_input_ids"], batch["p_attention_mask"])
        loss = self.loss(q, p)
        loss.backward()
        if self.max_grad_norm:
            torch.nn.utils.clip_grad_norm_(self.params, self.max_grad_norm)
        self.optimizer.step()
        self.optimizer.zero_grad(set_to_none=True)
        self.scheduler.step()
        return loss.detach()


def bare_loop_like(module: L.LightningModule, total_steps: int) -> BareLoop:
    """A :class:`BareLoop` with copies of ``module``'s encoder and loss and its hyper-parameters."""
    return BareLoop(
        copy.deepcopy(module.encoder), copy.deepcopy(module.loss), dict(module.hparams), total_steps
    )


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
    return all(torch.equal(a[k], b[k]) for k in keys)


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

    def on_train_batch_start(self, trainer: L.Trainer, pl_module: L.LightningModule, batch: Any, batch_idx: int):
        seed_step(self._step)

    def on_train_batch_end(
        self, trainer: L.Trainer, pl_module: L.LightningModule, outputs: Any, batch: Any, batch_idx: int
    ) -> None:
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


def compare_timings(
    times: Mapping[str, Sequence[float]], warmup: int, items_per_step: int, ours: str = "ours"
) -> dict[str, Any]:
    """Statistics of each competitor after dropping ``warmup`` steps, its throughput (``items_per_step`` /
    median), and ``ratio_<name>`` = our throughput / theirs on medians (and ``mean_ratio_<name>`` on means)."""
    out: dict[str, Any] = {}
    for name, samples in times.items():
        s = stats(samples[warmup:])
        s["items_per_s"] = items_per_step / s["median_s"]
        out[name] = s
    for name in times:
        if name != ours:
            out[f"ratio_{name}"] = out[name]["median_s"] / out[ours]["median_s"]
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


# ---- peak memory (resident set size) of the current process ----


def _status_kb(field: str) -> float | None:
    try:
        for line in Path("/proc/self/status").read_text(encoding="utf-8").splitlines():
            if line.startswith(field + ":"):
                return float(line.split()[1])
    except OSError:
        pass
    return None


def reset_peak_rss() -> bool:
    """Reset the kernel's peak-RSS mark of this process (``/proc/self/clear_refs``, Linux >= 4.0); whether it worked."""
    try:
        Path("/proc/self/clear_refs").write_text("5", encoding="utf-8")
    except OSError:
        return False
    return True


def current_rss_mb() -> float:
    """Resident set size now, in MiB."""
    kb = _status_kb("VmRSS")
    return float("nan") if kb is None else kb / 1024


def peak_rss_mb() -> float:
    """Peak resident set size since the start or the last :func:`reset_peak_rss`, in MiB
    (``VmHWM``; ``getrusage`` ``ru_maxrss`` where ``/proc`` is missing)."""
    kb = _status_kb("VmHWM")
    if kb is None:
        import resource

        kb = float(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss)
    return kb / 1024


def run_worker(module: str, config: Mapping[str, Any], timeout: float = 900.0) -> dict[str, Any]:
    """Run ``python -m <module> --worker '<config json>'`` in a fresh process and return the JSON object it
    prints on its last stdout line (a fresh process per configuration gives a clean peak-memory figure)."""
    cmd = [sys.executable, "-m", module, "--worker", json.dumps(dict(config))]
    proc = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=timeout, check=False)
    if proc.returncode != 0:
        raise RuntimeError(f"worker {module} {config} failed ({proc.returncode}):\n{proc.stderr[-3000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def worker_main(argv: Sequence[str], work: Callable[[dict[str, Any]], dict[str, Any]]) -> None:
    """Entry point of a worker module: parse ``--worker JSON``, run ``work`` and print its result as JSON."""
    if len(argv) != 2 or argv[0] != "--worker":
        raise SystemExit("usage: python -m benchmarks.<name> --worker '<config json>'")
    with quiet():
        result = work(json.loads(argv[1]))
    print(json.dumps(result))
