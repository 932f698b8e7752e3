"""Tests of hybrid_ir.evaluation.plots: PNGs are written, valid and non-trivial; no pyplot figure leaks."""

from __future__ import annotations

from pathlib import Path

import matplotlib.image as mpimg
import matplotlib.pyplot as plt
import pytest
from matplotlib.figure import Figure

from hybrid_ir.evaluation.plots import plot_pair_heatmap, plot_per_language_bars, plot_sweep

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
