"""Figures of evaluation results, written as PNG files (Agg, no display).

Figures are built with :class:`matplotlib.figure.Figure` directly, not through ``pyplot``: they are
never registered in pyplot's global figure list, so nothing needs closing and nothing leaks; the
returned Figure is freed with its last reference (and can be logged, e.g. ``wandb.Image(fig)``).

See docs/usage.md (outputs).
"""

from __future__ import annotations

import math
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from matplotlib.axes import Axes
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from hybrid_ir.utils.io import atomic_write


def _save_png(fig: Figure, path: str | os.PathLike) -> Path:
    return atomic_write(path, lambda tmp: fig.savefig(tmp, format="png", dpi=120))


def plot_pair_heatmap(
    matrix: Sequence[Sequence[float | None]],
    langs: Sequence[str],
    path: str | os.PathLike,
    title: str,
    *,
    fmt: str = ".2f",
    vmin: float | None = None,
    vmax: float | None = None,
) -> Figure:
    """Annotated heatmap of a ``[query language][passage language]`` matrix (e.g. mAP), saved as PNG.

    Args:
        matrix: ``[L][L]`` values, ``None`` (or NaN) for an absent pair (shown blank, marked ``n/a``).
        langs: the ``L`` languages, in the order of the rows and columns.
        path: the PNG file to write.
        title: the figure title.
        fmt: format of the cell annotations.
        vmin, vmax: colour range; by default the range of the values present.

    Returns:
        the Figure.
    """
    values = np.array([[math.nan if v is None else float(v) for v in row] for row in matrix], dtype=float)
    n = len(langs)
    if values.shape != (n, n):
        raise ValueError(f"matrix must be {n}x{n} for {n} languages, got shape {values.shape}")
    side = max(4.0, 0.55 * n + 2.0)
    fig = Figure(figsize=(side + 1.0, side))
    FigureCanvasAgg(fig)
    ax = fig.add_subplot()
    image = ax.imshow(np.ma.masked_invalid(values), cmap="viridis", vmin=vmin, vmax=vmax)
    fig.colorbar(image, ax=ax, fraction=0.046, pad=0.04)
    ax.set_xticks(range(n), labels=list(langs))
    ax.set_yticks(range(n), labels=list(langs))
    ax.set_xlabel("passage language")
    ax.set_ylabel("query language")
    ax.set_title(title)
    low, high = image.get_clim()
    middle = (low + high) / 2
    for row in range(n):
        for col in range(n):
            value = values[row, col]
            if math.isnan(value):
                ax.text(col, row, "n/a", ha="center", va="center", color="grey", fontsize=8)
            else:
                colour = "black" if value > middle else "white"
                ax.text(col, row, format(value, fmt), ha="center", va="center", color=colour, fontsize=8)
    fig.tight_layout()
    _save_png(fig, path)
    return fig


def plot_per_language_bars(
    values: Mapping[str, float], path: str | os.PathLike, title: str, ylabel: str, *, fmt: str = ".2f"
) -> Figure:
    """Bar chart of one value per language (in the mapping's order), each bar labelled, saved as PNG.

    Args:
        values: ``{language: value}``; NaN values give an empty bar.
        path: the PNG file to write.
        title, ylabel: figure title and y-axis label.
        fmt: format of the bar labels.

    Returns:
        the Figure.
    """
    langs = list(values)
    heights = [float(values[lang]) for lang in langs]
    fig = Figure(figsize=(max(4.0, 0.5 * len(langs) + 2.0), 4.0))
    FigureCanvasAgg(fig)
    ax = fig.add_subplot()
    bars = ax.bar(range(len(langs)), heights, color="tab:blue")
    ax.bar_label(bars, labels=[format(h, fmt) for h in heights], fontsize=8, padding=2)
    ax.set_xticks(range(len(langs)), labels=langs)
    ax.set_ylabel(ylabel)
    ax.set_title(title)
    ax.axhline(0.0, color="black", linewidth=0.8)
    ax.margins(y=0.15)
    fig.tight_layout()
    _save_png(fig, path)
    return fig


def plot_grouped_bars(
    values: Mapping[str, Mapping[str, tuple[float, float]]], path: str | os.PathLike, title: str, ylabel: str
) -> Figure:
    """Grouped bar chart with error bars: ``values[run][metric] = (mean, std)``; one group of bars per metric,
    one bar per run. Saved as PNG; returns the Figure."""
    runs = list(values)
    metrics = list(dict.fromkeys(m for run in runs for m in values[run]))
    width = 0.8 / max(1, len(runs))
    fig = Figure(figsize=(max(5.0, 1.6 * len(metrics) + 2.0), 4.0))
    FigureCanvasAgg(fig)
    ax = fig.add_subplot()
    for i, run in enumerate(runs):
        pos = np.arange(len(metrics)) + (i - (len(runs) - 1) / 2) * width
        means = [values[run].get(m, (math.nan, 0.0))[0] for m in metrics]
        stds = [values[run].get(m, (math.nan, 0.0))[1] for m in metrics]
        ax.bar(pos, means, width, yerr=stds, capsize=3, label=run)
    ax.set_xticks(range(len(metrics)), labels=metrics)
    ax.set_ylabel(ylabel)
    ax.set_title(title)
    ax.legend(fontsize=8)
    fig.tight_layout()
    _save_png(fig, path)
    return fig


