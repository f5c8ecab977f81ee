"""The statistics of the tables: a variant against its baseline over paired seeds, Holm's correction across the
comparisons of one table's condition, and the smallest difference a study of n seeds can detect.

Seeds pair the runs: a variant's seed-s run and the baseline's seed-s run share the data split, the label noise
and the initialisation, so the per-seed difference removes what the seed alone moves. With as few seeds as a
study affords, :func:`detectable_difference` says how large a true difference has to be before a paired t-test
finds it, which is what a non-significant p can and cannot say. No p claims more than its pairs support: with
fewer than three pairs, or differences that are all the same (no spread to test against), the p is the exact
sign-flip permutation p, at least 2 / 2ⁿ (0.5 with two seeds), not a t-test's.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Sequence

import numpy as np


# Below this many pairs a t-test is not run: its p would rest on a spread estimated from one or two numbers
MIN_T_PAIRS = 3
# Differences of a metric stored as float32 are compared at the metric's resolution (top-1: 1 / test images);
# a metric without one (SSIM) at this granularity, far above float32's noise on values of order 1 (6e-8)
FLOAT32_RESOLUTION = 1e-6


@dataclass(frozen=True)
class Paired:
    """A variant minus its baseline over the seeds both have: mean difference ``delta``, its 95 % t interval
    (pairs - 1 degrees of freedom; NaN below two pairs, and the one value when every pair differs alike), the test
    that gave ``p_value`` (``test``: ``"t"``, a two-sided paired t-test, with ``t_stat``; ``"sign-flip"``, the
    exact two-sided sign-flip permutation test, used with fewer than :data:`MIN_T_PAIRS` pairs or when every
    difference is the same: no spread to test against, so its p is the honest one, never below 2 / 2ⁿ; ``""`` no
    test, fewer than two pairs) and ``pairs``. ``constant``: every pair differs by the same amount at the metric's
    resolution."""

    delta: float
    ci_low: float
    ci_high: float
    t_stat: float
    p_value: float
    pairs: int
    test: str = ""
    constant: bool = False


def sign_flip_p(differences: Sequence[float]) -> float:
    """The exact two-sided sign-flip (permutation) p of paired differences: the share of the 2ⁿ sign assignments
    whose |mean| is at least the observed one (ties count, so all-zero differences give 1). Its smallest value is
    2 / 2ⁿ: 0.5 with two pairs, 0.25 with three."""
    d = np.abs(np.asarray(differences, dtype=float))
    n = len(d)
    if n == 0:
        return math.nan
    if n > 20:
        raise ValueError(f"sign_flip_p enumerates 2^n sign patterns; {n} pairs is too many (use the t-test)")
    signs = 1 - 2 * ((np.arange(2 ** n)[:, None] >> np.arange(n)) & 1)  # every pattern of +1/-1, one per row
    observed = abs(float(np.asarray(differences, dtype=float).sum()))
    sums = np.abs(signs @ d)
    return float(np.mean(sums >= observed - 1e-12 * max(1.0, observed)))


def paired(variant: Sequence[float], baseline: Sequence[float], confidence: float = 0.95,
           resolution: float | None = None) -> Paired:
    """:class:`Paired` of two equally long sequences, element i of each from the same seed. ``resolution``: the
    metric's smallest step (top-1: 1 / test images); the differences are rounded to it first, so float32 storage
    noise (17 of 1,000 images arriving as 0.01700002 and 0.01699996) is not taken for a spread."""
    from scipy import stats

    diff = np.asarray(variant, dtype=float) - np.asarray(baseline, dtype=float)
    step = resolution or FLOAT32_RESOLUTION
    diff = np.round(diff / step) * step
    n = len(diff)
    if n == 0:
        return Paired(math.nan, math.nan, math.nan, math.nan, math.nan, 0)
    delta = float(diff.mean())
    if n < 2:
        return Paired(delta, math.nan, math.nan, math.nan, math.nan, n)
    constant = bool(np.all(np.abs(diff - diff[0]) < step / 2))
    if constant:
        t = math.copysign(math.inf, delta) if abs(delta) >= step / 2 else math.nan
        return Paired(delta, delta, delta, t, sign_flip_p(diff), n, "sign-flip", True)
    half = float(stats.t.ppf(0.5 + confidence / 2, n - 1) * diff.std(ddof=1) / math.sqrt(n))
    t = float(delta / (diff.std(ddof=1) / math.sqrt(n)))
    if n < MIN_T_PAIRS:
        return Paired(delta, delta - half, delta + half, t, sign_flip_p(diff), n, "sign-flip")
    p = float(2 * stats.t.sf(abs(t), n - 1))
    return Paired(delta, delta - half, delta + half, t, p, n, "t")


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
