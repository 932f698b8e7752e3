"""Benchmark 9: the data layer at scale (issue 12), on a seeded synthetic parallel corpus.

:func:`generate` writes ``N`` ids x 9 languages in the project's JSONL format: questions of 6-14 words and passages
of 20-60, spans of XQuAD-R's paragraphs in Arabic, German, English, Spanish, Hindi, Russian, Thai, Turkish and
Chinese (Latin, Arabic, Devanagari, Cyrillic, Thai and CJK scripts); one id in ten shares its passage with the id
before it, so grouping by passage text is exercised. For each ``N`` two fresh worker processes (so that each peak
resident memory is its own) measure:

* ``data``: building the JSONL's record table from an empty cache (``table_build_s``, its peak RSS
  ``table_build_peak_rss_mb``; the peak mark is then reset), loading the corpus from the cached table (``load_s``,
  ``rss_after_load_mb``), planning one epoch with the array planner (``plan_s``, hybrid, batch
  32), building the token store with the tiny model's tokenizer from an empty cache (``store_build_s``, its own peak
  RSS ``store_build_peak_rss_mb`` after a reset of the peak mark, its rate ``store_tokens_per_s`` next to
  ``bare_tokens_per_s``, the fast tokenizer's Rust pipeline alone over a sample of the same distinct texts in a helper
  process, the median of :data:`BARE_PASSES` passes just before and as many just after the build, all kept in
  ``bare_tokens_per_s_passes``)
  and mapping the built store (``store_open_s``), the per-batch fetch (``fetch``: the 32 ``PairDataset`` lookups and the
  padding collate of a batch, over the epoch's first batches) and the process's peak RSS;
* ``train``: ``train.py model=tiny data=jsonl trainer.max_steps=5 callbacks=none logger=none`` as ``train.py``
  builds it, with the record table and the store cached: time from composing the config to the first training step
  (``start_to_first_step_s``), to the end of the 5 steps, and the process's peak RSS.

Goals (issue 12, at 200 k ids): peak RSS of the training process <= 2.5 GB, start to first step <= 30 s, store build
<= 10 min; per-batch fetch <= 2 ms at every N. Issue 25: the store build's tokens/s >= 0.9 x the bare tokenizer's at
every N; its peak RSS <= 3 GB at >= 1 M ids and within 1.25 x of the 200 k build's when both run. The planner alone (no
texts) is :mod:`benchmarks.planner`. ``--quick`` runs N = 2,000. The environment variable ``HYBRID_IR_SCALE_IDS``
(comma-separated, e.g. ``1000000``) replaces the sizes of a full run (the corpus, its record table and its store need
about 12 GB of disk per million ids while they exist).
"""

from __future__ import annotations

import json
import multiprocessing
import os
import shutil
import sys
import tempfile
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from benchmarks.process import peak_rss_mb, reset_peak_rss, run_worker, worker_main

if TYPE_CHECKING:
    from hybrid_ir.data.corpus import ParallelCorpus

NAME = "scale"
LANGS = ["ar", "de", "en", "es", "hi", "ru", "th", "tr", "zh"]
# Languages written without spaces between words: spans are cut in characters, this many per word.
CHARS_PER_WORD = {"th": 5, "zh": 2}
FULL = (20_000, 200_000)
QUICK = (2_000,)
BATCH = 32
# Distinct texts the bare tokenizer pass reads (its rate, not its total, is compared with the store build's).
BARE_SAMPLE = 100_000
# Bare passes over that sample just before and again just after the store build: the rate on one machine moves by
# 20 % from one ~10 s pass to the next (same work, same process), so the build is compared with their median.
BARE_PASSES = 3
CORPUS = "synthetic-scale"  # the dataset's name (its token store is removed after the run)
FETCH_BATCHES = 200


