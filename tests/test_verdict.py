"""The verdict across settings (icp.verdict): hand-computed IQMs, a reproducible stratified bootstrap, the
probability of improvement, average ranks, a diverged run as a loss, and the critical-difference figure drawn from
the laptop's committed summary."""
import math

import numpy as np
import pandas as pd
import pytest

from icp import aggregate, figures, verdict
from tests.conftest import REPO

LAPTOP = REPO / "results" / "laptop" / "summary.csv"


def _runs(top1: dict, study: str = "main", statuses: dict = None) -> pd.DataFrame:
    """Summary rows: ``top1[(scenario, method)]`` lists top-1 per seed; ``statuses[(scenario, method, seed)]`` sets
    a run's status (default complete)."""
    rows = []
    for (scenario, method), values in top1.items():
        for seed, value in enumerate(values):
            status = (statuses or {}).get((scenario, method, seed), "complete")
            rows.append({"run_id": f"fashion-mnist/resnet20/{scenario}/{method}/s{seed}", "studies": study,
                         "dataset": "fashion-mnist", "model": "resnet20", "scenario": scenario, "method": method,
                         "variant": method, "seed": seed, "status": status,
                         "top1": value if status == "complete" else math.nan})
    return pd.DataFrame(rows)


def _row(v: verdict.Verdict, method: str) -> pd.Series:
    return v.table.set_index("method").loc[method]


# per-seed top-1 in three settings (as fractions); differences to ce in percentage points:
#   clean: icp +1, +2, +3; sym0.4: icp -1, +4, +10 (pooled, sorted: -1 1 2 3 4 10: IQM = mean(1, 2, 3, 4) = 2.5)
KNOWN = {("clean", "ce"): [0.50, 0.60, 0.70], ("clean", "icp-adam"): [0.51, 0.62, 0.73],
         ("sym0.4", "ce"): [0.30, 0.30, 0.30], ("sym0.4", "icp-adam"): [0.29, 0.34, 0.40]}


def test_known_records_give_the_hand_computed_iqm_and_an_interval_around_it_reproducible_by_seed():
    v = verdict.compute(_runs(KNOWN))
    icp = _row(v, "icp-adam")
    assert icp.pairs == 6 and icp.settings_vs_ce == 2
    assert icp.iqm_delta == pytest.approx(2.5, abs=1e-6)
    assert icp.ci_low <= 2.5 <= icp.ci_high and icp.ci_low < icp.ci_high
    again = verdict.compute(_runs(KNOWN))
    assert (_row(again, "icp-adam").ci_low, _row(again, "icp-adam").ci_high) == (icp.ci_low, icp.ci_high)
    # the interval is the bootstrap's: another seed moves it, the same seed does not
    strata = np.random.default_rng(7).normal(size=(5, 4)).tolist()  # continuous: percentiles move with the draw
    assert verdict.stratified_bootstrap(strata, seed=0) == verdict.stratified_bootstrap(strata, seed=0)
    assert verdict.stratified_bootstrap(strata, seed=0) != verdict.stratified_bootstrap(strata, seed=1)
    assert _row(v, "ce").iqm_delta == 0.0


def test_iqm_cuts_a_quarter_at_each_end_and_the_bootstrap_resamples_within_each_stratum():
    assert verdict.iqm([1, 2, 3, 4, 100, -50, 5, 6]) == pytest.approx(np.mean([2, 3, 4, 5]))
    assert verdict.iqm([1.0, 3.0]) == 2.0  # a quarter of two rounds down to nothing cut
    # each stratum keeps its own values: two constant strata give the one pooled value in every replicate
    assert verdict.stratified_bootstrap([[1.0, 1.0], [3.0, 3.0]], statistic=np.mean) == (2.0, 2.0)


def test_probability_of_improvement_of_identical_methods_is_a_half_and_of_a_dominating_one_one():
    same = [[0.5, 0.6, 0.7], [0.2, 0.3]]
    assert verdict.probability_of_improvement(same, same) == 0.5
    better = [[0.8, 0.9, 1.0], [0.4, 0.5]]
    assert verdict.probability_of_improvement(better, same) == 1.0
    assert verdict.probability_of_improvement(same, better) == 0.0
    # Mann-Whitney: per setting, then averaged over settings (not pooled)
    assert verdict.prob_greater([1, 3], [2, 2]) == 0.5
    assert verdict.probability_of_improvement([[1, 3], [5]], [[2, 2], [4]]) == 0.75
    v = verdict.compute(_runs(KNOWN))
    assert _row(v, "icp-adam").p_improve_ce == pytest.approx((6 / 9 + 6 / 9) / 2)


