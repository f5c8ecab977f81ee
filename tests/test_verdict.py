"""The verdict per study over independent units (icp.results.verdict): hand-computed IQMs, a reproducible stratified
bootstrap (none with fewer than three seeds), the probability of improvement, average ranks over units with a
critical difference only over five units or more, a method measured on fewer units listed apart, a diverged run as a
loss, tuned as a study of its own, and the critical-difference figure."""
import math

import numpy as np
import pandas as pd
import pytest

from icp import figures
from icp import stats as icp_stats
from icp.results import frames, verdict
from tests.conftest import REPO

LAPTOP = REPO / "results" / "laptop" / "summary.csv"


def _runs(top1: dict, study: str = "main", statuses: dict = None, dataset: str = "fashion-mnist",
          model: str = "resnet20") -> pd.DataFrame:
    """Summary rows: ``top1[(scenario, method)]`` lists top-1 per seed (a key may also be (dataset, model,
    scenario, method)); ``statuses[(scenario, method, seed)]`` sets a run's status (default complete)."""
    rows = []
    for key, values in top1.items():
        d, mo, scenario, method = key if len(key) == 4 else (dataset, model, *key)
        for seed, value in enumerate(values):
            status = (statuses or {}).get((scenario, method, seed), "complete")
            rows.append({"run_id": f"{d}/{mo}/{scenario}/{method}/s{seed}", "studies": study, "dataset": d,
                         "model": mo, "scenario": scenario, "method": method, "variant": method, "seed": seed,
                         "status": status, "top1": value if status == "complete" else math.nan})
    return pd.DataFrame(rows)


def _row(v: verdict.Verdict, method: str) -> pd.Series:
    return v.table.set_index("method").loc[method]


# per-seed top-1 (fractions) in two units of study main; differences to ce in percentage points:
#   fashion-mnist: icp +1, +2, +3; cifar10: icp -1, +4, +10 (pooled, sorted: -1 1 2 3 4 10: IQM = mean(1..4) = 2.5)
KNOWN = {("fashion-mnist", "resnet20", "clean", "ce"): [0.50, 0.60, 0.70],
         ("fashion-mnist", "resnet20", "clean", "icp-adam"): [0.51, 0.62, 0.73],
         ("cifar10", "resnet20", "clean", "ce"): [0.30, 0.30, 0.30],
         ("cifar10", "resnet20", "clean", "icp-adam"): [0.29, 0.34, 0.40]}


def test_known_records_give_the_hand_computed_iqm_and_an_interval_around_it_reproducible_by_seed():
    v = verdict.compute(_runs(KNOWN))["main"]
    icp = _row(v, "icp-adam")
    assert icp.seed_pairs == 6 and icp.units_vs_ce == 2 and not icp.too_few_seeds
    assert icp.iqm_delta == pytest.approx(2.5, abs=1e-6)
    assert icp.iqm_delta_low <= 2.5 <= icp.iqm_delta_high and icp.iqm_delta_low < icp.iqm_delta_high
    # normalised per unit: delta / ce's error; fashion-mnist 1/50, 2/40, 3/30; cifar10 -1/70, 4/70, 10/70
    rel = sorted([1 / 50, 2 / 40, 3 / 30, -1 / 70, 4 / 70, 10 / 70])
    assert icp.iqm_relative == pytest.approx(100 * np.mean(rel[1:5]), abs=1e-4)
    again = verdict.compute(_runs(KNOWN))["main"]
    assert (_row(again, "icp-adam").iqm_delta_low, _row(again, "icp-adam").iqm_delta_high) == (
        icp.iqm_delta_low, icp.iqm_delta_high)
    strata = np.random.default_rng(7).normal(size=(5, 4)).tolist()  # continuous: percentiles move with the draw
    assert icp_stats.stratified_bootstrap(strata, seed=0) == icp_stats.stratified_bootstrap(strata, seed=0)
    assert icp_stats.stratified_bootstrap(strata, seed=0) != icp_stats.stratified_bootstrap(strata, seed=1)
    assert _row(v, "ce").iqm_delta == 0.0 and _row(v, "ce").iqm_relative == 0.0


