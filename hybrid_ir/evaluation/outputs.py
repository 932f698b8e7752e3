"""Names and formats of the files an evaluation writes into its output folder (one home for writer and reader).

* ``metrics.json``: the evaluation records;
* ``per_query/<stem>.csv.gz``: per-query values of one dataset and evaluation tag, one CSV (gzip) with a header
  row of column names; an empty cell is a missing value (``None``);
* ``plots/<stem>__<figure>.png``.

``<stem>`` is :func:`output_stem`: ``<dataset>__<tag>`` with characters unsafe in file names replaced.

The same records as a fixed-width text table (:func:`format_table`, printed after an evaluation; :func:`brief`, one
line per dataset): :data:`LAREQA_COLUMNS` are the headline LAReQA metrics (also the columns of
:mod:`hybrid_ir.analysis.report`); MIRACL datasets show their ``ndcg_at{k}`` and ``recall_at{k}`` macro averages.
The files and metrics are described in ``docs/usage.md`` and ``docs/method.md``.
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


LAREQA_COLUMNS = ("map_mono", "map_cross", "map_multi", "rank_distance")
_MIRACL_COLUMN = re.compile(r"^(ndcg|recall)_at(\d+)$")


def brief(scalars: Mapping[str, float]) -> str:
    """The table's metrics of one dataset as ``name=value`` pairs (for the log)."""
    keys = [k for k in (*LAREQA_COLUMNS, *sorted(scalars)) if k in scalars and _column_header(k)]
    return ", ".join(f"{k}={scalars[k]:.4f}" for k in dict.fromkeys(keys))


def _column_header(key: str) -> str | None:
    """Header of a table column, or ``None`` when ``key`` is not shown in the table."""
    if key in LAREQA_COLUMNS:
        return "rank_dist" if key == "rank_distance" else key
    match = _MIRACL_COLUMN.match(key)
    if match:
        return f"{'nDCG' if match.group(1) == 'ndcg' else 'R'}@{match.group(2)}"
    return None


def _table_columns(records: Sequence[Mapping[str, Any]]) -> dict[str, list[str]]:
    """Per dataset (in order of first appearance), the scalar keys shown in the table, in display order."""
    datasets: dict[str, list[str]] = {}
    for record in records:
        for name, summary in record.get("datasets", {}).items():
            keys = datasets.setdefault(name, [])
            keys.extend(k for k in summary.get("scalars", {}) if _column_header(k) and k not in keys)
    order = {key: i for i, key in enumerate(LAREQA_COLUMNS)}
    for keys in datasets.values():
        keys.sort(key=lambda k: (order.get(k, len(order)), k))
    return datasets


def _table_cell(scalars: Mapping[str, float], key: str, width: int) -> str:
    return f"{scalars[key]:>{width}.4f}" if key in scalars else f"{'-':>{width}}"


def format_table(records: Sequence[Mapping[str, Any]]) -> str:
    """A fixed-width table of evaluation records (as in ``metrics.json``).

    Rows: one per record (``tag``, ``step``). Column groups, separated by ``|``: one per dataset (its name
    above), in order of first appearance; in each, those of ``map_mono``, ``map_cross``, ``map_multi``,
    ``rank_distance`` (LAReQA) and ``ndcg_at{k}``, ``recall_at{k}`` (MIRACL macro averages) that some record
    has. Values with 4 decimals; missing values: ``-``.
    """
    datasets = _table_columns(records)
    tags = [str(r.get("tag", "")) for r in records]
    steps = ["-" if r.get("step") is None else str(r["step"]) for r in records]
    tag_w, step_w = max([3, *map(len, tags)]), max([4, *map(len, steps)])
    widths: dict[str, list[int]] = {}
    for name, keys in datasets.items():
        widths[name] = [max(8, len(_column_header(k) or "")) for k in keys] or [0]
        spare = len(name) - (sum(widths[name]) + len(widths[name]) - 1)
        widths[name][-1] += max(0, spare)
    top = [" " * (tag_w + 1 + step_w)]
    head = [f"{'tag':<{tag_w}} {'step':>{step_w}}"]
    for name, keys in datasets.items():
        top.append(f"{name:<{sum(widths[name]) + len(widths[name]) - 1}}")
        headers = [_column_header(k) or "" for k in keys] or [""]
        head.append(" ".join(f"{h:>{w}}" for h, w in zip(headers, widths[name], strict=True)))
    lines = [" | ".join(top), " | ".join(head)]
    lines.append("-" * len(lines[1]))
    for record, tag, step in zip(records, tags, steps, strict=True):
        cells = [f"{tag:<{tag_w}} {step:>{step_w}}"]
        for name, keys in datasets.items():
            scalars = record.get("datasets", {}).get(name, {}).get("scalars", {})
            values = (
                [_table_cell(scalars, k, w) for k, w in zip(keys, widths[name], strict=True)]
                if keys
                else [""]
            )
            cells.append(" ".join(v.rjust(w) for v, w in zip(values, widths[name], strict=True)))
        lines.append(" | ".join(cells))
    return "\n".join(lines)
