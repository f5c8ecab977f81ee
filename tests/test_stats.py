"""Paired differences, Holm's correction and detectable differences give known values (icp.stats)."""
import math

import numpy as np
import pytest

from icp import stats

T_975_2DOF = 4.302652729911275  # the 97.5 % quantile of Student's t with 2 degrees of freedom


def test_paired_gives_the_mean_difference_its_t_interval_and_p():
    result = stats.paired([0.83, 0.84, 0.88], [0.80, 0.82, 0.84])  # differences 0.03, 0.02, 0.04: sd 0.01
    t = 3 * math.sqrt(3)
    assert result.delta == pytest.approx(0.03) and result.pairs == 3
    assert result.t_stat == pytest.approx(t)
    assert result.p_value == pytest.approx(1 - t / math.sqrt(2 + t * t), rel=1e-9)  # two-sided, 2 dof
    half = T_975_2DOF * 0.01 / math.sqrt(3)
    assert (result.ci_low, result.ci_high) == (pytest.approx(0.03 - half), pytest.approx(0.03 + half))


def test_constant_differences_give_the_sign_flip_p_never_a_t_test_p():
    result = stats.paired([0.83, 0.84, 0.85], [0.80, 0.81, 0.82])  # 0.03 each, up to float noise
    assert result.t_stat == math.inf and result.constant and result.test == "sign-flip"
    assert result.p_value == pytest.approx(2 / 2 ** 3)  # only the two all-same sign patterns reach |mean| 0.03
    assert result.ci_low == result.ci_high == result.delta == pytest.approx(0.03)
    assert stats.paired([0.80, 0.81], [0.83, 0.84]).t_stat == -math.inf


def test_float32_records_with_equal_differences_give_no_p_below_the_sign_flip_bound():
    """17 of 1,000 test images on both seeds, as float32 top-1 values arrive in a record: the differences differ
    by float32 noise (-0.01700002 and -0.01699996); compared at 1 / 1,000 they are equal, and the p is 0.5."""
    base = np.array([613 / 1000, 629 / 1000], dtype=np.float32)
    variant = np.array([596 / 1000, 612 / 1000], dtype=np.float32)
    raw = variant.astype(float) - base.astype(float)
    assert raw[0] != raw[1]  # the noise a t-test would take for a spread
    result = stats.paired(variant.astype(float), base.astype(float), resolution=1 / 1000)
    assert result.constant and result.test == "sign-flip" and result.p_value == 0.5
    assert result.delta == pytest.approx(-0.017)


@pytest.mark.parametrize("differences", [[0.01, 0.011], [0.2, 0.19], [-0.5, 0.4], [0.03, 0.03]])
def test_two_pairs_never_give_p_below_one_half(differences):
    result = stats.paired(np.add(0.5, differences), [0.5, 0.5], resolution=1 / 10000)
    assert result.test == "sign-flip" and result.p_value >= 0.5


def test_sign_flip_p_counts_the_sign_patterns_at_least_as_extreme():
    assert stats.sign_flip_p([1.0, 2.0, 3.0]) == pytest.approx(2 / 8)
    assert stats.sign_flip_p([1.0, -2.0, 3.0]) == pytest.approx(6 / 8)  # the two sums of 0 fall below |2|
    assert stats.sign_flip_p([0.0, 0.0]) == 1.0
    # a t-test of three non-constant pairs still uses t
    assert stats.paired([0.83, 0.84, 0.88], [0.80, 0.82, 0.84]).test == "t"


def test_zero_differences_and_single_pairs_have_no_test():
    same = stats.paired([0.8, 0.9], [0.8, 0.9])
    assert same.delta == 0 and same.ci_low == same.ci_high == 0
    assert math.isnan(same.t_stat) and same.p_value == 1.0  # no evidence of any difference
    one = stats.paired([0.9], [0.8])
    assert one.delta == pytest.approx(0.1) and one.pairs == 1 and one.test == ""
    assert all(math.isnan(v) for v in (one.ci_low, one.ci_high, one.t_stat, one.p_value))
    assert stats.paired([], []).pairs == 0


def test_holm_steps_down_keeps_order_monotone_and_caps_at_one():
    # sorted: 0.005 x 4, 0.01 x 3, 0.03 x 2, 0.04 x 1 -> the last is raised to the 0.06 before it
    assert stats.holm([0.01, 0.04, 0.03, 0.005]) == pytest.approx([0.03, 0.06, 0.06, 0.02])
    assert stats.holm([0.6, 0.7]) == [1.0, 1.0]
    adjusted = stats.holm([0.035, math.nan, 0.01])  # NaN is no test: a family of two
    assert adjusted[0] == pytest.approx(0.035) and math.isnan(adjusted[1]) and adjusted[2] == pytest.approx(0.02)


def test_detectable_difference_approaches_the_normal_formula_for_many_pairs():
    z = 1.959963984540054 + 0.8416212335729143  # z_0.975 + z_0.8
    assert stats.detectable_difference(10_000, 2.0) == pytest.approx(z * 2.0 / 100, rel=1e-3)
    few = [stats.detectable_difference(n, 1.0) for n in (2, 3, 5, 10)]
    assert few == sorted(few, reverse=True) and few[-1] > z / math.sqrt(10)  # t's heavier tails cost more


def test_detectable_difference_has_the_power_asked_for_in_simulation():
    n, sd = 5, 1.5
    delta = stats.detectable_difference(n, sd)
    rng = np.random.default_rng(0)
    diffs = rng.normal(delta, sd, size=(100_000, n))
    t = diffs.mean(axis=1) / (diffs.std(axis=1, ddof=1) / math.sqrt(n))
    crit = 2.7764451051977987  # the 97.5 % quantile of Student's t with 4 degrees of freedom
    assert np.mean(np.abs(t) > crit) == pytest.approx(0.8, abs=0.01)
    with pytest.raises(ValueError, match="at least 2 pairs"):
        stats.detectable_difference(1, sd)
