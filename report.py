"""Report finished runs: ``python report.py multirun/train/<date>/ --dataset mlqa-r`` (see docs/usage.md)."""

from hybrid_ir.tasks.report import main

if __name__ == "__main__":
    main()
