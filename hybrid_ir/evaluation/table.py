"""Fixed-width tables of evaluation records (as in ``metrics.json``) and the metrics they show.

:data:`LAREQA_COLUMNS` are the headline LAReQA metrics (also the columns of :mod:`hybrid_ir.report`); MIRACL
datasets show their ``ndcg_at{k}`` and ``recall_at{k}`` macro averages.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from typing import Any

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


def _cell(scalars: Mapping[str, float], key: str, width: int) -> str:
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
            values = [_cell(scalars, k, w) for k, w in zip(keys, widths[name], strict=True)] if keys else [""]
            cells.append(" ".join(v.rjust(w) for v, w in zip(values, widths[name], strict=True)))
        lines.append(" | ".join(cells))
    return "\n".join(lines)
