"""Run the benchmarks: ``python -m benchmarks.run [--only NAME ...] [--quick] [--out DIR]``.

Each benchmark writes ``<out>/<name>.json`` (default ``benchmarks/results``) with its figures, the precision all
its competitors ran at (``precision``: the config's ``trainer.precision`` as resolved on this machine; pin it with
``--set trainer.precision=32-true``), the goals and whether they are met, the machine description and the wall
time; a summary is printed at the end.
``--quick`` runs every benchmark in a tiny configuration (tiny model, 2-3 steps): a check that it works, not
a measurement.
"""

from __future__ import annotations

import argparse
import importlib
import time
from collections.abc import Sequence
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from benchmarks.harness import EXTRA_OVERRIDES, RESULTS_DIR, machine_info, write_result
from benchmarks.process import quiet

BENCHMARKS = (
    "train_throughput",
    "st_throughput",
    "eval_overhead",
    "eval_scaling",
    "gradcache_memory",
    "data_pipeline",
    "scale",
    "planner",
    "gpu_throughput",
    "gpu_gradcache",
)


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.run", description=__doc__.splitlines()[0])
    parser.add_argument("--only", nargs="+", choices=BENCHMARKS, metavar="NAME", help=f"any of {BENCHMARKS}")
    parser.add_argument(
        "--quick", action="store_true", help="tiny configuration (a smoke test, not a measurement)"
    )
    parser.add_argument("--out", type=Path, default=RESULTS_DIR, help="results folder")
    parser.add_argument(
        "--set",
        nargs="+",
        default=[],
        metavar="KEY=VALUE",
        help="Hydra overrides applied to every benchmark's config, e.g. model.name_or_path=DIR",
    )
    return parser.parse_args(argv)


def run_one(name: str, quick: bool, out: Path) -> dict[str, Any]:
    """Run benchmark ``name``, write ``<out>/<name>.json`` and print its summary lines; returns the record."""
    module = importlib.import_module(f"benchmarks.{name}")
    started = datetime.now(timezone.utc).isoformat(timespec="seconds")
    machine = machine_info()
    start = time.perf_counter()
    with quiet():
        result = module.run(quick=quick)
    record = {
        "benchmark": name,
        "quick": quick,
        "started": started,
        "wall_s": time.perf_counter() - start,
        "overrides": list(EXTRA_OVERRIDES),
        "machine": machine,
        **result,
    }
    path = write_result(out, name, record)
    precision = record.get("precision") or "n/a (skipped)"
    print(f"[{name}] {record['wall_s']:.0f} s, precision {precision} -> {path}", flush=True)
    for line in module.summary(record):
        print(f"  {line}", flush=True)
    return record


def format_goals(records: Sequence[dict[str, Any]]) -> str:
    """A table of every goal: benchmark, goal, value, target, met."""
    rows = [("benchmark", "goal", "value", "target", "met")]
    for record in records:
        for g in record.get("goals", []):
            sign = ">=" if g["higher_is_better"] else "<="
            rows.append(
                (
                    record["benchmark"],
                    g["name"],
                    f"{g['value']:.4g}",
                    f"{sign} {g['target']:g}",
                    "yes" if g["met"] else "NO",
                )
            )
    widths = [max(len(row[i]) for row in rows) for i in range(5)]
    return "\n".join("  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)) for row in rows)


def main(argv: Sequence[str] | None = None) -> list[dict[str, Any]]:
    args = parse_args(argv)
    names = args.only or list(BENCHMARKS)
    EXTRA_OVERRIDES[:] = args.set
    machine = machine_info()
    print(
        f"machine: {machine['cpu']}, {machine['logical_cpus']} logical CPUs, torch {machine['torch']} "
        f"({machine['torch_threads']} threads), load average {machine['load_average_1_5_15']}",
        flush=True,
    )
    start = time.perf_counter()
    records = [run_one(name, args.quick, args.out) for name in names]
    print(f"\nall benchmarks: {time.perf_counter() - start:.0f} s\n{format_goals(records)}", flush=True)
    return records


if __name__ == "__main__":
    main()
