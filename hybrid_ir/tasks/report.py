"""The report of finished runs: ``python report.py <run or multirun dirs> [--dataset D] [--x KEY] [--each-eval]``
(also ``make report ARGS=...``): a table (CSV, Markdown), charts and significance tests, written next to the runs.
What it computes is :mod:`hybrid_ir.analysis.report`; the options are in ``docs/usage.md``."""

from __future__ import annotations

import argparse
from collections.abc import Sequence
from pathlib import Path

from hybrid_ir.analysis.report import write_report
from hybrid_ir.utils.cli import report_expected_errors


@report_expected_errors
def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="report.py", description=__doc__.split("\n", 1)[0])
    parser.add_argument("roots", nargs="+", type=Path, help="multirun directories (searched recursively)")
    parser.add_argument("--dataset", default=None, help="evaluation dataset (default: the first one)")
    parser.add_argument("--out", type=Path, default=None, help="output folder (default: the first root)")
    parser.add_argument("--n-resamples", type=int, default=10000)
    parser.add_argument(
        "--x", default=None, metavar="KEY", help="a numeric override the runs sweep, e.g. sampler.alpha"
    )
    parser.add_argument(
        "--each-eval", action="store_true", help="a row per evaluation of a run (e.g. after each epoch)"
    )
    args = parser.parse_args(argv)
    out = args.out or args.roots[0]
    result = write_report(args.roots, args.dataset, out, args.n_resamples, args.x, args.each_eval)
    print(result["markdown"])


if __name__ == "__main__":
    main()
