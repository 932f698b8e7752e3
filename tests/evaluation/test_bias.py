"""Tests of hybrid_ir.evaluation.bias (hand-computed)."""

from __future__ import annotations

import math

import pytest
import torch

from hybrid_ir.evaluation.bias import language_share, mono_cross_gap, pool_share, rank_distance

INF = math.inf


def test_rank_distance() -> None:
    ranks = torch.tensor([[3.0, 1.0, 7.0, INF], [2.0, 9.0, INF, INF], [5.0, INF, INF, INF], [INF] * 4])
    distance = rank_distance(ranks)
    assert distance[:2].tolist() == [6.0, 7.0]
    # fewer than two ranked relevant items: no distance.
    assert math.isnan(distance[2]) and math.isnan(distance[3])


def test_language_share() -> None:
    top_langs = torch.tensor([[0, 0, 1, 2], [1, 1, 1, 1], [2, 0, 0, 0]])
    shares = language_share(top_langs, torch.tensor([0, 1, 1]))
    assert shares.tolist() == [0.5, 1.0, 0.0]


def test_pool_share() -> None:
    shares = pool_share(torch.tensor([0, 0, 2, 1, 0, 2, 2, 2]), 4)
    assert shares.tolist() == [3 / 8, 1 / 8, 4 / 8, 0.0]


def test_mono_cross_gap() -> None:
    matrix = [[0.8, 0.4, 0.6], [0.5, 0.7, None], [None, 0.2, None]]
    gaps = mono_cross_gap(matrix)
    assert gaps[0] == pytest.approx(0.8 - 0.5)
    assert gaps[1] == pytest.approx(0.7 - 0.5)
    assert gaps[2] is None
    assert mono_cross_gap([[0.9, None], [0.3, 0.4]]) == [None, pytest.approx(0.1)]