def plot_sweep(
    xs: Sequence[float],
    values: Mapping[str, Sequence[tuple[float, float]]],
    path: str | os.PathLike,
    title: str,
    xlabel: str,
) -> Figure:
    """Metrics against a swept setting: ``values[metric][i] = (mean, std)`` at ``xs[i]``. mAP metrics share the
    left panel; ``rank_distance`` (another scale, lower is better) gets the right one. Saved as PNG."""
    maps = [m for m in values if m.startswith("map")]
    others = [m for m in values if not m.startswith("map")]
    fig = Figure(figsize=(9.0, 3.8))
    FigureCanvasAgg(fig)
    axes = fig.subplots(1, 2 if others else 1, squeeze=False)[0]
    for ax, metrics in zip(axes, (maps, others), strict=False):
        for m in metrics:
            means = [v[0] for v in values[m]]
            stds = [v[1] for v in values[m]]
            ax.errorbar(xs, means, yerr=stds, marker="o", capsize=3, label=m)
        ax.set_xticks(list(xs))
        ax.set_xlabel(xlabel)
        ax.legend(fontsize=8)
        ax.grid(alpha=0.3)
    axes[0].set_ylabel("mAP")
    fig.suptitle(title)
    fig.tight_layout()
    _save_png(fig, path)
    return fig


@dataclass(frozen=True)
class TradeoffPoint:
    """One run (or group of seeds) in a trade-off plot: ``values[metric] = (mean, std over seeds)``;
    ``reference`` marks a point that is not part of the swept frontier (the pretrained model)."""

    label: str
    values: Mapping[str, tuple[float, float]]
    reference: bool = False


# Lower is better for these metrics; their axis label says so.
LOWER_IS_BETTER = {"rank_distance"}


def plot_tradeoff(
    points: Sequence[TradeoffPoint],
    path: str | os.PathLike,
    title: str,
    panels: Sequence[tuple[str, str]] = (("rank_distance", "map_mono"), ("map_cross", "map_mono")),
) -> Figure:
    """The trade-off between two metrics, one panel per ``(x metric, y metric)`` of ``panels``: each point a run
    with error bars of its seed spread (one standard deviation on both axes), labelled; the non-reference points
    joined in the given order (e.g. by α: the frontier the setting traces); reference points (the pretrained
    model) drawn as stars, apart from the line. A reference point far outside the swept points (more than
    :data:`FAR` times their extent away on an axis) would squeeze them into a corner: the axes then show the swept
    points only, and the panel's title names the reference point, the way it lies and its values. Saved as PNG;
    returns the Figure."""
    fig = Figure(figsize=(5.2 * len(panels), 4.4))
    FigureCanvasAgg(fig)
    axes = fig.subplots(1, len(panels), squeeze=False)[0]
    swept = [p for p in points if not p.reference]
    for ax, (mx, my) in zip(axes, panels, strict=True):
        if len(swept) > 1:
            ax.plot(
                [p.values[mx][0] for p in swept], [p.values[my][0] for p in swept], color="grey", alpha=0.5
            )
        for p in points:
            (x, xerr), (y, yerr) = p.values[mx], p.values[my]
            ax.errorbar(
                x,
                y,
                xerr=xerr,
                yerr=yerr,
                marker="*" if p.reference else "o",
                markersize=12 if p.reference else 6,
                capsize=3,
                linestyle="none",
                label=p.label,
            )
            ax.annotate(p.label, (x, y), textcoords="offset points", xytext=(5, 5), fontsize=7)
        for axis, metric in ((ax.set_xlabel, mx), (ax.set_ylabel, my)):
            axis(f"{metric} (lower is better)" if metric in LOWER_IS_BETTER else metric)
        _zoom_on_swept(ax, swept, [p for p in points if p.reference], (mx, my))
        ax.grid(alpha=0.3)
    axes[-1].legend(fontsize=7, loc="best")
    fig.suptitle(title)
    fig.tight_layout()
    _save_png(fig, path)
    return fig


# A reference point more than this many times the swept points' extent beyond them on an axis is left off the axes.
FAR = 3.0


def _zoom_on_swept(
    ax: Axes, swept: Sequence[TradeoffPoint], references: Sequence[TradeoffPoint], metrics: tuple[str, str]
) -> None:
    """Limit each axis to the swept points (mean ± std, a quarter of their extent as margin) where a reference point
    lies more than ``FAR`` extents beyond them; the panel's title names each reference point left off the axes, the
    way it lies and its values."""
    if not swept:
        return
    limits = []
    for metric in metrics:
        lo = min(p.values[metric][0] - p.values[metric][1] for p in swept)
        hi = max(p.values[metric][0] + p.values[metric][1] for p in swept)
        extent = max(hi - lo, 1e-12)
        far = [p.values[metric][0] for p in references]
        far = [v for v in far if v < lo - FAR * extent or v > hi + FAR * extent]
        limits.append((lo - extent / 4, hi + extent / 4) if far else None)
    if limits[0] is not None:
        ax.set_xlim(*limits[0])
    if limits[1] is not None:
        ax.set_ylim(*limits[1])
    (x0, x1), (y0, y1) = ax.get_xlim(), ax.get_ylim()
    notes = []
    for p in references:
        x, y = p.values[metrics[0]][0], p.values[metrics[1]][0]
        if x0 <= x <= x1 and y0 <= y <= y1:
            continue
        arrow = ("←" if x < x0 else "→" if x > x1 else "") + ("↓" if y < y0 else "↑" if y > y1 else "")
        notes.append(f"{p.label} {arrow} ({metrics[0]} {x:.4g}, {metrics[1]} {y:.4g})")
    if notes:
        ax.set_title("off the axes: " + "; ".join(notes), fontsize=8)
