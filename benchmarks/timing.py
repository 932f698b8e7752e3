"""Timing and statistics of the in-process benchmarks: seeding each step alike, timing a Lightning run's steps
interleaved with its competitors' steps, and the figures compared (medians, per-round ratios, loss agreement).

Fairness rules every benchmark follows: the competitors get the same model weights, the same batches (same
pairs, same padding, same sequence lengths), the same loss, optimiser and schedule, and the same precision;
all run in one process, warm-up steps are dropped, and the timed steps alternate between the competitors
(A B A B ...) so that load from other programs on the machine hits all of them alike. Figures are medians;
means are kept as well, since a median hides costs paid every n-th step.
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import lightning as L
import torch
from torch import Tensor

from hybrid_ir.utils.rng import capture_torch_rng_state, restore_torch_rng_state

STEP_SEED = 1234
"""Every competitor's step ``i`` starts from ``torch.manual_seed(STEP_SEED + i)``: same dropout masks."""

Batch = dict[str, Any]


def seed_step(step: int) -> None:
    """Seed the global generator for step ``step`` (the same for every competitor)."""
    torch.manual_seed(STEP_SEED + step)


def synchronize(device: torch.device) -> None:
    """Wait for the queued GPU work of ``device`` (nothing to wait for on CPU), so a timer sees all of it."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)


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


def step_loss(outputs: Any) -> float:
    """The loss of a ``training_step`` output as Lightning hands it to ``on_train_batch_end``."""
    loss = outputs["loss"] if isinstance(outputs, Mapping) else outputs
    return float(loss)


def same_batch(a: Batch, b: Batch) -> bool:
    """Whether two collated batches hold the same token ids and masks."""
    keys = ("q_input_ids", "q_attention_mask", "p_input_ids", "p_attention_mask")
    return all(torch.equal(a[k].cpu(), b[k].cpu()) for k in keys)


class InterleavedSteps(L.Callback):
    """Times the Trainer's own steps and, after each, one step of every other competitor (A B A B ...).

    The Trainer's step ``i`` is timed from the end of this callback's work for step ``i - 1`` (or the start of
    training) to the call of ``on_train_batch_end`` for step ``i``: the whole loop cycle, i.e. fetching and
    collating the batch, Lightning's hooks, logging, the progress bar and the ``training_step``. Then each
    competitor ``name -> step(i) -> loss`` (added with :meth:`add` before training starts) runs on batch ``i``
    (its own copy of it), timed alone. Every competitor draws its random numbers (dropout) as the Trainer's module
    does: its first step from :func:`seed_step` ``(0)``, each later step from the torch state its own previous step
    left (``BiEncoderModule`` restores that state before every step, whatever ran in between).

    Attributes:
        times: ``{name: [seconds per step]}`` (the Trainer's under ``ours_name``).
        losses: ``{name: [loss per step]}``.
        reference: the batches the Trainer should see (``None``: not checked).
        batches_match: whether the Trainer's batch ``i`` equaled ``reference[i]`` for every step.
    """

    def __init__(self, ours_name: str = "ours") -> None:
        self.competitors: dict[str, Callable[[int], Tensor]] = {}
        self.reference: Sequence[Batch] | None = None
        self.ours_name = ours_name
        self.times: dict[str, list[float]] = {ours_name: []}
        self.losses: dict[str, list[float]] = {ours_name: []}
        self.batches_match = True
        self._step = 0
        self._resume = 0.0
        self._rng: dict[str, dict[str, Any]] = {}

    def add(self, name: str, step: Callable[[int], Tensor]) -> None:
        """Run ``step(i)`` after the Trainer's step ``i``, timed as competitor ``name``."""
        self.competitors[name] = step
        self.times[name], self.losses[name] = [], []

    def on_train_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._resume = time.perf_counter()

    def on_train_batch_start(
        self, trainer: L.Trainer, pl_module: L.LightningModule, batch: Any, batch_idx: int
    ) -> None:
        if self._step == 0:  # later steps draw from the state the module's previous step left
            seed_step(0)

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
            if name in self._rng:
                restore_torch_rng_state(self._rng[name])
            else:
                seed_step(i)
            start = time.perf_counter()
            loss = step(i)
            self.times[name].append(time.perf_counter() - start)
            self.losses[name].append(float(loss))
            self._rng[name] = capture_torch_rng_state()
        self._step += 1
        self._resume = time.perf_counter()


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