def test_average_ranks_of_a_hand_made_table():
    table = pd.DataFrame({"a": [0.9, 0.5, 0.7], "b": [0.8, 0.6, 0.7], "c": [0.1, 0.4, 0.2]},
                         index=["s1", "s2", "s3"])
    # s1: a 1, b 2, c 3; s2: b 1, a 2, c 3; s3: a and b tie at 1.5, c 3
    assert verdict.average_ranks(table).to_dict() == pytest.approx({"a": 4.5 / 3, "b": 4.5 / 3, "c": 3.0})
    assert verdict.average_ranks(table, higher_is_better=False)["c"] == 1.0
    with pytest.raises(ValueError):
        verdict.average_ranks(table.assign(d=[0.1, None, 0.2]))


def test_a_diverged_run_makes_its_method_lose_that_setting_not_miss_it():
    top1 = {("clean", "ce"): [0.50, 0.50], ("clean", "ls"): [0.55, 0.55], ("clean", "icp-adam"): [0.90, 0.90],
            ("sym0.4", "ce"): [0.30, 0.30], ("sym0.4", "ls"): [0.35, 0.35], ("sym0.4", "icp-adam"): [0.40, 0.40]}
    healthy = verdict.compute(_runs(top1))
    assert _row(healthy, "icp-adam").avg_rank == 1.0 and _row(healthy, "icp-adam").p_improve_ce == 1.0
    v = verdict.compute(_runs(top1, statuses={("clean", "icp-adam", 1): "diverged"}))
    icp = _row(v, "icp-adam")
    assert icp.settings == 2 and icp.diverged_settings == 1  # the setting is counted, not dropped
    assert v.cell_means.loc["main: fashion-mnist/resnet20/clean", "icp-adam"] == verdict.WORST
    assert icp.p_improve_ce == pytest.approx((0.0 + 1.0) / 2)  # lost clean at every seed, won sym0.4
    assert icp.avg_rank == pytest.approx((3 + 1) / 2)  # last in clean, first in sym0.4
    assert icp.pairs == 4 and icp.iqm_delta < _row(healthy, "icp-adam").iqm_delta
    assert ("main: fashion-mnist/resnet20/clean", "icp-adam") in v.diverged
    assert "diverged in 1" in verdict.markdown(v) and "Counted as losses" in verdict.markdown(v)
    # a failed run (not the method's doing) is missing: the setting averages the complete seed
    failed = verdict.compute(_runs(top1, statuses={("clean", "icp-adam", 1): "failed"}))
    assert _row(failed, "icp-adam").avg_rank == 1.0 and _row(failed, "icp-adam").pairs == 3


def test_ranks_use_the_largest_complete_block_and_leave_controls_out():
    present = pd.DataFrame({"ce": [True, True, True], "ls": [True, False, True], "icp": [True, True, False]},
                           index=["main", "noisy", "tuned"])
    assert verdict.complete_block(present) == (["main", "noisy"], ["ce", "icp"])  # ties: the earliest settings
    present["pskd"] = [True, True, True]
    assert verdict.complete_block(present) == (["main", "noisy", "tuned"], ["ce", "pskd"])
    assert verdict.critical_difference(2, 2) == pytest.approx(1.96 * math.sqrt(2 * 3 / 12), rel=1e-3)
    top1 = {("clean", "ce"): [0.5, 0.5], ("clean", "icp-adam"): [0.6, 0.6], ("clean", "ce+budget=icp-adam"):
            [0.9, 0.9], ("sym0.4", "ce"): [0.3, 0.3], ("sym0.4", "icp-adam"): [0.2, 0.2],
            ("sym0.4", "ce+budget=icp-adam"): [0.9, 0.9]}
    v = verdict.compute(_runs(top1))
    assert v.ranked_methods == ["ce", "icp-adam"] and math.isnan(_row(v, "ce+budget=icp-adam").avg_rank)
    assert _row(v, "icp-adam").best_other == "ce"  # the control is nobody's best other method
    assert list(v.table.method) == ["ce", "icp-adam", "ce+budget=icp-adam"]  # methods by IQM, then controls