def test_iqm_cuts_a_quarter_at_each_end_and_the_bootstrap_resamples_within_each_stratum():
    assert icp_stats.iqm([1, 2, 3, 4, 100, -50, 5, 6]) == pytest.approx(np.mean([2, 3, 4, 5]))
    assert icp_stats.iqm([1.0, 3.0]) == 2.0  # a quarter of two rounds down to nothing cut
    assert icp_stats.stratified_bootstrap([[1.0, 1.0], [3.0, 3.0]], statistic=np.mean) == (2.0, 2.0)


def test_two_seeds_per_unit_give_no_interval_and_three_do():
    two = {k: v[:2] for k, v in KNOWN.items()}
    v = verdict.compute(_runs(two))["main"]
    icp = _row(v, "icp-adam")
    assert icp.too_few_seeds and math.isnan(icp.iqm_delta_low) and math.isnan(icp.iqm_relative_high)
    assert icp.iqm_delta == pytest.approx(np.mean([1, 2, -1, 4]))  # the estimate stays
    md = verdict.markdown({"main": v})
    assert "% (too few seeds) |" in md and "[" not in md.split("| icp-adam |")[1].split("\n")[0]
    three = _row(verdict.compute(_runs(KNOWN))["main"], "icp-adam")
    assert not three.too_few_seeds and three.iqm_delta_low < three.iqm_delta_high
    assert "(too few seeds) |" not in verdict.markdown(verdict.compute(_runs(KNOWN)))


def test_probability_of_improvement_of_identical_methods_is_a_half_and_of_a_dominating_one_one():
    same = [[0.5, 0.6, 0.7], [0.2, 0.3]]
    assert icp_stats.probability_of_improvement(same, same) == 0.5
    better = [[0.8, 0.9, 1.0], [0.4, 0.5]]
    assert icp_stats.probability_of_improvement(better, same) == 1.0
    assert icp_stats.probability_of_improvement(same, better) == 0.0
    assert icp_stats.prob_greater([1, 3], [2, 2]) == 0.5
    assert icp_stats.probability_of_improvement([[1, 3], [5]], [[2, 2], [4]]) == 0.75
    v = verdict.compute(_runs(KNOWN))["main"]
    assert _row(v, "icp-adam").p_improve_ce == pytest.approx((6 / 9 + 6 / 9) / 2)  # per unit, then averaged


def test_average_ranks_of_a_hand_made_table():
    table = pd.DataFrame({"a": [0.9, 0.5, 0.7], "b": [0.8, 0.6, 0.7], "c": [0.1, 0.4, 0.2]},
                         index=["s1", "s2", "s3"])
    assert icp_stats.average_ranks(table).to_dict() == pytest.approx({"a": 4.5 / 3, "b": 4.5 / 3, "c": 3.0})
    assert icp_stats.average_ranks(table, higher_is_better=False)["c"] == 1.0
    with pytest.raises(ValueError):
        icp_stats.average_ranks(table.assign(d=[0.1, None, 0.2]))
    assert icp_stats.critical_difference(2, 2) == pytest.approx(1.96 * math.sqrt(2 * 3 / 12), rel=1e-3)


def _noisy_two_units(methods=("ce", "icp-adam", "ls"), seeds: int = 3) -> pd.DataFrame:
    """Study noisy: 2 datasets × 10 noise levels, the levels of a dataset sharing one offset per method (correlated
    settings)."""
    rng = np.random.default_rng(0)
    top1 = {}
    for d, base in (("fashion-mnist", 0.9), ("cifar10", 0.7)):
        offset = {m: 0.01 * i for i, m in enumerate(methods)}
        for level in range(10):
            for m in methods:
                top1[(d, "resnet20", f"sym0.{level}", m)] = list(base - 0.02 * level + offset[m]
                                                                 + rng.normal(0, 0.002, seeds))
    return _runs(top1, study="noisy")


