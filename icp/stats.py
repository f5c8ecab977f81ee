"""The statistics of the tables: a variant against its baseline over paired seeds, Holm's correction across the
comparisons of one table's condition, and the smallest difference a study of n seeds can detect.

Seeds pair the runs: a variant's seed-s run and the baseline's seed-s run share the data split, the label noise
and the initialisation, so the per-seed difference removes what the seed alone moves. With as few seeds as a
study affords, :func:`detectable_difference` says how large a true difference has to be before a paired t-test
finds it, which is what a non-significant p can and cannot say. No p claims more than its pairs support: with
fewer than three pairs, or differences that are all the same (no spread to test against), the p is the exact
sign-flip permutation p, at least 2 / 2ⁿ (0.5 with two seeds), not a t-test's.

Equal tuning's numbers are here too (:func:`best_of`): the exact expected best of b of a method's k trials and the
sd of that best, without replacement (the tuning curve) or with (the bootstrap of the best of k: tuning luck). So
are the verdict's (:mod:`icp.results.verdict`), over independent units: the interquartile mean (:func:`iqm`), its
stratified bootstrap interval (:func:`stratified_bootstrap`), the probability of improvement
(:func:`probability_of_improvement`), average ranks and the Nemenyi critical difference
(:func:`average_ranks`, :func:`critical_difference`). scipy and pandas are imported on use; the sign-flip p and
the bootstrap are scipy's (``permutation_test``, ``bootstrap``), the paired t interval is written out (:func:`paired`
says why).
"""
from __future__ import annotations

import math
import warnings
from dataclasses import dataclass
from typing import TYPE_CHECKING, Callable, Sequence

import numpy as np

if TYPE_CHECKING:
    import pandas as pd


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


def _abs_mean(d, axis=-1):
    return np.abs(np.mean(d, axis=axis))


def sign_flip_p(differences: Sequence[float]) -> float:
    """The exact two-sided sign-flip (permutation) p of paired differences: the share of the 2ⁿ sign assignments
    whose |mean| is at least the observed one (ties count, so all-zero differences give 1). Its smallest value is
    2 / 2ⁿ: 0.5 with two pairs, 0.25 with three. ``scipy.stats.permutation_test`` with
    ``permutation_type="samples"`` on the one sample of differences (it flips each one's sign) and the statistic
    |mean| tested for ``"greater"``, every pattern enumerated (``n_resamples=inf``); a single difference gives 1
    (its two patterns have the same |mean|)."""
    from scipy import stats

    d = np.asarray(differences, dtype=float)
    n = len(d)
    if n == 0:
        return math.nan
    if n > 20:
        raise ValueError(f"sign_flip_p enumerates 2^n sign patterns; {n} pairs is too many (use the t-test)")
    if n == 1:
        return 1.0
    return float(stats.permutation_test((d,), _abs_mean, permutation_type="samples", vectorized=True,
                                        n_resamples=np.inf, alternative="greater").pvalue)


def paired(variant: Sequence[float], baseline: Sequence[float], confidence: float = 0.95,
           resolution: float | None = None) -> Paired:
    """:class:`Paired` of two equally long sequences, element i of each from the same seed. ``resolution``: the
    metric's smallest step (top-1: 1 / test images); the differences are rounded to it first, so float32 storage
    noise (17 of 1,000 images arriving as 0.01700002 and 0.01699996) is not taken for a spread.

    The t interval, t and p are written out rather than taken from ``scipy.stats.ttest_rel(...)`` /
    ``ttest_1samp(diff).confidence_interval()``: scipy's standard error is sqrt(var / n), this one sd / sqrt(n),
    which differ in the last bit, and so would the interval's ends and t (by up to 2.2e-16; p by 3.9e-16 over
    1,800 random cases), changing the committed laptop tables' csv files in their 17th digit."""
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
    sd = float(diff.std(ddof=1))
    half = float(stats.t.ppf(0.5 + confidence / 2, n - 1) * sd / math.sqrt(n))
    t = float(delta / (sd / math.sqrt(n)))
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


