"""Benchmark 1: training throughput (pairs/s) of our step against a bare PyTorch loop.

*Ours*: ``BiEncoderModule.training_step`` driven by the ``lightning.Trainer`` that ``train.py`` builds
(:func:`hybrid_ir.tasks.train.build_components`: ``conf/trainer/cpu.yaml``'s precision and logging interval, the
default per-step callbacks: learning-rate monitor and tqdm bar; CSV logger; no checkpoint, export or evaluation
callbacks) on the ``ParallelQADataModule``'s batches (XQuAD-R, hybrid sampler, ``data.batch_size``).
*Bare*: :class:`~benchmarks.bare_loop.BareLoop`: a copy of the same encoder, the same InfoNCE loss, AdamW groups,
schedule and clipping, at the Trainer's precision, on the same batches collated up front. The two alternate step
by step in one process (:class:`~benchmarks.timing.InterleavedSteps`), both seeded alike, so their losses must
agree at every step.

Goal: ours >= 0.95 x bare (median step times).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

from benchmarks.bare_loop import bare_loop_like
from benchmarks.harness import bench_config, build_training, joined_precision, precollate
from benchmarks.timing import InterleavedSteps, compare_timings, goal, loss_agreement

NAME = "train_throughput"
TARGET = 0.95


@dataclass(frozen=True)
class Case:
    """One model: ``conf/model/<model>.yaml``, dropped warm-up steps and timed steps per competitor, and
    further Hydra overrides (e.g. ``trainer=gpu``, ``data.batch_size=128``)."""

    model: str
    warmup: int
    steps: int
    overrides: tuple[str, ...] = ()


FULL = (Case("tiny", 2, 16), Case("e5-small", 1, 6))
QUICK = (Case("tiny", 1, 2),)


def training_overrides(model: str, total_steps: int) -> list[str]:
    """Config overrides of a timed run: the model, CSV logging, ``total_steps`` steps, the default callbacks but
    the checkpoint, export and evaluation ones (which write files or evaluate rather than train)."""
    return [
        f"model={model}",
        "logger=csv",
        f"trainer.max_steps={total_steps}",
        "+trainer.enable_checkpointing=false",
        "~callbacks.model_checkpoint",
        "~callbacks.export_encoder",
        "~callbacks.zero_shot_eval",
    ]


def measure(case: Case) -> dict[str, Any]:
    """Run ``case`` and return timings, the throughput ratio and the loss agreement."""
    total = case.warmup + case.steps
    cfg = bench_config([*training_overrides(case.model, total), *case.overrides])
    timer = InterleavedSteps()
    run = build_training(cfg, [timer])
    batches = precollate(run.datamodule, total)
    precision = str(run.trainer.precision)
    bare = bare_loop_like(run.module, total, device=run.trainer.strategy.root_device, precision=precision)
    timer.add("bare", lambda i: bare.step(batches[i]))
    timer.reference = batches
    run.trainer.fit(run.module, datamodule=run.datamodule)
    size = int(cfg.data.batch_size)
    timed = batches[case.warmup :]
    config = run.encoder.model.config
    return {
        "case": asdict(case),
        "precision": precision,
        "architecture": {
            "layers": int(config.num_hidden_layers),
            "hidden": int(config.hidden_size),
            "ffn": int(config.intermediate_size),
            "vocab": int(config.vocab_size),
            "parameters": sum(p.numel() for p in run.encoder.parameters()),
        },
        "batch_size": size,
        "seq_lengths": [[int(b["q_input_ids"].shape[1]), int(b["p_input_ids"].shape[1])] for b in timed],
        "batches_match": timer.batches_match,
        "timings": compare_timings(timer.times, case.warmup, size),
        "losses": loss_agreement(timer.losses),
    }


def run(quick: bool = False) -> dict[str, Any]:
    """All cases; ``goals`` has one entry per case (ours/bare throughput, target 0.95)."""
    return run_cases(QUICK if quick else FULL)


def run_cases(cases: tuple[Case, ...]) -> dict[str, Any]:
    """:func:`measure` each case; ``goals``: ours / bare throughput >= ``TARGET`` for each."""
    results = [measure(case) for case in cases]
    goals = [
        goal(f"{label(c)}: ours / bare throughput", c["timings"]["ratio_bare"], TARGET, True) for c in results
    ]
    return {"precision": joined_precision(results), "cases": results, "goals": goals}


def label(result: dict[str, Any]) -> str:
    """A case's name: the model, and its overrides if any."""
    case = result["case"]
    return f"{case['model']} [{' '.join(case['overrides'])}]" if case["overrides"] else case["model"]


def summary(result: dict[str, Any]) -> list[str]:
    """One line per case."""
    lines = []
    for c in result["cases"]:
        t = c["timings"]
        lines.append(
            f"{label(c):>9} ({c['precision']}): ours {t['ours']['items_per_s']:.2f} pairs/s, "
            f"bare {t['bare']['items_per_s']:.2f} pairs/s (medians); ours/bare per round {t['ratio_bare']:.3f}x, "
            f"of medians {t['median_ratio_bare']:.3f}x, of means {t['mean_ratio_bare']:.3f}x; "
            f"our extra time {1e3 * t['extra_s_vs_bare']:.1f} ms/step; "
            f"first-step loss diff {c['losses']['max_abs_diff_first']:.1e}"
        )
    return lines
