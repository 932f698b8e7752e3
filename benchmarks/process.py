"""Process-level helpers with no heavy imports (workers start fast): quiet output, peak resident memory, and
subprocess workers (one fresh process per configuration, so that its peak memory is its own)."""

from __future__ import annotations

import contextlib
import io
import json
import logging
import subprocess
import sys
import warnings
from collections.abc import Callable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]


@contextlib.contextmanager
def quiet() -> Iterator[None]:
    """Silence Lightning's info logs, library warnings and progress bars (stdout and stderr go to a buffer, so
    the cost of formatting them stays in the timings while the terminal stays readable)."""
    names = (
        "lightning",
        "lightning.pytorch",
        "lightning.fabric",
        "pytorch_lightning",
        "transformers",
        "sentence_transformers",
        "hybrid_ir",
    )
    levels = {name: logging.getLogger(name).level for name in names}
    for name in names:
        logging.getLogger(name).setLevel(logging.ERROR)
    try:
        sink = io.StringIO()
        with warnings.catch_warnings(), contextlib.redirect_stderr(sink), contextlib.redirect_stdout(sink):
            warnings.simplefilter("ignore")
            yield
    finally:
        for name, level in levels.items():
            logging.getLogger(name).setLevel(level)


def _status_kb(field: str) -> float | None:
    try:
        for line in Path("/proc/self/status").read_text(encoding="utf-8").splitlines():
            if line.startswith(field + ":"):
                return float(line.split()[1])
    except OSError:
        pass
    return None


def reset_peak_rss() -> bool:
    """Reset the kernel's peak-RSS mark of this process (``/proc/self/clear_refs``, Linux >= 4.0); whether it worked."""
    try:
        Path("/proc/self/clear_refs").write_text("5", encoding="utf-8")
    except OSError:
        return False
    return True


def current_rss_mb() -> float:
    """Resident set size now, in MiB."""
    kb = _status_kb("VmRSS")
    return float("nan") if kb is None else kb / 1024


def peak_rss_mb() -> float:
    """Peak resident set size since the start or the last :func:`reset_peak_rss`, in MiB
    (``VmHWM``; ``getrusage`` ``ru_maxrss`` where ``/proc`` is missing)."""
    kb = _status_kb("VmHWM")
    if kb is None:
        import resource

        kb = float(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss)
    return kb / 1024


def run_worker(module: str, config: Mapping[str, Any], timeout: float = 900.0) -> dict[str, Any]:
    """Run ``python -m <module> --worker '<config json>'`` in a fresh process and return the JSON object it
    prints on its last stdout line (a fresh process per configuration gives a clean peak-memory figure)."""
    cmd = [sys.executable, "-m", module, "--worker", json.dumps(dict(config))]
    proc = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=timeout, check=False)
    if proc.returncode != 0:
        raise RuntimeError(f"worker {module} {config} failed ({proc.returncode}):\n{proc.stderr[-3000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def worker_main(argv: Sequence[str], work: Callable[[dict[str, Any]], dict[str, Any]]) -> None:
    """Entry point of a worker module: parse ``--worker JSON``, run ``work`` and print its result as JSON."""
    if len(argv) != 2 or argv[0] != "--worker":
        raise SystemExit("usage: python -m benchmarks.<name> --worker '<config json>'")
    with quiet():
        result = work(json.loads(argv[1]))
    print(json.dumps(result))