# ------------------------------------------------------------------------------------------------ tuning luck
def best_of(values, b: int, replace: bool = False) -> tuple[float, float]:
    """The expected best of ``b`` trials drawn at random from these ``k`` trials' values, and the sd of that best:
    the expected validation performance of Dodge et al. (2019, "Show your work: improved reporting of experimental
    results", EMNLP), exact, from the order statistics. With the values sorted ascending, v_(1) ≤ … ≤ v_(k), the
    best of the b draws is v_(i) with probability

    * without replacement (``b`` distinct trials, b ≤ k): C(i−1, b−1) / C(k, b), the share of the b-subsets whose
      largest member is the i-th smallest (the tuning curve: at b = k the best trial, at b = 1 the mean);
    * with replacement (``b`` trials resampled, the bootstrap of the best of b): (i^b − (i−1)^b) / k^b, the chance
      that every draw is one of the i smallest but not every one of the i − 1 smallest (Dodge et al.'s
      E[max] = Σ v_(i) (F(v_(i))^b − F(v_(i−1))^b) with F the trials' empirical CDF),

    ties taking each value once per trial. The mean and the sd are those of that distribution: no resampling
    noise, the same numbers on every machine.

    **Tuning luck.** The chosen trial's score is the best of k draws, one realisation of a random maximum: the
    bootstrap E[best of k] (``replace=True``, ``b = k``) and its sd say what another draw of k trials from the same
    space would have reached on average and how far it spreads, so the chosen score's distance above it is luck,
    not the method. AlgoPerf (Dahl et al. 2023) measures the same by running its whole tuning study 3 times and
    taking the median; Lucic et al. (2018, "Are GANs created equal?") report the distribution of the best score over
    budgets by resampling the trials. The bootstrap needs no extra training, so it is the one taken here."""
    v = sorted(float(x) for x in values)
    k = len(v)
    if k == 0 or b < 1 or (not replace and b > k):
        raise ValueError(f"b must be between 1 and the {k} trials{' (or more, with replacement)' if replace else ''}"
                         f", got {b}")
    if replace:
        weights = [(i ** b - (i - 1) ** b) / k ** b for i in range(1, k + 1)]
    else:
        weights = [math.comb(i - 1, b - 1) / math.comb(k, b) for i in range(1, k + 1)]
    mean = sum(w * x for w, x in zip(weights, v))
    var = sum(w * (x - mean) ** 2 for w, x in zip(weights, v))
    return mean, math.sqrt(max(var, 0.0))


def expected_best(values, b: int, replace: bool = False) -> float:
    """The expected best of ``b`` of these trials (:func:`best_of`); without replacement the tuning curve's point
    at ``b``: whether more trials would still have paid."""
    return best_of(values, b, replace)[0]


def tuning_curve(values, replace: bool = False) -> list[tuple[float, float]]:
    """(E[best of b], its sd) for b = 1 .. k, the number of these trials (:func:`best_of`)."""
    return [best_of(values, b, replace) for b in range(1, len(values) + 1)]


# ------------------------------------------------------------------------------------------------ across units
def snap(x) -> np.ndarray:
    """``x`` rounded to :data:`FLOAT32_RESOLUTION`: a metric stored as float32 (top-1) compares at that step, so
    storage noise is no difference (ties in ranks and in :func:`prob_greater`)."""
    return np.round(np.asarray(x, dtype=float) / FLOAT32_RESOLUTION) * FLOAT32_RESOLUTION


def iqm(values, axis=None) -> float | np.ndarray:
    """The interquartile mean: the mean of the values left when a quarter (rounded down) is cut at each end
    (``scipy.stats.trim_mean(values, 0.25)``, rliable's IQM)."""
    from scipy import stats

    return stats.trim_mean(np.asarray(values, dtype=float), 0.25, axis=axis)


