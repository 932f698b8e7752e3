"""Benchmark 5: GradCache's peak memory and throughput against the plain step, at growing batch sizes.

Inputs: one fixed batch of random token ids per batch size (queries of ``QUERY_TOKENS`` tokens, passages of the
model's ``max_length``, no padding), the tiny model of ``conf/model/tiny.yaml``.

* **Memory**: ``BiEncoderModule`` (``conf/train.yaml``'s module, loss and optimiser settings) driven by a
  ``lightning.Trainer`` with ``module.grad_cache_chunk_size`` null (plain) or set, each configuration in a fresh
  process. Its peak resident memory is ``VmHWM`` reset just before ``fit`` (model loading is not counted; the
  RSS before ``fit`` is the baseline, ``train_memory_mb`` = peak - baseline). ``ru_maxrss`` cannot be reset,
  so it is not used.
* **Throughput**: in this process, a plain and a GradCache :class:`~benchmarks.common.BareLoop` (the step the
  module runs, minus Lightning; :mod:`benchmarks.train_throughput` measures that part) from the same weights,
  alternating step by step on the same batch; dropout off, so both compute the same loss at every step
  (checked). Once with torch's default number of intra-op threads and once with one thread: GradCache runs
  many small operations (two passes over chunks of ``chunk`` texts), and when other programs keep the cores
  busy every multi-threaded operation can wait for a descheduled thread, which inflates exactly those costs;
  the one-thread figures show the cost of the algorithm itself.
"""

from __future__ import annotations

import sys
import time
from dataclasses import asdict, dataclass
from typing import Any

from benchmarks.process import run_worker, worker_main

NAME = "gradcache_memory"
QUERY_TOKENS = 32
VOCAB_LOW = 5
NO_DROPOUT = (
    "+model.config_overrides.hidden_dropout_prob=0.0",
    "+model.config_overrides.attention_probs_dropout_prob=0.0",
)


@dataclass(frozen=True)
class Settings:
    """Batch sizes, the GradCache chunk size, steps per memory worker, warm-up and timed throughput rounds."""

    batch_sizes: tuple[int, ...]
    chunk: int
    memory_steps: int
    warmup: int
    steps: int


FULL = Settings(batch_sizes=(32, 128, 512), chunk=32, memory_steps=1, warmup=1, steps=2)
QUICK = Settings(batch_sizes=(16,), chunk=4, memory_steps=1, warmup=1, steps=2)


def overrides(chunk: int | None, steps: int) -> list[str]:
    """Config overrides: the tiny model, the chunk size (``None``: plain), ``steps`` steps, no checkpoints."""
    return [
        "model=tiny",
        f"module.grad_cache_chunk_size={'null' if chunk is None else chunk}",
        f"trainer.max_steps={steps}",
        "+trainer.enable_checkpointing=false",
        "+trainer.enable_progress_bar=false",
    ]


def random_batch(batch_size: int, passage_tokens: int, vocab: int, seed: int = 0) -> dict[str, Any]:
    """Random ids: queries ``[B, QUERY_TOKENS]``, passages ``[B, passage_tokens]``, full attention masks."""
    import torch

    generator = torch.Generator().manual_seed(seed)
    q = torch.randint(VOCAB_LOW, vocab, (batch_size, QUERY_TOKENS), generator=generator)
    p = torch.randint(VOCAB_LOW, vocab, (batch_size, passage_tokens), generator=generator)
    return {
        "q_input_ids": q,
        "q_attention_mask": torch.ones_like(q),
        "p_input_ids": p,
        "p_attention_mask": torch.ones_like(p),
    }


def _build(config_overrides: list[str]) -> Any:
    """The ``BiEncoderModule`` of the composed config (seeded)."""
    import lightning as L
    from hydra.utils import instantiate

    from benchmarks.common import compose_config

    cfg = compose_config(config_overrides)
    L.seed_everything(cfg.seed, verbose=False)
    return cfg, instantiate(cfg.module, encoder=instantiate(cfg.model), loss=instantiate(cfg.loss))


def _batch_for(module: Any, batch_size: int) -> dict[str, Any]:
    encoder = module.encoder
    return random_batch(batch_size, encoder.text_tokenizer.max_length, encoder.model.config.vocab_size)


