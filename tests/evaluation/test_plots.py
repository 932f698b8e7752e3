"""Tests of hybrid_ir.evaluation.plots: PNGs are written, valid and non-trivial; no pyplot figure leaks."""

from __future__ import annotations

from pathlib import Path

import matplotlib.image as mpimg
import matplotlib.pyplot as plt
import pytest
from matplotlib.figure import Figure

from hybrid_ir.evaluation.plots import (
    TradeoffPoint,
    plot_pair_heatmap,
    plot_per_language_bars,
    plot_sweep,
    plot_tradeoff,
)

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def _check_png(path: Path) -> None:
    assert path.read_bytes()[:8] == PNG_SIGNATURE
    assert path.stat().st_size > 5000
    image = mpimg.imread(path)
    assert image.ndim == 3 and image.shape[0] > 200 and image.shape[1] > 200
    assert image.std() > 0.05  # not a blank canvas


def test_pair_heatmap(tmp_path: Path) -> None:
    before = plt.get_fignums()
    matrix = [[0.81, 0.52, None], [0.47, 0.77, 0.31], [0.4, 0.2, 0.66]]
    path = tmp_path / "plots" / "pairs.png"
    fig = plot_pair_heatmap(matrix, ["de", "en", "zh"], path, "mAP by language pair")
    assert isinstance(fig, Figure)
    _check_png(path)
    texts = [text.get_text() for text in fig.axes[0].texts]
    assert "0.81" in texts and "n/a" in texts and len(texts) == 9
    assert plt.get_fignums() == before
    assert list(tmp_path.joinpath("plots").iterdir()) == [path]  # no temporary file left behind


def test_pair_heatmap_rejects_bad_shape(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="3x3"):
        plot_pair_heatmap([[0.1, 0.2], [0.3, 0.4]], ["de", "en", "zh"], tmp_path / "x.png", "bad")
    assert not (tmp_path / "x.png").exists()


def test_per_language_bars(tmp_path: Path) -> None:
    before = plt.get_fignums()
    values = {"ar": 0.42, "de": 0.61, "en": 0.7, "zh": -0.05}
    path = tmp_path / "bars.png"
    fig = plot_per_language_bars(values, path, "mono-cross gap", "mAP difference")
    assert isinstance(fig, Figure)
    _check_png(path)
    ax = fig.axes[0]
    assert [tick.get_text() for tick in ax.get_xticklabels()] == list(values)
    assert [patch.get_height() for patch in ax.patches] == pytest.approx(list(values.values()))
    assert ax.get_ylabel() == "mAP difference"
    assert plt.get_fignums() == before


def test_sweep_puts_maps_left_and_rank_distance_right(tmp_path: Path) -> None:
    xs = [0.0, 0.5, 1.0]
    values = {
        "map_mono": [(0.74, 0.0), (0.76, 0.01), (0.77, 0.0)],
        "map_multi": [(0.59, 0.0), (0.60, 0.0), (0.59, 0.0)],
        "rank_distance": [(37.5, 1.0), (39.7, 2.0), (41.7, 0.5)],
    }
    path = tmp_path / "sweep.png"
    fig = plot_sweep(xs, values, path, "metrics against alpha", "sampler.alpha")
    _check_png(path)
    left, right = fig.axes
    assert [bars.get_label() for bars in left.containers] == ["map_mono", "map_multi"]
    assert [bars.get_label() for bars in right.containers] == ["rank_distance"]
    assert list(left.containers[0].lines[0].get_xdata()) == xs
    assert list(right.containers[0].lines[0].get_ydata()) == [37.5, 39.7, 41.7]
    assert left.get_xlabel() == right.get_xlabel() == "sampler.alpha"


def test_tradeoff_draws_each_run_with_its_seed_spread_and_marks_the_reference(tmp_path: Path) -> None:
    before = plt.get_fignums()
    points = [
        TradeoffPoint(
            "pretrained",
            {"map_mono": (0.65, 0.0), "map_cross": (0.46, 0.0), "rank_distance": (1593, 0)},
            True,
        ),
        TradeoffPoint(
            "α=0", {"map_mono": (0.64, 0.002), "map_cross": (0.556, 0.001), "rank_distance": (370, 5)}
        ),
        TradeoffPoint(
            "α=0.5", {"map_mono": (0.649, 0.003), "map_cross": (0.552, 0.002), "rank_distance": (422, 8)}
        ),
        TradeoffPoint(
            "α=1", {"map_mono": (0.656, 0.001), "map_cross": (0.549, 0.004), "rank_distance": (433, 3)}
        ),
    ]
    path = tmp_path / "tradeoff.png"
    fig = plot_tradeoff(points, path, "trade-off")
    _check_png(path)
    assert plt.get_fignums() == before
    bias, cross = fig.axes
    assert bias.get_xlabel() == "rank_distance (lower is better)" and bias.get_ylabel() == "map_mono"
    assert cross.get_xlabel() == "map_cross"
    # the frontier joins the swept runs in order, without the reference point
    (line,) = [ln for ln in bias.lines if ln.get_label().startswith("_") and len(ln.get_xdata()) == 3]
    assert list(line.get_xdata()) == [370, 422, 433]
    assert list(line.get_ydata()) == [0.64, 0.649, 0.656]
    labels = [c.get_label() for c in bias.containers]
    assert labels == ["pretrained", "α=0", "α=0.5", "α=1"]
    # each point carries its seed spread on both axes: x error of α=0.5 spans 422 ± 8
    segments = bias.containers[2].lines[2][0].get_segments()
    assert tuple(segments[0][:, 0]) == (414.0, 430.0)
    assert bias.containers[0].lines[0].get_marker() == "*"
    assert [t.get_text() for t in cross.texts] == labels
    # the pretrained point lies far outside the swept ones (1593 against 365-441): the axes show the swept points,
    # and the panel's title names the pretrained point, the way it lies and its values
    x0, x1 = bias.get_xlim()
    assert x0 < 365 and 441 < x1 < 1593 and bias.get_ylim()[0] < 0.638 and bias.get_ylim()[1] > 0.657
    assert bias.get_title() == "off the axes: pretrained → (rank_distance 1593, map_mono 0.65)"
    assert cross.get_title() == "off the axes: pretrained ← (map_cross 0.46, map_mono 0.65)"


def test_a_reference_point_near_the_swept_ones_stays_on_the_axes(tmp_path: Path) -> None:
    values = {"map_mono": (0.64, 0.002), "map_cross": (0.55, 0.001), "rank_distance": (400, 10)}
    points = [
        TradeoffPoint("pretrained", {**values, "rank_distance": (470, 0)}, True),
        TradeoffPoint("α=0", values),
        TradeoffPoint("α=1", {**values, "rank_distance": (430, 10)}),
    ]
    bias, _ = plot_tradeoff(points, tmp_path / "near.png", "trade-off").axes
    assert bias.get_xlim()[0] < 390 and bias.get_xlim()[1] > 470
    assert bias.get_title() == ""
