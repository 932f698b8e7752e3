"""Side-by-side benchmarks of the framework against plain PyTorch and sentence-transformers.

Run them with ``make bench`` or ``python -m benchmarks.run [--only NAME ...] [--quick]``; each writes
``benchmarks/results/<name>.json``. The figures and the machine they come from are in ``docs/benchmarks.md``.
"""