def test_correlated_settings_of_two_units_count_as_two_and_give_no_critical_difference(tmp_path):
    runs = _noisy_two_units()
    v = verdict.compute(runs)["noisy"]
    assert v.units == ["fashion-mnist/resnet20", "cifar10/resnet20"] and len(v.ranked_units) == 2  # not 20
    assert _row(v, "icp-adam").seed_pairs == 6 and _row(v, "icp-adam").units == 2
    assert not v.has_cd and math.isnan(v.friedman_p)
    assert v.why_no_cd() == ("no critical-difference diagram: 2 independent units (fashion-mnist/resnet20, "
                             "cifar10/resnet20); Friedman/Nemenyi need ≥ 5")
    md = verdict.markdown({"noisy": v})
    assert "No critical-difference diagram: 2 independent units" in md and "Nemenyi, α" not in md
    csv = pd.read_csv(verdict.write(runs, tmp_path)[0])
    assert set(csv.study) == {"noisy"} and math.isnan(csv.critical_difference.iloc[0])
    fig = figures.FIGURES["critical_difference"][1](runs, pd.DataFrame(), None)
    assert any("2 independent units" in t.get_text().replace("\n", " ") for t in fig.axes[0].texts)
    figures.plot.libs()[0].close(fig)
    png, pdf = figures.make("critical_difference", runs, pd.DataFrame(), tmp_path)  # the file is still made
    assert png.exists() and pdf.exists()


# five units (dataset × model), three methods, three seeds; each unit's mean top-1 ranks them:
#   u1, u2, u3: a > b > c; u4: b > a > c; u5: c > b > a  ->  a (1+1+1+2+3)/5 = 1.6, b (2+2+2+1+2)/5 = 1.8,
#   c (3+3+3+3+1)/5 = 2.6
FIVE = {"u1": (0.80, 0.70, 0.60), "u2": (0.50, 0.45, 0.40), "u3": (0.90, 0.88, 0.86), "u4": (0.60, 0.65, 0.55),
        "u5": (0.30, 0.35, 0.40)}


def _five_units() -> pd.DataFrame:
    top1 = {}
    for unit, means in FIVE.items():
        for m, mean in zip(("ce", "b", "c"), means):
            for scenario, shift in (("clean", 0.0), ("sym0.2", -0.1)):  # two settings per unit, averaged first
                top1[(unit, "resnet20", scenario, m)] = [mean + shift - 0.001, mean + shift, mean + shift + 0.001]
    return _runs(top1)


def test_five_units_give_a_critical_difference_and_friedman_p_from_per_unit_means(tmp_path):
    from scipy import stats

    runs = _five_units()
    v = verdict.compute(runs)["main"]
    assert v.ranked_methods == ["ce", "b", "c"] and len(v.ranked_units) == 5 and v.has_cd
    ranks = v.table.set_index("method").avg_rank
    assert ranks.to_dict() == pytest.approx({"ce": 1.6, "b": 1.8, "c": 2.6})
    assert v.cd == pytest.approx(icp_stats.critical_difference(3, 5))
    means = np.array([[m - 0.05 for m in FIVE[u]] for u in FIVE])  # the mean of clean and sym0.2
    assert v.cell_means.to_numpy() == pytest.approx(means)
    assert v.friedman_p == pytest.approx(stats.friedmanchisquare(*means.T).pvalue)
    md = verdict.markdown(verdict.compute(runs))
    assert f"critical difference (Nemenyi, α = 0.05) {v.cd:.2f} ranks; Friedman" in md
    assert "average rank (of 3, over 5 units)" in md and "No critical-difference" not in md
    fig = figures.FIGURES["critical_difference"][1](runs, pd.DataFrame(), None)
    title = fig.axes[0].get_title().replace("\n", " ")
    assert "study main: 3 methods over 5 units" in title and f"{v.cd:.2f} ranks" in title
    figures.plot.libs()[0].close(fig)
    png, _ = figures.make("critical_difference", runs, pd.DataFrame(), tmp_path)
    assert png.stat().st_size > 5_000