def test_the_tuned_study_compares_tuned_finals_by_method_and_leaves_trials_and_defaults_out():
    runs = pd.concat([_runs({("clean", "ce"): [0.5, 0.5], ("clean", "ls"): [0.4, 0.4]}, study="main;tuned"),
                      _runs({("clean", "ce+tuned=1"): [0.6, 0.6], ("clean", "ls+tuned=0"): [0.7, 0.7],
                             ("clean", "ls+trial=0"): [0.7]}, study="tuned")], ignore_index=True)
    values = verdict.setting_values(runs)
    tuned = values[values.study == "tuned"]
    assert sorted(tuned.method.unique()) == ["ce", "ls"] and tuned.value.max() == 0.7
    v = verdict.compute(runs)
    assert _row(v, "ls").p_improve_ce == 0.5  # lost main (0.4 < 0.5), won tuned (0.7 > 0.6)


def test_the_laptop_verdict_and_its_critical_difference_figure(tmp_path):
    runs = aggregate.read_summary(LAPTOP)
    v = verdict.compute(runs)
    assert {"ce", "icp-adam", "ls"} <= set(v.table.method) and len(v.settings) >= 2
    paths = verdict.write(runs, tmp_path)
    assert paths[1].read_text() == (REPO / "results/laptop/tables/verdict.md").read_text()  # committed = regenerated
    assert pd.read_csv(paths[0]).method.tolist() == v.table.method.tolist()
    assert "critical_difference" in figures.FIGURES and "critical difference" in figures.CAPTIONS[
        "critical_difference"] and "diverged" in figures.CAPTIONS["critical_difference"]
    png, pdf = figures.make("critical_difference", runs, pd.DataFrame(), tmp_path)
    assert png.stat().st_size > 5_000 and pdf.stat().st_size > 1_000
    fig = figures.FIGURES["critical_difference"][1](runs, pd.DataFrame(), None)
    title = fig.get_suptitle().replace("\n", " ")
    assert f"{v.cd:.2f} ranks" in title and f"over {len(v.ranked_settings)} settings" in title
    figures._libs()[0].close(fig)


def test_a_known_winner_is_named_and_its_interval_is_what_a_by_hand_bootstrap_gives():
    """Synthetic records: `winner` beats ce by about 2 pp in each of four settings, `ls` is ce's equal; the table
    names the winner (first by IQM, rank 1, likely to improve on the best other), and its interval matches a plain
    loop bootstrap written here (seeds resampled within each setting, a different random source)."""
    import random

    rng = np.random.default_rng(3)
    top1, diffs = {}, []
    for scenario in ("clean", "sym0.2", "sym0.4", "asy0.4"):
        base = 0.5 + 0.1 * rng.random() + rng.normal(0, 0.003, 5)  # seeds spread less than the gain
        top1[(scenario, "ce")] = list(np.round(base, 4))
        top1[(scenario, "ls")] = list(np.round(base + rng.normal(0, 0.005, 5), 4))
        top1[(scenario, "winner")] = list(np.round(base + 0.02 + rng.normal(0, 0.01, 5), 4))
        diffs.append([100 * (w - c) for w, c in zip(top1[(scenario, "winner")], top1[(scenario, "ce")])])
    v = verdict.compute(_runs(top1))
    assert v.table.method.iloc[0] == "winner"  # first by IQM
    win = _row(v, "winner")
    assert win.avg_rank == 1.0 and win.p_improve_ce > 0.8 and win.best_other in ("ce", "ls") and win.p_improve_best > 0.8

    def iqm(xs):
        xs, cut = sorted(xs), len(xs) // 4
        kept = xs[cut:len(xs) - cut]
        return sum(kept) / len(kept)

    hand = random.Random(11)
    reps = sorted(iqm([x for d in diffs for x in hand.choices(d, k=len(d))]) for _ in range(4000))
    low, high = reps[int(0.025 * len(reps))], reps[int(0.975 * len(reps)) - 1]
    assert win.iqm_delta == pytest.approx(iqm([x for d in diffs for x in d]), abs=1e-6)
    assert (win.ci_low, win.ci_high) == pytest.approx((low, high), abs=0.15)  # two samplings of one distribution