def _units(lang: str) -> tuple[list[str], str]:
    """The words (characters for Thai and Chinese) of XQuAD-R's paragraphs in ``lang`` and their separator."""
    from hybrid_ir.data.formats.download import ensure_dataset
    from hybrid_ir.data.formats.lareqa_files import parse_lareqa_file
    from hybrid_ir.utils.paths import resolve_data_root

    root = ensure_dataset(resolve_data_root(None), "xquad-r", LANGS)
    text = " ".join(par.context for par in parse_lareqa_file(root / "xquad-r" / f"{lang}.json"))
    if lang in CHARS_PER_WORD:
        return [c for c in text if not c.isspace()], ""
    return text.split(), " "


def generate(path: Path, n_ids: int, seed: int = 0) -> Path:
    """Write ``n_ids`` parallel ids x 9 languages as JSONL (see the module docstring); deterministic in ``seed``.

    Each text is a span of XQuAD-R's paragraphs in its language (real words and scripts, so tokenisation costs
    what it costs on real data) at a random offset: questions of 6-14 words ending in ``?``, passages of 20-60
    words; one id in ten repeats the passage of the id before it (in every language)."""
    rng = np.random.default_rng(seed)
    q_len = rng.integers(6, 15, size=n_ids)
    p_len = rng.integers(20, 61, size=n_ids)
    shares = rng.random(n_ids) < 0.1
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", encoding="utf-8") as out:
        for lang in LANGS:
            units, sep = _units(lang)
            scale = CHARS_PER_WORD.get(lang, 1)
            lang_rng = np.random.default_rng([seed, LANGS.index(lang)])
            starts = lang_rng.integers(len(units) - 61 * scale, size=(n_ids, 2))
            passage = ""
            for i in range(n_ids):
                q0, p0 = int(starts[i, 0]), int(starts[i, 1])
                question = sep.join(units[q0 : q0 + q_len[i] * scale]) + "?"
                if not (i and shares[i]):
                    passage = sep.join(units[p0 : p0 + p_len[i] * scale])
                record = {"id": f"s{i:07d}", "lang": lang, "question": question, "passage": passage}
                out.write(json.dumps(record, ensure_ascii=False) + "\n")
    return path


def _tokenizer():
    from benchmarks.harness import bench_config
    from hybrid_ir.tasks.instantiate import instantiate

    return instantiate(bench_config(["model=tiny"]).model).text_tokenizer


