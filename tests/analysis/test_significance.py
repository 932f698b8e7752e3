"""Paired bootstrap, sign-flip randomisation test, Holm-Bonferroni and Welch's t-test over runs against hand
computations and scipy."""

from __future__ import annotations

import itertools
import math

import numpy as np
import pytest
from scipy import stats

from hybrid_ir.analysis.significance import (
    MAX_EXACT_N,
    SignificanceResult,
    holm_bonferroni,
    paired_bootstrap,
    paired_randomization_test,
    welch_t_test,
)

# Differences 1, 2, 3, -0.5, 0.25 (a - b): small enough to enumerate all 2**5 sign flips by hand.
A_SMALL = np.array([1.0, 2.5, 3.0, 0.0, 0.75])
B_SMALL = np.array([0.0, 0.5, 0.0, 0.5, 0.5])


def _exact_p_by_hand(d: list[float]) -> float:
    observed = abs(sum(d)) / len(d)
    flips = list(itertools.product([1, -1], repeat=len(d)))
    means = [abs(sum(si * di for si, di in zip(s, d, strict=True))) / len(d) for s in flips]
    hits = sum(1 for m in means if m >= observed - 1e-12)
    return hits / len(flips)


def test_exact_mode_matches_enumeration_by_hand() -> None:
    d = (A_SMALL - B_SMALL).tolist()
    expected = _exact_p_by_hand(d)
    result = paired_randomization_test(A_SMALL, B_SMALL, exact=True)
    assert result.p_value == pytest.approx(expected, abs=1e-12)
    assert result.mean_diff == pytest.approx(sum(d) / len(d))


def test_exact_mode_counts_ties() -> None:
    """d = (1, 1): flips give means 1, 0, 0, -1, so two of four reach |mean| = 1."""
    assert paired_randomization_test([2.0, 3.0], [1.0, 2.0], exact=True).p_value == pytest.approx(0.5)


def test_monte_carlo_approaches_exact_p() -> None:
    expected = _exact_p_by_hand((A_SMALL - B_SMALL).tolist())
    n = 20000
    mc = paired_randomization_test(A_SMALL, B_SMALL, n_resamples=n, seed=3).p_value
    assert abs(mc - expected) < 4 * math.sqrt(expected * (1 - expected) / n) + 1 / n


def test_randomization_agrees_with_scipy_permutation_test() -> None:
    rng = np.random.default_rng(11)
    a = rng.normal(0.5, 0.2, size=40)
    b = a - rng.normal(0.0, 0.15, size=40)
    n = 20000
    ours = paired_randomization_test(a, b, n_resamples=n, seed=1).p_value
    ref = stats.permutation_test(
        (a, b),
        lambda x, y, axis: np.mean(x - y, axis=axis),
        permutation_type="samples",
        vectorized=True,
        n_resamples=n,
        alternative="two-sided",
        random_state=2,
    ).pvalue
    assert 0.05 < ref < 0.95
    assert abs(ours - ref) < 4 * math.sqrt(2 * ref * (1 - ref) / n)


def test_identical_inputs() -> None:
    a = np.array([0.2, 0.5, 0.9, 0.1])
    for result in (
        paired_randomization_test(a, a, n_resamples=500),
        paired_bootstrap(a, a, n_resamples=500),
        paired_randomization_test(a, a, exact=True),
    ):
        assert result == SignificanceResult(0.0, 0.0, 0.0, 1.0)


def test_bootstrap_ci_covers_true_difference() -> None:
    rng = np.random.default_rng(5)
    true_diff = 0.03
    b = rng.uniform(0.2, 0.8, size=400)
    a = b + true_diff + rng.normal(0.0, 0.1, size=400)
    result = paired_bootstrap(a, b, n_resamples=4000, seed=0)
    assert result.ci_low < true_diff < result.ci_high
    assert result.ci_low < result.mean_diff < result.ci_high
    sem = np.std(a - b, ddof=1) / np.sqrt(a.size)
    assert result.ci_high - result.ci_low == pytest.approx(2 * 1.96 * sem, rel=0.1)