def test_a_method_on_fewer_units_is_listed_apart_and_is_nobodys_best_other_method():
    runs = _five_units()
    # `sgd` beats everyone by far, but only in u1 and u2
    extra = _runs({(u, "resnet20", s, "sgd"): [0.99, 0.99, 0.99] for u in ("u1", "u2") for s in ("clean", "sym0.2")})
    v = verdict.compute(pd.concat([runs, extra], ignore_index=True))["main"]
    sgd = _row(v, "sgd")
    assert not sgd.ranked and math.isnan(sgd.avg_rank) and sgd.units == 2
    assert "sgd" not in v.ranked_methods and "sgd" not in set(v.table.best_other)
    assert list(v.table.method).index("sgd") > list(v.table.method).index("c")  # after every ranked method
    assert _row(v, "ce").best_other == "b" and _row(v, "b").best_other == "ce"
    md = verdict.markdown({"main": v})
    assert "measured on 2 of 5 units: not ranked" in md and "`sgd` (2 of 5)" in md


def test_a_diverged_run_makes_its_method_lose_that_setting_not_miss_it():
    top1 = {("clean", "ce"): [0.50, 0.50], ("clean", "ls"): [0.55, 0.55], ("clean", "icp-adam"): [0.90, 0.90],
            ("sym0.4", "ce"): [0.30, 0.30], ("sym0.4", "ls"): [0.35, 0.35], ("sym0.4", "icp-adam"): [0.40, 0.40]}
    healthy = verdict.compute(_runs(top1, study="noisy"))["noisy"]
    assert _row(healthy, "icp-adam").avg_rank == 1.0 and _row(healthy, "icp-adam").p_improve_ce == 1.0
    v = verdict.compute(_runs(top1, study="noisy", statuses={("clean", "icp-adam", 1): "diverged"}))["noisy"]
    icp = _row(v, "icp-adam")
    assert icp.units == 1 and icp.diverged_settings == 1  # the setting is counted, not dropped
    # the unit's per-seed mean: (0 + 0.40) / 2 = 0.20 against ce's (0.50 + 0.30) / 2 = 0.40
    assert v.cell_means.loc["fashion-mnist/resnet20", "icp-adam"] == pytest.approx(0.20)
    assert icp.iqm_delta == pytest.approx(-20.0) and icp.p_improve_ce == 0.0 and icp.avg_rank == 3.0
    assert ("noisy: fashion-mnist/resnet20/clean", "icp-adam") in v.diverged
    md = verdict.markdown({"noisy": v})
    assert "diverged in 1 setting(s)" in md and "Counted as losses" in md
    # a failed run (not the method's doing) is missing: the setting keeps the complete seed
    failed = verdict.compute(_runs(top1, study="noisy", statuses={("clean", "icp-adam", 1): "failed"}))["noisy"]
    assert _row(failed, "icp-adam").avg_rank == 1.0 and _row(failed, "icp-adam").seed_pairs == 2


def test_controls_are_shown_but_not_ranked():
    top1 = {("clean", "ce"): [0.5, 0.5], ("clean", "icp-adam"): [0.6, 0.6], ("clean", "ce+budget=icp-adam"):
            [0.9, 0.9]}
    v = verdict.compute(_runs(top1))["main"]
    assert v.ranked_methods == ["ce", "icp-adam"] and math.isnan(_row(v, "ce+budget=icp-adam").avg_rank)
    assert _row(v, "icp-adam").best_other == "ce"  # the control is nobody's best other method
    assert _row(v, "ce+budget=icp-adam").iqm_delta == pytest.approx(40.0)
    assert list(v.table.method) == ["icp-adam", "ce", "ce+budget=icp-adam"]  # methods by IQM, then controls