def stratified_bootstrap(strata: Sequence[Sequence[float]], statistic: Callable = iqm, reps: int = 10_000,
                         seed: int = 0, confidence: float = 0.95) -> tuple[float, float]:
    """The percentile interval of ``statistic`` of the pooled values of ``strata`` when each stratum (a unit)
    resamples its own values (seeds) with replacement, as many as it has: ``reps`` replicates drawn by
    ``numpy.random.default_rng(seed)``, so the same strata give the same interval on every machine.
    ``statistic(array, axis=-1)`` is applied to the (reps, n) array of the pooled replicates at once.

    ``scipy.stats.bootstrap`` with one sample per stratum (each resampled independently, in order, by
    ``rng.integers(0, len, (reps, len))``) and a statistic that pools them. scipy refuses a sample of one value;
    such a stratum resamples to itself and draws nothing from the generator, so it joins the pool unchanged. The
    replicates are those of the hand-written resampling this replaced, draw for draw; scipy's percentile
    (``scipy.stats.quantile`` at 0.025, not ``numpy.percentile`` at 2.5) moves an interval's ends by at most 1e-13."""
    from scipy import stats

    strata = [np.asarray(s, dtype=float) for s in strata if len(s)]
    if not strata:
        return math.nan, math.nan
    resampled = [s for s in strata if len(s) > 1]
    if not resampled:
        value = float(statistic(np.concatenate(strata)[None, :], axis=-1)[0])
        return value, value

    def pooled(*samples, axis=-1):  # the strata in their order, each single value repeated across the replicates
        drawn, shape = iter(samples), (*samples[0].shape[:-1], 1)
        pool = [next(drawn) if len(s) > 1 else np.broadcast_to(s, shape) for s in strata]
        return statistic(np.concatenate(pool, axis=axis), axis=axis)

    with warnings.catch_warnings():
        if reps < 2:  # scipy's standard error of a single replicate (reps=1: ranks only, no interval) warns
            warnings.simplefilter("ignore", RuntimeWarning)
        result = stats.bootstrap(resampled, pooled, n_resamples=reps, vectorized=True, confidence_level=confidence,
                                 method="percentile", rng=np.random.default_rng(seed))
    return float(result.confidence_interval.low), float(result.confidence_interval.high)


def prob_greater(x: Sequence[float], y: Sequence[float]) -> float:
    """P(X > Y) from samples: the share of (x, y) pairs with x > y, a tie (within :data:`FLOAT32_RESOLUTION`)
    counting 0.5 (the Mann–Whitney U over n·m)."""
    x, y = np.asarray(x, dtype=float)[:, None], np.asarray(y, dtype=float)[None, :]
    if not x.size or not y.size:
        return math.nan
    tie = np.abs(x - y) < FLOAT32_RESOLUTION / 2
    return float(np.mean(np.where(tie, 0.5, (x > y).astype(float))))


def probability_of_improvement(x_cells: Sequence[Sequence[float]], y_cells: Sequence[Sequence[float]]) -> float:
    """rliable's probability of improvement: :func:`prob_greater` in each unit (``x_cells[i]``, ``y_cells[i]``:
    the two methods' values in unit i), averaged over the units."""
    per = [prob_greater(x, y) for x, y in zip(x_cells, y_cells) if len(x) and len(y)]
    return float(np.mean(per)) if per else math.nan


def average_ranks(values: pd.DataFrame, higher_is_better: bool = True) -> pd.Series:
    """Per column (method) its rank in each row (unit), 1 the best and ties averaged, averaged over the rows.
    ``values`` must be complete (no NaN)."""
    import pandas as pd
    from scipy import stats

    if values.isna().any().any():
        raise ValueError("average_ranks needs a value for every method in every unit (a complete block)")
    shown = snap(values.to_numpy(dtype=float))
    ranks = stats.rankdata(-shown if higher_is_better else shown, axis=1, method="average")
    return pd.Series(ranks.mean(axis=0), index=values.columns)


def critical_difference(k: int, n: int, alpha: float = 0.05) -> float:
    """The Nemenyi test's critical difference in average ranks for ``k`` methods over ``n`` units (Demšar 2006):
    q_α √(k(k+1) / 6n), q_α the studentized range's 1−α quantile for k groups (infinite degrees of freedom) / √2."""
    from scipy import stats

    if k < 2 or n < 1:
        return math.nan
    q = stats.studentized_range.ppf(1 - alpha, k, np.inf) / math.sqrt(2)
    return float(q * math.sqrt(k * (k + 1) / (6 * n)))
