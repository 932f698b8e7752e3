"""The token store build's memory alone (issue 25), with a stub tokenizer so that only the data path counts.

For each size, :func:`benchmarks.scale.generate` writes the synthetic corpus of ``N`` ids × 9 languages into a
temporary folder with its own cache; one worker process builds its record table, a fresh one then loads the corpus
(the table cached), reads its RSS (``VmRSS``), resets the kernel's peak mark and builds the token store with a
tokenizer that gives every text three ids without any tokenisation, and reports the build's peak RSS, its growth over
the RSS before it, the distinct texts and a digest of the store's arrays (equal digests: equal stores). The real
tokenizer's build, its rate and the whole worker's memory are :mod:`benchmarks.scale`'s. Results in
``docs/benchmarks.md`` (Scale).

``python -m benchmarks.store_memory --ids 200000,1000000`` (about 12 GB of disk per million ids while it runs);
``--ids 2000`` is the quick check the tests run.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import shutil
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from benchmarks.process import current_rss_mb, peak_rss_mb, reset_peak_rss, run_worker, worker_main

NAME = "synthetic-scale"


def _stub_tokenizer() -> Any:
    from hybrid_ir.models.tokenizer import TextTokenizer

    class StubTokenizer(TextTokenizer):
        """Three ids a text (the second from its length), no tokenisation."""

        def __call__(self, texts: Sequence[str], kind: str) -> list[list[int]]:
            return [[1, len(t) % 7, 2] for t in texts]

        def fingerprint(self) -> str:
            return "stub"

    return StubTokenizer(None)


def work(config: dict[str, Any]) -> dict[str, Any]:
    """A worker: ``table`` builds the input's record table; ``store`` measures the store build (see above)."""
    from hybrid_ir.data.formats.jsonl import load_jsonl_corpus
    from hybrid_ir.data.runtime.token_store import open_token_store

    corpus = load_jsonl_corpus(config["path"], NAME)
    corpus.arrays  # noqa: B018 - the integer view, as a training start builds it
    if config["kind"] == "table":
        return {"ids": len(corpus)}
    before = current_rss_mb()
    reset_peak_rss()
    start = time.perf_counter()
    store = open_token_store(corpus, _stub_tokenizer())
    seconds = time.perf_counter() - start
    peak = peak_rss_mb()
    digest = hashlib.sha256()
    for array in (store.tokens, store.offsets, store.rows):
        digest.update(np.ascontiguousarray(array).tobytes())
    return {
        "n_ids": len(corpus),
        "rss_before_mb": before,
        "build_peak_rss_mb": peak,
        "growth_mb": peak - before,
        "build_s": seconds,
        "texts": len(store.offsets) - 1,
        "digest": digest.hexdigest()[:16],
    }


def measure(sizes: Sequence[int]) -> list[dict[str, Any]]:
    """One record of :func:`work` per size, each in fresh worker processes and a temporary cache."""
    from benchmarks.scale import generate

    results = []
    for n in sizes:
        folder = Path(tempfile.mkdtemp(prefix="hybrid_ir_store_memory_"))
        old_cache = os.environ.get("HYBRID_IR_CACHE")
        os.environ["HYBRID_IR_CACHE"] = str(folder / "cache")
        try:
            path = str(generate(folder / f"synthetic-{n}.jsonl", n))
            timeout = 3600 * max(1, -(-n // 200_000))
            run_worker("benchmarks.store_memory", {"kind": "table", "path": path}, timeout=timeout)
            results.append(
                run_worker("benchmarks.store_memory", {"kind": "store", "path": path}, timeout=timeout)
            )
        finally:
            if old_cache is None:
                os.environ.pop("HYBRID_IR_CACHE", None)
            else:
                os.environ["HYBRID_IR_CACHE"] = old_cache
            shutil.rmtree(folder, ignore_errors=True)
    return results


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks.store_memory", description=__doc__.splitlines()[0]
    )
    parser.add_argument("--ids", default="200000,1000000", help="comma-separated sizes (ids x 9 languages)")
    parser.add_argument("--out", type=Path, default=None, help="write the records to this JSON file")
    args = parser.parse_args(argv)
    results = measure([int(n) for n in args.ids.split(",")])
    for r in results:
        print(
            f"{r['n_ids']} ids: RSS before {r['rss_before_mb']:.0f} MB, build peak {r['build_peak_rss_mb']:.0f} MB "
            f"(+{r['growth_mb']:.0f} MB), {r['texts']} texts, {r['build_s']:.1f} s, digest {r['digest']}"
        )
    if len(results) > 1:
        print(
            f"peak ratio {results[-1]['n_ids']} / {results[0]['n_ids']} ids: "
            f"{results[-1]['build_peak_rss_mb'] / results[0]['build_peak_rss_mb']:.2f}"
        )
    if args.out is not None:
        args.out.write_text(json.dumps(results, indent=2) + "\n", encoding="utf-8")


if __name__ == "__main__":
    if sys.argv[1:2] == ["--worker"]:
        worker_main(sys.argv[1:], work)
    else:
        main()