def measure_data(config: dict[str, Any]) -> dict[str, Any]:
    """The ``data`` worker: load, plan, build and map the store, fetch batches (see the module docstring)."""
    from hybrid_ir.data.formats.inputs import TableInput
    from hybrid_ir.data.formats.jsonl import load_jsonl_corpus
    from hybrid_ir.data.formats.record_table import open_record_table
    from hybrid_ir.data.planning.planner import plan_epoch
    from hybrid_ir.data.runtime.dataset import PairDataset
    from hybrid_ir.data.runtime.token_store import open_token_store, store_path

    start = time.perf_counter()
    table = open_record_table(TableInput("jsonl", Path(config["path"])))
    table_build_s = time.perf_counter() - start
    assert table.built
    del table
    table_build_rss = peak_rss_mb()
    reset_peak_rss()
    start = time.perf_counter()
    corpus = load_jsonl_corpus(config["path"], CORPUS)
    load_s = time.perf_counter() - start
    rss_loaded = peak_rss_mb()
    start = time.perf_counter()
    corpus.arrays  # noqa: B018 - the integer view, built once per corpus
    arrays_s = time.perf_counter() - start
    start = time.perf_counter()
    plan = plan_epoch([corpus], "hybrid", BATCH, 0.5, seed=0, epoch=1)
    plan_s = time.perf_counter() - start
    tokenizer = _tokenizer()
    shutil.rmtree(store_path(corpus, tokenizer), ignore_errors=True)  # one left by an earlier run
    # The bare tokenizer's rate, just before and just after the build, in a helper process of its own.
    bare = ProcessPoolExecutor(1, mp_context=multiprocessing.get_context("spawn"))
    bare_before = bare.submit(_bare_passes, str(config["path"])).result()
    rss_before_store = peak_rss_mb()
    reset_peak_rss()
    start = time.perf_counter()
    store = open_token_store(corpus, tokenizer)
    store_build_s = time.perf_counter() - start
    store_build_rss = peak_rss_mb()
    bare_after = bare.submit(_bare_passes, str(config["path"])).result()
    bare.shutdown()
    start = time.perf_counter()
    mapped = open_token_store(corpus, tokenizer)
    store_open_s = time.perf_counter() - start
    assert store.built and not mapped.built
    dataset = PairDataset([corpus], tokenizer)
    fetch = []
    for i in range(min(FETCH_BATCHES, len(plan))):
        start = time.perf_counter()
        dataset.collate([dataset[ref] for ref in plan.pairs(i)])
        fetch.append(time.perf_counter() - start)
    store_mb = sum(f.stat().st_size for f in store.path.iterdir()) / 2**20
    table_mb = sum(f.stat().st_size for f in corpus.table.path.iterdir()) / 2**20
    return {
        "table_build_s": table_build_s,
        "table_build_peak_rss_mb": table_build_rss,
        "table_mb": table_mb,
        "ids": len(corpus),
        "pairs": sum(len(by) for by in corpus.pairs.values()),
        "load_s": load_s,
        "rss_after_load_mb": rss_loaded,
        "arrays_s": arrays_s,
        "plan_s": plan_s,
        "batches_per_epoch": len(plan),
        "store_build_s": store_build_s,
        "rss_before_store_mb": rss_before_store,
        "store_build_peak_rss_mb": store_build_rss,
        "store_tokens_per_s": int(store.offsets[-1]) / store_build_s,
        "bare_tokens_per_s": float(np.median(bare_before + bare_after)),
        "bare_tokens_per_s_passes": bare_before + bare_after,
        "store_open_s": store_open_s,
        "store_mb": store_mb,
        "store_tokens": int(store.offsets[-1]),
        "fetch_median_ms": 1e3 * float(np.median(fetch)),
        "fetch_p90_ms": 1e3 * float(np.percentile(fetch, 90)),
        "peak_rss_mb": peak_rss_mb(),
    }


