"""Names and formats of the files an evaluation writes into its output folder (one home for writer and reader).

* ``metrics.json``: the evaluation records;
* ``per_query/<stem>.csv.gz``: per-query values of one dataset and evaluation tag, one CSV (gzip) with a header
  row of column names; an empty cell is a missing value (``None``);
* ``plots/<stem>__<figure>.png``.

``<stem>`` is :func:`output_stem`: ``<dataset>__<tag>`` with characters unsafe in file names replaced.
"""

from __future__ import annotations

import csv
import gzip
import io
import re
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from hybrid_ir.utils.errors import DataError
from hybrid_ir.utils.io import atomic_write

METRICS_FILE = "metrics.json"
PER_QUERY_DIR = "per_query"
PLOTS_DIR = "plots"
# Per-query columns holding text; every other column holds numbers.
TEXT_COLUMNS = frozenset({"qid", "lang", "setting", "target"})


def safe_name(text: str) -> str:
    """``text`` with every character outside ``[A-Za-z0-9._-]`` replaced by ``_`` (for file names)."""
    return re.sub(r"[^A-Za-z0-9._-]", "_", text)


def output_stem(dataset: str, tag: str) -> str:
    """The file-name stem of the outputs of ``dataset`` evaluated under ``tag``."""
    return f"{safe_name(dataset)}__{safe_name(tag)}"


def per_query_path(out_dir: str | Path, dataset: str, tag: str) -> Path:
    """``<out_dir>/per_query/<stem>.csv.gz``."""
    return Path(out_dir) / PER_QUERY_DIR / f"{output_stem(dataset, tag)}.csv.gz"


def plot_path(out_dir: str | Path, dataset: str, tag: str, figure: str) -> Path:
    """``<out_dir>/plots/<stem>__<figure>.png``."""
    return Path(out_dir) / PLOTS_DIR / f"{output_stem(dataset, tag)}__{figure}.png"


def _cell(value: Any) -> str:
    """A CSV cell: ``repr`` of a float (exact round trip), ``""`` for ``None``."""
    if value is None:
        return ""
    return repr(float(value)) if isinstance(value, float) else str(value)


def write_per_query(path: str | Path, columns: Mapping[str, Sequence[Any]]) -> Path:
    """Write equal-length ``columns`` as a gzip CSV atomically (see the module docstring)."""
    names = list(columns)
    lengths = {len(columns[name]) for name in names}
    if len(lengths) > 1:
        raise ValueError(f"per-query columns differ in length: { {n: len(columns[n]) for n in names} }")
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(names)
    writer.writerows(zip(*([_cell(v) for v in columns[name]] for name in names), strict=True))

    def _write(tmp: str) -> None:
        with gzip.open(tmp, "wt", encoding="utf-8", newline="") as fh:
            fh.write(buf.getvalue())

    return atomic_write(path, _write)


def read_per_query(path: str | Path) -> dict[str, list[Any]]:
    """Read a file of :func:`write_per_query` -> columns (:data:`TEXT_COLUMNS` as strings, the others as floats,
    empty cells as ``None``)."""
    path = Path(path)
    if not path.is_file():
        raise DataError(
            path, "file", "not found; expected the per-query CSV of this evaluation (eval.per_query=true)"
        )
    with gzip.open(path, "rt", encoding="utf-8", newline="") as fh:
        rows = list(csv.reader(fh))
    if not rows:
        raise DataError(path, "line 1", "empty file; expected a header row of column names")
    names, columns = rows[0], {name: [] for name in rows[0]}
    for lineno, row in enumerate(rows[1:], start=2):
        if len(row) != len(names):
            raise DataError(path, f"line {lineno}", f"expected {len(names)} cells, got {len(row)}")
        for name, cell in zip(names, row, strict=True):
            if name in TEXT_COLUMNS:
                columns[name].append(cell)
                continue
            try:
                columns[name].append(None if cell == "" else float(cell))
            except ValueError:
                raise DataError(
                    path, f"line {lineno}", f"column {name!r}: {cell!r} is not a number"
                ) from None
    return columns
