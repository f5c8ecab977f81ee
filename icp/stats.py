"""The statistics of the tables: a variant against its baseline over paired seeds, Holm's correction across the
variants of one condition, and the smallest difference a study of n seeds can detect.

Seeds pair the runs: a variant's seed-s run and the baseline's seed-s run share the data split, the label noise
and the initialisation, so the per-seed difference removes what the seed alone moves. With as few seeds as a
study affords, :func:`detectable_difference` says how large a true difference has to be before a paired t-test
finds it, which is what a non-significant p can and cannot say.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Sequence

import numpy as np


@dataclass(frozen=True)
class Paired:
    """A variant minus its baseline over the seeds both have: mean difference, its confidence interval (t
    distribution, pairs - 1 degrees of freedom), t and the two-sided p of a paired t-test. ``t`` is ±inf when the
    differences are constant and non-zero (then p is 0 and the interval is that one value); t and p are NaN when
    every difference is zero or with fewer than two pairs (then the interval is NaN too)."""

    delta: float
    ci_low: float
    ci_high: float
    t_stat: float
    p_value: float
    pairs: int


def paired(variant: Sequence[float], baseline: Sequence[float], confidence: float = 0.95) -> Paired:
    """:class:`Paired` of two equally long sequences, element i of each from the same seed."""
    from scipy import stats

    diff = np.asarray(variant, dtype=float) - np.asarray(baseline, dtype=float)
    n = len(diff)
    if n == 0:
        return Paired(math.nan, math.nan, math.nan, math.nan, math.nan, 0)
    delta = float(diff.mean())
    if n < 2:
        return Paired(delta, math.nan, math.nan, math.nan, math.nan, n)
    if np.allclose(diff, diff[0], rtol=1e-9, atol=1e-12):  # constant up to float noise: no spread to test against
        t = math.copysign(math.inf, delta) if delta != 0 else math.nan
        return Paired(delta, delta, delta, t, 0.0 if delta != 0 else math.nan, n)
    test = stats.ttest_rel(np.asarray(variant, dtype=float), np.asarray(baseline, dtype=float))
    half = float(stats.t.ppf(0.5 + confidence / 2, n - 1) * diff.std(ddof=1) / math.sqrt(n))
    return Paired(delta, delta - half, delta + half, float(test.statistic), float(test.pvalue), n)


def holm(p_values: Sequence[float]) -> list[float]:
    """Holm–Bonferroni step-down adjusted p-values, in the order given. NaN entries are no test: they stay NaN and
    do not count in the family. The i-th smallest of m p-values is multiplied by m - i + 1, then made monotone (an
    adjusted p is never below the one of a smaller raw p) and capped at 1."""
    p = np.asarray(p_values, dtype=float)
    out = np.full(len(p), math.nan)
    tested = np.flatnonzero(~np.isnan(p))
    order = tested[np.argsort(p[tested], kind="stable")]
    m = len(order)
    adjusted = np.maximum.accumulate(p[order] * (m - np.arange(m)))
    out[order] = np.minimum(adjusted, 1.0)
    return out.tolist()


def paired_power(difference: float, n: int, sd: float, alpha: float = 0.05) -> float:
    """The power of a two-sided paired t-test at level ``alpha`` with ``n`` pairs whose differences have standard
    deviation ``sd`` and true mean ``difference``: the probability that |t| exceeds its critical value, t being
    noncentral with n - 1 degrees of freedom and noncentrality difference / (sd / sqrt n)."""
    from scipy import stats

    df, nc = n - 1, difference / (sd / math.sqrt(n))
    crit = stats.t.ppf(1 - alpha / 2, df)
    return float(stats.nct.sf(crit, df, nc) + stats.nct.sf(crit, df, -nc))  # P(t > crit) + P(t < -crit)


def detectable_difference(n: int, sd: float, alpha: float = 0.05, power: float = 0.8) -> float:
    """The smallest true mean paired difference that a two-sided paired t-test at level ``alpha`` with ``n`` pairs
    (differences of standard deviation ``sd``) detects with probability ``power``; in the units of ``sd``. For large
    n it approaches (z_{1-alpha/2} + z_power) sd / sqrt n (about 2.80 sd / sqrt n at the defaults)."""
    from scipy import optimize

    if n < 2:
        raise ValueError(f"a paired t-test needs at least 2 pairs, got {n}")
    gap = lambda d: paired_power(d, n, sd, alpha) - power  # noqa: E731
    high = sd
    while gap(high) < 0:  # power rises with the difference: widen until the root is bracketed
        high *= 2
    return float(optimize.brentq(gap, 0.0, high, xtol=1e-12 * sd, rtol=1e-10))
