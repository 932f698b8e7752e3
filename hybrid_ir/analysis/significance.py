"""Significance tests for comparing two systems.

Paired over queries: ``a[i]`` and ``b[i]`` are the two systems' scores (e.g. nDCG@10) on query ``i``; these tests
work on the per-query differences ``d = a - b`` and the observed statistic ``mean(d)``, and take each system as
fixed (query-level variation only). Over training runs (:func:`welch_t_test`): one value per run (seed) of each
system, so training-seed variation is tested.

See docs/usage.md (the report) and docs/results.md.
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Sequence
from dataclasses import dataclass

import numpy as np
from numpy.typing import ArrayLike, NDArray

MAX_EXACT_N = 20
"""Largest number of queries for which the randomisation test may enumerate all ``2**n`` sign flips."""

_BLOCK_ELEMENTS = 1 << 20
"""Resamples are drawn in blocks of about this many elements to bound memory."""


@dataclass(frozen=True)
class SignificanceResult:
    """Observed ``mean(a - b)``, a confidence interval for it, and a two-sided p-value for ``H0: a = b``."""

    mean_diff: float
    ci_low: float
    ci_high: float
    p_value: float


def paired_bootstrap(
    a: ArrayLike, b: ArrayLike, n_resamples: int = 10000, seed: int = 0, ci: float = 0.95
) -> SignificanceResult:
    """Paired bootstrap over queries.

    Draws ``n_resamples`` resamples of the ``n`` queries with replacement and computes each one's
    ``m* = mean(d[resample])``. CI: the percentile interval, the ``(1 - ci)/2`` and ``(1 + ci)/2``
    quantiles of ``m*``. p-value: twice the proportion of ``m*`` on the other side of 0 from the
    observed mean (``m* <= 0`` when ``mean(d) > 0``, ``m* >= 0`` when ``mean(d) < 0``; ties count),
    capped at 1; exactly 1 when ``mean(d) == 0``.
    """
    d = _differences(a, b)
    _check_resamples(n_resamples)
    if not 0 < ci < 1:
        raise ValueError(f"ci must be in (0, 1), got {ci}")
    rng = np.random.default_rng(seed)
    boot = np.concatenate(
        [
            d[rng.integers(0, d.size, size=(rows, d.size))].mean(axis=1)
            for rows in _blocks(n_resamples, d.size)
        ]
    )
    low, high = np.quantile(boot, [(1 - ci) / 2, (1 + ci) / 2])
    mean_diff = float(d.mean())
    if mean_diff > 0:
        p_value = min(1.0, 2 * float(np.mean(boot <= 0)))
    elif mean_diff < 0:
        p_value = min(1.0, 2 * float(np.mean(boot >= 0)))
    else:
        p_value = 1.0
    return SignificanceResult(mean_diff, float(low), float(high), p_value)


def paired_randomization_test(
    a: ArrayLike, b: ArrayLike, n_resamples: int = 10000, seed: int = 0, exact: bool = False
) -> SignificanceResult:
    """Two-sided sign-flip (paired permutation) test of ``H0: mean(a - b) = 0``.

    Under H0 each difference is as likely to have either sign, so the null distribution of the
    statistic ``T(s) = |mean(s * d)|`` is over sign vectors ``s ∈ {-1, +1}^n``. Monte Carlo:
    ``p = (count + 1) / (n_resamples + 1)`` with ``count`` the number of random ``s`` whose ``T(s)``
    reaches the observed ``T = |mean(d)|`` (the +1 counts the observed assignment, so ``p > 0``).
    ``exact=True`` enumerates all ``2**n`` sign vectors (``n <= MAX_EXACT_N``): ``p = count / 2**n``.
    Ties are judged with a tolerance of a few ulps of the summed magnitudes. The CI is the
    :func:`paired_bootstrap` percentile interval with the same ``n_resamples`` and ``seed``.
    """
    d = _differences(a, b)
    _check_resamples(n_resamples)
    observed = abs(float(d.mean()))
    tolerance = 64 * d.size * np.finfo(np.float64).eps * float(np.abs(d).mean())
    if exact:
        if d.size > MAX_EXACT_N:
            raise ValueError(f"exact enumeration needs n <= {MAX_EXACT_N} queries, got {d.size}")
        hits = sum(
            _count_at_least(_all_signs(start, stop, d.size), d, observed - tolerance)
            for start, stop in _ranges(1 << d.size, d.size)
        )
        p_value = hits / (1 << d.size)
    else:
        rng = np.random.default_rng(seed)
        hits = sum(
            _count_at_least(1 - 2 * rng.integers(0, 2, size=(rows, d.size)), d, observed - tolerance)
            for rows in _blocks(n_resamples, d.size)
        )
        p_value = (hits + 1) / (n_resamples + 1)
    boot = paired_bootstrap(a, b, n_resamples=n_resamples, seed=seed)
    return SignificanceResult(float(d.mean()), boot.ci_low, boot.ci_high, float(p_value))


def holm_bonferroni(pvalues: ArrayLike) -> NDArray[np.float64]:
    """Holm's step-down adjusted p-values, in the input order.

    With ``p_(1) <= ... <= p_(m)`` sorted ascending: ``adj_(k) = max_{j <= k} min(1, (m - j + 1) p_(j))``.
    Rejecting the hypotheses with ``adj <= α`` controls the family-wise error rate at ``α``.
    """
    p = np.asarray(pvalues, dtype=np.float64)
    if p.ndim != 1:
        raise ValueError(f"pvalues must be 1-D, got shape {p.shape}")
    if np.any(~np.isfinite(p)) or np.any((p < 0) | (p > 1)):
        raise ValueError(f"p-values must lie in [0, 1], got {p.tolist()}")
    order = np.argsort(p, kind="stable")
    factors = p.size - np.arange(p.size)
    stepped = np.maximum.accumulate(np.minimum(1.0, factors * p[order]))
    adjusted = np.empty_like(p)
    adjusted[order] = stepped
    return adjusted


def _differences(a: ArrayLike, b: ArrayLike) -> NDArray[np.float64]:
    """``a - b`` as float64, after checking both are 1-D, equally long, non-empty and finite."""
    x = np.asarray(a, dtype=np.float64)
    y = np.asarray(b, dtype=np.float64)
    if x.ndim != 1 or x.shape != y.shape or x.size == 0:
        raise ValueError(f"a and b must be non-empty 1-D arrays of equal length, got {x.shape} and {y.shape}")
    if not (np.all(np.isfinite(x)) and np.all(np.isfinite(y))):
        raise ValueError("a and b must be finite")
    return x - y


def _check_resamples(n_resamples: int) -> None:
    if n_resamples < 1:
        raise ValueError(f"n_resamples must be >= 1, got {n_resamples}")


def _count_at_least(signs: NDArray[np.integer], d: NDArray[np.float64], threshold: float) -> int:
    """Number of rows ``s`` of ``signs`` ``[r, n]`` with ``|mean(s * d)| >= threshold``."""
    return int(np.count_nonzero(np.abs(signs @ d) / d.size >= threshold))


def _all_signs(start: int, stop: int, n: int) -> NDArray[np.int64]:
    """Sign vectors ``[stop - start, n]`` for codes ``start..stop-1``; bit ``i`` set gives ``s_i = -1``."""
    bits = (np.arange(start, stop, dtype=np.int64)[:, None] >> np.arange(n, dtype=np.int64)) & 1
    return 1 - 2 * bits


def _blocks(total: int, n: int) -> Iterator[int]:
    """Row counts of blocks of ``[rows, n]`` draws that add up to ``total``."""
    for start, stop in _ranges(total, n):
        yield stop - start


def _ranges(total: int, n: int) -> Sequence[tuple[int, int]]:
    """``[start, stop)`` row ranges covering ``total`` rows, about ``_BLOCK_ELEMENTS / n`` rows each."""
    rows = max(1, _BLOCK_ELEMENTS // n)
    return [(start, min(start + rows, total)) for start in range(0, total, rows)]


def welch_t_test(a: ArrayLike, b: ArrayLike) -> float:
    """Two-sided p-value of Welch's t-test of ``H0: E[a] = E[b]`` for two groups of training runs.

    ``a`` and ``b`` hold one value per run (e.g. each seed's mean metric over the same queries), so the test covers
    training-seed variation (the queries are taken as fixed). It assumes each group's run values vary normally from
    seed to seed, with their own variances: ``t = (mean(a) - mean(b)) / sqrt(s_a²/n_a + s_b²/n_b)`` with the
    Welch-Satterthwaite degrees of freedom. A ``b`` of one value is a fixed model without seed variation (e.g.
    the pretrained one): the one-sample t-test of ``a`` against it (``n_a - 1`` degrees of freedom). Needs two or
    more runs in every group that varies. When neither group varies, ``p`` is 1 for equal means, else 0.
    """
    x = np.asarray(a, dtype=np.float64)
    y = np.asarray(b, dtype=np.float64)
    if x.ndim != 1 or y.ndim != 1 or x.size < 2 or y.size < 1:
        raise ValueError(f"need at least 2 runs in a and 1 in b, got shapes {x.shape} and {y.shape}")
    if not (np.all(np.isfinite(x)) and np.all(np.isfinite(y))):
        raise ValueError("a and b must be finite")
    if y.size == 1:  # a fixed value: one-sample test
        var_a, var_b = float(x.var(ddof=1)) / x.size, 0.0
        df = x.size - 1.0
    else:
        var_a, var_b = float(x.var(ddof=1)) / x.size, float(y.var(ddof=1)) / y.size
        denominator = var_a**2 / (x.size - 1) + var_b**2 / (y.size - 1)
        df = (var_a + var_b) ** 2 / denominator if denominator > 0 else 1.0
    diff = float(x.mean() - y.mean())
    if var_a + var_b == 0:
        return 1.0 if diff == 0 else 0.0
    t = diff / math.sqrt(var_a + var_b)
    return _regularized_beta(df / 2, 0.5, df / (df + t * t))  # P(|T_df| >= |t|)


def _regularized_beta(a: float, b: float, x: float) -> float:
    """The regularised incomplete beta function ``I_x(a, b)`` (continued fraction, as in Numerical Recipes)."""
    if x <= 0.0:
        return 0.0
    if x >= 1.0:
        return 1.0
    log_front = math.lgamma(a + b) - math.lgamma(a) - math.lgamma(b) + a * math.log(x) + b * math.log1p(-x)
    if x < (a + 1) / (a + b + 2):
        return math.exp(log_front) * _beta_fraction(a, b, x) / a
    return 1.0 - math.exp(log_front) * _beta_fraction(b, a, 1.0 - x) / b


def _beta_fraction(a: float, b: float, x: float, max_terms: int = 500, eps: float = 1e-15) -> float:
    """The continued fraction of ``I_x(a, b)`` by the modified Lentz method."""
    tiny = 1e-300

    def nonzero(v: float) -> float:
        return v if abs(v) > tiny else tiny

    c, d = 1.0, 1.0 / nonzero(1.0 - (a + b) * x / (a + 1))
    h = d
    for m in range(1, max_terms + 1):
        for numerator in (
            m * (b - m) * x / ((a + 2 * m - 1) * (a + 2 * m)),
            -(a + m) * (a + b + m) * x / ((a + 2 * m) * (a + 2 * m + 1)),
        ):
            d = 1.0 / nonzero(1.0 + numerator * d)
            c = nonzero(1.0 + numerator / c)
            h *= d * c
        if abs(d * c - 1.0) < eps:
            break
    return h
