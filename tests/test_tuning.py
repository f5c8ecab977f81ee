"""Equal tuning (icp.tuning): reproducible quasi-random draws, the same unit points for every method, equal trial
counts enforced."""
import math

import pytest

from icp import tuning
from icp.config import ConfigError

SPACE_CE = {"optim.lr": {"low": 0.01, "high": 1.0, "log": True}, "optim.weight_decay": {"low": 1e-5, "high": 1e-3,
                                                                                       "log": True}}
SPACE_ICP = {**SPACE_CE, "method.options.steps": {"low": 1, "high": 10, "int": True},
             "method.options.warmup": {"values": [0.0, 0.25, 0.5]}}


def test_draws_are_identical_across_expansions_and_inside_their_ranges():
    a, b = tuning.draws(SPACE_ICP, 8, draw_seed=3), tuning.draws(SPACE_ICP, 8, draw_seed=3)
    assert a == b
    assert len({tuple(sorted(t.items())) for t in a}) == 8  # quasi-random, not repeated
    for t in a:
        assert 0.01 <= t["optim.lr"] <= 1.0 and 1e-5 <= t["optim.weight_decay"] <= 1e-3
        assert isinstance(t["method.options.steps"], int) and 1 <= t["method.options.steps"] <= 10
        assert t["method.options.warmup"] in (0.0, 0.25, 0.5)
    assert tuning.draws(SPACE_ICP, 8, draw_seed=4) != a  # the seed matters


def test_methods_share_the_unit_points_and_differ_only_in_their_spaces():
    ce, icp = tuning.draws(SPACE_CE, 6, 0), tuning.draws(SPACE_ICP, 6, 0)
    points = tuning.unit_points(6, 0)
    # the keys, sorted, take the first columns: method.options.* sort before optim.*, so ce's lr is column 0 and
    # icp's column 2 of the same points
    for i in range(6):
        lr_ce = math.exp(math.log(0.01) + points[i][0] * (math.log(1.0) - math.log(0.01)))
        assert ce[i]["optim.lr"] == pytest.approx(lr_ce, rel=5e-3)
        lr_icp = math.exp(math.log(0.01) + points[i][2] * (math.log(1.0) - math.log(0.01)))
        assert icp[i]["optim.lr"] == pytest.approx(lr_icp, rel=5e-3)
    # the same space gives the same trials whatever the method
    assert tuning.draws(dict(SPACE_CE), 6, 0) == ce


def test_a_log_range_covers_its_decades_evenly():
    lrs = [t["optim.lr"] for t in tuning.draws({"optim.lr": {"low": 1e-4, "high": 1.0, "log": True}}, 64, 0)]
    decades = [sum(1 for v in lrs if 10 ** -(k + 1) <= v < 10 ** -k) for k in range(4)]
    assert all(12 <= d <= 20 for d in decades), decades  # 16 each, a Halton sequence is balanced


def test_unequal_trials_and_a_tuned_method_without_a_space_are_refused():
    spaces = {"ce": SPACE_CE, "icp-adam": SPACE_ICP}
    tuning.check({"trials": 3, "spaces": spaces}, {"tuned": {"ce", "icp-adam"}}, "g.yaml")
    with pytest.raises(ConfigError, match="different numbers of trials"):
        tuning.check({"trials": {"ce": 3, "icp-adam": 5}, "spaces": spaces}, {"tuned": {"ce", "icp-adam"}}, "g")
    with pytest.raises(ConfigError, match="no space for it"):
        tuning.check({"trials": 3, "spaces": {"ce": SPACE_CE}}, {"tuned": {"ce", "icp-adam"}}, "g")
    with pytest.raises(ConfigError, match="no 'tuning' section"):
        tuning.check(None, {"tuned": {"ce"}}, "g")
    with pytest.raises(ConfigError, match="low <= high"):
        tuning.check({"trials": 3, "spaces": {"ce": {"optim.lr": {"low": 1, "high": 0}}}}, {"t": {"ce"}}, "g")