def work(config: dict[str, Any]) -> dict[str, Any]:
    """Memory worker: ``config`` = ``{batch_size, chunk, steps, precision}``; trains with Lightning, reports RSS
    (MiB)."""
    from hydra.utils import instantiate
    from torch.utils.data import DataLoader

    from benchmarks.process import current_rss_mb, peak_rss_mb, reset_peak_rss

    cfg, module = _build(
        [*overrides(config["chunk"], config["steps"]), f"trainer.precision={config['precision']}"]
    )
    loader = DataLoader([_batch_for(module, config["batch_size"])] * config["steps"], batch_size=None)
    trainer = instantiate(cfg.trainer, logger=False)
    before = current_rss_mb()
    reset = reset_peak_rss()
    trainer.fit(module, train_dataloaders=loader)
    return {**config, "rss_before_mb": before, "peak_rss_mb": peak_rss_mb(), "peak_reset": reset}


def throughput(batch_size: int, settings: Settings, threads: int) -> dict[str, Any]:
    """Plain and GradCache bare steps alternating on one batch (dropout off) with ``threads`` intra-op threads;
    times, pairs/s, losses."""
    import torch

    default_threads = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        return _alternate(batch_size, settings)
    finally:
        torch.set_num_threads(default_threads)


def _alternate(batch_size: int, settings: Settings) -> dict[str, Any]:
    """Warm-up and timed rounds of (plain step, GradCache step) from the same weights on the same batch."""
    from benchmarks.common import bare_loop_like, compare_timings, loss_agreement, seed_step

    total = settings.warmup + settings.steps
    cfg, module = _build([*overrides(None, total), *NO_DROPOUT])
    precision = str(cfg.trainer.precision)  # the memory workers' Trainer precision, for both loops
    batch = _batch_for(module, batch_size)
    loops = {
        "plain": bare_loop_like(module, total, precision=precision),
        "grad_cache": bare_loop_like(module, total, settings.chunk, precision=precision),
    }
    times: dict[str, list[float]] = {name: [] for name in loops}
    losses: dict[str, list[float]] = {name: [] for name in loops}
    for i in range(total):
        for name, loop in loops.items():
            seed_step(i)
            start = time.perf_counter()
            loss = loop.step(batch)
            times[name].append(time.perf_counter() - start)
            losses[name].append(float(loss))
    return {
        "precision": precision,
        "timings": compare_timings(times, settings.warmup, batch_size, ours="grad_cache"),
        "losses": loss_agreement(losses, ours="plain"),
    }


def run(quick: bool = False) -> dict[str, Any]:
    """Memory: one worker process per (batch size, plain | GradCache); throughput: in-process alternation."""
    import torch

    from benchmarks.common import compose_config

    settings = QUICK if quick else FULL
    # the workers do not see `--set`: they get the precision this process resolves, so every part runs at it
    precision = str(compose_config(overrides(None, 1)).trainer.precision)
    rows = []
    for batch_size in settings.batch_sizes:
        memory = {
            name: run_worker(
                "benchmarks.gradcache_memory",
                {
                    "batch_size": batch_size,
                    "chunk": chunk,
                    "steps": settings.memory_steps,
                    "precision": precision,
                },
            )
            for name, chunk in (("plain", None), ("grad_cache", settings.chunk))
        }
        train_mb = {name: m["peak_rss_mb"] - m["rss_before_mb"] for name, m in memory.items()}
        speed = {
            str(n): throughput(batch_size, settings, n) for n in dict.fromkeys((torch.get_num_threads(), 1))
        }
        rows.append(
            {
                "batch_size": batch_size,
                "chunk": settings.chunk,
                "memory": memory,
                "train_memory_mb": train_mb,
                "memory_ratio": train_mb["grad_cache"] / max(train_mb["plain"], 1e-9),
                "threads": {
                    n: {
                        "pairs_per_s": {k: s["timings"][k]["items_per_s"] for k in ("plain", "grad_cache")},
                        "throughput_ratio": s["timings"]["ratio_plain"],
                        **s,
                    }
                    for n, s in speed.items()
                },
            }
        )
    return {"settings": asdict(settings), "rows": rows, "goals": []}


def summary(result: dict[str, Any]) -> list[str]:
    lines = []
    for r in result["rows"]:
        mem = r["train_memory_mb"]
        speeds = "; ".join(
            f"{n} thread(s): {t['pairs_per_s']['plain']:.1f} vs {t['pairs_per_s']['grad_cache']:.1f} pairs/s "
            f"(x{t['throughput_ratio']:.2f} per round), loss diff {t['losses']['max_abs_diff_all']:.1e}"
            for n, t in r["threads"].items()
        )
        lines.append(
            f"tiny B={r['batch_size']:>3}: training memory plain {mem['plain']:.0f} MiB, GradCache(chunk "
            f"{r['chunk']}) {mem['grad_cache']:.0f} MiB (x{r['memory_ratio']:.2f}); plain vs GradCache: {speeds}"
        )
    return lines


if __name__ == "__main__":
    worker_main(sys.argv[1:], work)