def test_tuned_is_a_study_of_its_own_with_tuned_finals_by_method_and_not_in_mains_section():
    runs = pd.concat([_runs({("clean", "ce"): [0.5, 0.5], ("clean", "ls"): [0.4, 0.4]}, study="main;tuned"),
                      _runs({("clean", "ce+tuned=1"): [0.6, 0.6], ("clean", "ls+tuned=0"): [0.7, 0.7],
                             ("clean", "ls+trial=0"): [0.7]}, study="tuned")], ignore_index=True)
    values = verdict.setting_values(runs)
    tuned = values[values.study == "tuned"]
    assert sorted(tuned.method.unique()) == ["ce", "ls"] and tuned.value.max() == 0.7
    vs = verdict.compute(runs)
    assert list(vs) == ["main", "tuned"]
    assert _row(vs["main"], "ls").p_improve_ce == 0.0 and _row(vs["tuned"], "ls").p_improve_ce == 1.0
    assert _row(vs["main"], "ls").iqm_delta == pytest.approx(-10.0)  # main's defaults only, tuned finals apart
    md = verdict.markdown(vs)
    main, tuned_md = md.split("## main")[1].split("## tuned")
    assert "+10.00" in tuned_md and "+10.00" not in main


def test_the_laptop_verdict_and_its_critical_difference_figure(tmp_path):
    runs = frames.read_summary(LAPTOP)
    vs = verdict.compute(runs)
    assert {"main", "noisy"} <= set(vs) and {"ce", "icp-adam", "ls"} <= set(vs["main"].table.method)
    paths = verdict.write(runs, tmp_path)
    assert paths[1].read_text() == (REPO / "results/laptop/tables/verdict.md").read_text()  # committed = regenerated
    csv = pd.read_csv(paths[0])
    assert csv.study.tolist()[0] == "main" and csv.method.tolist() == [m for v in vs.values() for m in v.table.method]
    assert "critical_difference" in figures.FIGURES and "critical difference" in figures.CAPTIONS[
        "critical_difference"] and "diverged" in figures.CAPTIONS["critical_difference"]
    png, pdf = figures.make("critical_difference", runs, pd.DataFrame(), tmp_path)
    assert png.stat().st_size > 5_000 and pdf.stat().st_size > 1_000


def test_a_known_winner_is_named_and_its_interval_is_what_a_by_hand_bootstrap_gives():
    """Synthetic records: `winner` beats ce by about 2 pp in each of four units, `ls` is ce's equal; the table names
    the winner (first by IQM, rank 1, likely to improve on the best other), and its interval matches a plain loop
    bootstrap written here (seeds resampled within each unit, a different random source)."""
    import random

    rng = np.random.default_rng(3)
    top1, diffs = {}, []
    for dataset in ("a", "b", "c", "d"):
        base = 0.5 + 0.1 * rng.random() + rng.normal(0, 0.003, 5)  # seeds spread less than the gain
        top1[(dataset, "resnet20", "clean", "ce")] = list(np.round(base, 4))
        top1[(dataset, "resnet20", "clean", "ls")] = list(np.round(base + rng.normal(0, 0.005, 5), 4))
        top1[(dataset, "resnet20", "clean", "winner")] = list(np.round(base + 0.02 + rng.normal(0, 0.01, 5), 4))
        diffs.append([100 * (w - c) for w, c in zip(top1[(dataset, "resnet20", "clean", "winner")],
                                                     top1[(dataset, "resnet20", "clean", "ce")])])
    v = verdict.compute(_runs(top1))["main"]
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
    assert (win.iqm_delta_low, win.iqm_delta_high) == pytest.approx((low, high), abs=0.15)