def bare_sample(corpus: ParallelCorpus, tokenizer: Any, sample: int = BARE_SAMPLE) -> list[str]:
    """Up to ``sample`` of the distinct texts the store tokenises, spread evenly over questions and passages, with
    their prefixes: what :func:`bare_tokenizer_rate` tokenises."""
    from hybrid_ir.data.runtime.dedup import first_appearance, text_hashes
    from hybrid_ir.data.runtime.token_store import KINDS, take_texts

    table = corpus.text_rows()[0]
    texts = []
    for kind, column in enumerate(("question", "passage")):
        firsts = first_appearance(text_hashes(table.column(column)), len(table))[1].between()
        picked = firsts[np.linspace(0, len(firsts) - 1, min(sample // 2, len(firsts))).astype(np.int64)]
        prefix = tokenizer.prefix(KINDS[kind])
        texts += [prefix + t.strip() for t in take_texts(table.column(column), picked)]
    return texts


def bare_tokenizer_rate(texts: list[str], pipeline: Any) -> float:
    """Tokens per second of the fast tokenizer alone: its Rust pipeline's fastest batch call
    (``encode_batch_fast``, every core it uses by itself) over the prepared texts in chunks of the store's size,
    nothing read back but the lengths: the rate the store build is compared with."""
    from hybrid_ir.data.runtime.token_store import CHUNK

    tokens = 0
    start = time.perf_counter()
    for first in range(0, len(texts), CHUNK):
        tokens += sum(
            map(len, pipeline.encode_batch_fast(texts[first : first + CHUNK], add_special_tokens=True))
        )
    return tokens / (time.perf_counter() - start)


_BARE: tuple[list[str], Any] | None = None


def _bare_passes(path: str, passes: int = BARE_PASSES) -> list[float]:
    """``passes`` bare passes in the helper process of :func:`measure_data` (the sample is prepared at the first
    call and kept for the next, so every pass reads the same texts): its own process, so that neither the sample nor
    the pages it touched count in the data worker's memory."""
    global _BARE
    if _BARE is None:
        from hybrid_ir.data.formats.jsonl import load_jsonl_corpus

        tokenizer = _tokenizer()
        _BARE = bare_sample(load_jsonl_corpus(path, CORPUS), tokenizer), tokenizer.rust_pipeline()
    return [bare_tokenizer_rate(*_BARE) for _ in range(passes)]


def measure_train(config: dict[str, Any]) -> dict[str, Any]:
    """The ``train`` worker: 5 steps of the tiny model as ``train.py`` builds them, the store already cached."""
    import lightning as L

    from benchmarks.harness import bench_config, build_training

    class FirstStep(L.Callback):
        def __init__(self) -> None:
            self.at: float | None = None

        def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
            if self.at is None:
                self.at = time.perf_counter()

    start = time.perf_counter()
    overrides = [
        "model=tiny",
        "data=jsonl",
        f"data.train.0.path={config['path']}",
        f"data.train.0.name={CORPUS}",
        "trainer.max_steps=5",
        "callbacks=none",
        "logger=none",
        "trainer.precision=32-true",
    ]
    first = FirstStep()
    run = build_training(bench_config(overrides), [first])
    run.trainer.fit(run.module, datamodule=run.datamodule)
    end = time.perf_counter()
    assert first.at is not None and run.trainer.global_step == 5
    return {
        "start_to_first_step_s": first.at - start,
        "start_to_5_steps_s": end - start,
        "peak_rss_mb": peak_rss_mb(),
    }


def work(config: dict[str, Any]) -> dict[str, Any]:
    kind = config["kind"]
    return measure_data(config) if kind == "data" else measure_train(config)


def full_sizes() -> tuple[int, ...]:
    """The sizes of a full run: :data:`FULL`, or ``HYBRID_IR_SCALE_IDS`` (comma-separated ids) when set."""
    raw = os.environ.get("HYBRID_IR_SCALE_IDS", "").strip()
    if not raw:
        return FULL
    try:
        sizes = tuple(int(part) for part in raw.split(","))
    except ValueError:
        raise ValueError(
            f"HYBRID_IR_SCALE_IDS={raw!r}: expected comma-separated numbers of ids, e.g. 1000000"
        ) from None
    if any(n < 1 for n in sizes):
        raise ValueError(f"HYBRID_IR_SCALE_IDS={raw!r}: every number of ids must be positive")
    return sizes


def run(quick: bool = False, sizes: tuple[int, ...] | None = None) -> dict[str, Any]:
    """Generate each size's corpus in a temporary folder, run both workers, remove the corpus and its store."""
    from benchmarks.timing import goal

    cases = []
    for n in sizes or (QUICK if quick else full_sizes()):
        folder = Path(tempfile.mkdtemp(prefix="hybrid_ir_scale_"))
        try:
            start = time.perf_counter()
            path = generate(folder / f"synthetic-{n}.jsonl", n)
            generate_s = time.perf_counter() - start
            # an hour per 200 k ids: the store build is CPU-bound and grows with the corpus
            timeout = 3600 * max(1, -(-n // 200_000))
            data = run_worker("benchmarks.scale", {"kind": "data", "path": str(path)}, timeout=timeout)
            train = run_worker("benchmarks.scale", {"kind": "train", "path": str(path)}, timeout=timeout)
            cases.append(
                {
                    "n_ids": n,
                    "file_mb": path.stat().st_size / 2**20,
                    "generate_s": generate_s,
                    "data": data,
                    "train": train,
                }
            )
        finally:
            shutil.rmtree(folder, ignore_errors=True)
            _remove_caches()
    goals = []
    for c in cases:
        goals.append(
            goal(f"{c['n_ids']} ids: fetch per batch (ms)", c["data"]["fetch_median_ms"], 2.0, False)
        )
        if c["n_ids"] >= 200_000:
            goals += [
                goal(f"{c['n_ids']} ids: training peak RSS (MB)", c["train"]["peak_rss_mb"], 2560.0, False),
                goal(
                    f"{c['n_ids']} ids: start to first step (s)",
                    c["train"]["start_to_first_step_s"],
                    30.0,
                    False,
                ),
                goal(f"{c['n_ids']} ids: store build (s)", c["data"]["store_build_s"], 600.0, False),
            ]
        goals.append(
            goal(
                f"{c['n_ids']} ids: store build tokens/s / bare tokenizer tokens/s",
                c["data"]["store_tokens_per_s"] / c["data"]["bare_tokens_per_s"],
                0.9,
                True,
            )
        )
        if c["n_ids"] >= 1_000_000:
            goals.append(
                goal(
                    f"{c['n_ids']} ids: store build peak RSS (MB)",
                    c["data"]["store_build_peak_rss_mb"],
                    3072,
                    False,
                )
            )
    by_n = {c["n_ids"]: c["data"]["store_build_peak_rss_mb"] for c in cases}
    for n in sorted(by_n):
        if n > 200_000 and 200_000 in by_n:
            goals.append(
                goal(f"store build peak RSS, {n} ids / 200000 ids", by_n[n] / by_n[200_000], 1.25, False)
            )
    return {"precision": "32-true", "cases": cases, "goals": goals}


def _remove_caches() -> None:
    """Remove the token stores and record tables of the synthetic corpora (they serve only this benchmark)."""
    from hybrid_ir.utils.paths import cache_dir

    for pattern, folder in ((f"{CORPUS}-*", "stores"), ("synthetic-*", "tables")):
        for path in cache_dir(folder).glob(pattern):
            if path.is_dir():
                shutil.rmtree(path, ignore_errors=True)
            else:
                path.unlink(missing_ok=True)


def summary(result: dict[str, Any]) -> list[str]:
    lines = []
    for c in result["cases"]:
        d, t = c["data"], c["train"]
        lines.append(
            f"{c['n_ids']:>9} ids ({d['pairs']} pairs, {c['file_mb']:.0f} MB): table build {d['table_build_s']:.1f} s "
            f"({d['table_mb']:.0f} MB), load {d['load_s']:.1f} s, plan "
            f"{d['plan_s']:.2f} s, store build {d['store_build_s']:.1f} s / open {1e3 * d['store_open_s']:.0f} ms "
            f"({d['store_mb']:.0f} MB; peak RSS {d['store_build_peak_rss_mb']:.0f} MB, "
            f"{d['rss_before_store_mb']:.0f} MB before; {d['store_tokens_per_s'] / 1e3:.0f} k tokens/s vs "
            f"bare tokenizer {d['bare_tokens_per_s'] / 1e3:.0f} k (median of passes "
            f"{'/'.join(f'{r / 1e3:.0f}' for r in d['bare_tokens_per_s_passes'])} k), ratio "
            f"{d['store_tokens_per_s'] / d['bare_tokens_per_s']:.2f}), fetch {d['fetch_median_ms']:.2f} ms/batch, "
            "data peak RSS "
            f"{d['peak_rss_mb']:.0f} MB; train: first step {t['start_to_first_step_s']:.1f} s, 5 steps "
            f"{t['start_to_5_steps_s']:.1f} s, peak RSS {t['peak_rss_mb']:.0f} MB"
        )
    return lines


if __name__ == "__main__":
    worker_main(sys.argv[1:], work)