def test_clearly_shifted_pair_is_significant() -> None:
    rng = np.random.default_rng(6)
    b = rng.uniform(0.2, 0.6, size=200)
    a = b + 0.2 + rng.normal(0.0, 0.05, size=200)
    boot = paired_bootstrap(a, b, n_resamples=2000)
    assert boot.ci_low > 0 and boot.p_value == 0.0
    perm = paired_randomization_test(b, a, n_resamples=2000)
    assert perm.mean_diff < 0 and perm.ci_high < 0
    assert perm.p_value == pytest.approx(1 / 2001)


def test_bootstrap_p_value_is_two_sided_tail_mass() -> None:
    """p = 2 * share of resampled means on the other side of 0; symmetric under swapping a and b."""
    rng = np.random.default_rng(8)
    a, b = rng.normal(0.1, 1.0, size=30), rng.normal(0.0, 1.0, size=30)
    forward, backward = paired_bootstrap(a, b, seed=4), paired_bootstrap(b, a, seed=4)
    assert 0 < forward.p_value < 1
    assert forward.p_value == pytest.approx(backward.p_value)
    assert (forward.ci_low, forward.ci_high) == pytest.approx((-backward.ci_high, -backward.ci_low))


def test_seed_makes_results_reproducible() -> None:
    rng = np.random.default_rng(9)
    a, b = rng.normal(size=25), rng.normal(size=25)
    assert paired_randomization_test(a, b, seed=1) == paired_randomization_test(a, b, seed=1)


def test_holm_bonferroni_by_hand() -> None:
    p = [0.01, 0.04, 0.03, 0.005, 0.5]
    # sorted: 0.005 (x5 = 0.025), 0.01 (x4 = 0.04), 0.03 (x3 = 0.09), 0.04 (x2 = 0.08 -> max 0.09), 0.5 (x1)
    expected = [0.04, 0.09, 0.09, 0.025, 0.5]
    assert holm_bonferroni(p) == pytest.approx(expected)
    assert holm_bonferroni([0.4, 0.6]) == pytest.approx([0.8, 0.8])
    assert holm_bonferroni([0.9, 0.7]) == pytest.approx([1.0, 1.0])


@pytest.mark.parametrize(
    ("call", "match"),
    [
        (lambda: paired_bootstrap([1.0, 2.0], [1.0]), "equal length"),
        (lambda: paired_bootstrap([], []), "non-empty"),
        (lambda: paired_bootstrap([1.0, math.nan], [1.0, 2.0]), "finite"),
        (lambda: paired_bootstrap([1.0], [0.0], ci=1.0), "ci"),
        (lambda: paired_randomization_test([1.0], [0.0], n_resamples=0), "n_resamples"),
        (
            lambda: paired_randomization_test(
                np.zeros(MAX_EXACT_N + 1), np.ones(MAX_EXACT_N + 1), exact=True
            ),
            "exact",
        ),
        (lambda: holm_bonferroni([0.5, 1.5]), r"\[0, 1\]"),
    ],
)
def test_rejects_bad_input(call, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        call()


@pytest.mark.parametrize(("n_a", "n_b"), [(2, 2), (3, 3), (2, 5), (10, 7), (3, 1), (2, 1)])
def test_welch_t_test_agrees_with_scipy(n_a: int, n_b: int) -> None:
    rng = np.random.default_rng(n_a * 10 + n_b)
    a, b = rng.normal(0.0, 1.0, n_a), rng.normal(0.7, 2.0, n_b)
    expected = (
        stats.ttest_1samp(a, b[0]).pvalue if n_b == 1 else stats.ttest_ind(a, b, equal_var=False).pvalue
    )
    assert welch_t_test(a, b) == pytest.approx(expected, rel=1e-9)


def test_welch_t_test_without_seed_variation() -> None:
    assert welch_t_test([0.5, 0.5], [0.4]) == 0.0
    assert welch_t_test([0.5, 0.5], [0.5, 0.5]) == 1.0
    with pytest.raises(ValueError, match="at least 2 runs"):
        welch_t_test([0.5], [0.4, 0.3])
