"""The Equal tuning section of a tuned study's tables and the tuning-curve figure, from known records
(icp.results.tuning, icp.figures.tuning)."""
import itertools
import json
import math
import os

import pytest
import yaml

from icp import cli, figures, grid, stats
from icp.results import cells as cells_mod
from icp.results import frames, summary, tables
from tests.test_aggregate import record

SEEDS = (0, 1, 2)
TRIAL_VAL = {"ce": [0.50, 0.70, None], "ls": [0.60, 0.65, 0.55]}  # None: a failed trial, which loses
TUNED = {"ce": [0.80, 0.82, 0.85], "ls": [0.83, 0.86, 0.86]}  # test top-1 of the finals, per seed
DEFAULT = {"ce": [0.78, 0.80, 0.80], "ls": [0.80, 0.81, 0.85]}


def _brute(values, b, replace):
    """(mean, sd) of the best of b draws, over every b-subset (without replacement) or every b-tuple (with)."""
    draws = list(itertools.product(values, repeat=b) if replace else itertools.combinations(values, b))
    best = [max(d) for d in draws]
    mean = sum(best) / len(best)
    return mean, math.sqrt(sum((x - mean) ** 2 for x in best) / len(best))


@pytest.mark.parametrize("values", [[0.31, 0.77, 0.5, 0.5, 0.12, 0.9], [3.0, 1.0, 2.0], [5.0], [0.7, 0.7, 0.7, 0.2],
                                    [0.0, 50.0, 70.0, 0.0]])
def test_the_best_of_b_trials_is_the_mean_and_sd_of_the_best_over_every_subset_or_tuple(values):
    k = len(values)
    for b in range(1, k + 1):
        for replace in (False, True):
            mean, sd = stats.best_of(values, b, replace=replace)
            want_mean, want_sd = _brute(values, b, replace)
            assert mean == pytest.approx(want_mean, rel=1e-12, abs=1e-12)
            assert sd == pytest.approx(want_sd, rel=1e-9, abs=1e-9)
    assert stats.expected_best(values, 1) == pytest.approx(sum(values) / k)
    assert stats.expected_best(values, 1, replace=True) == pytest.approx(sum(values) / k)
    assert stats.best_of(values, k) == (max(values), 0.0)  # every trial: the best, no spread
    # with replacement a budget beyond k is allowed and approaches the best; without, it is refused
    assert _brute(values, k + 1, True)[0] == pytest.approx(stats.expected_best(values, k + 1, replace=True))
    with pytest.raises(ValueError):
        stats.best_of(values, k + 1)
    with pytest.raises(ValueError):
        stats.best_of(values, 0, replace=True)
    assert [m for m, _ in stats.tuning_curve(values)] == pytest.approx([_brute(values, b, False)[0]
                                                                        for b in range(1, k + 1)])


def test_a_known_bootstrap_best_of_two():
    # two trials, 0 and 1, resampled twice: (0,0) 0, (0,1) 1, (1,0) 1, (1,1) 1: E 3/4, sd sqrt(3)/4
    assert stats.best_of([1.0, 0.0], 2, replace=True) == pytest.approx((0.75, math.sqrt(3) / 4))
    assert stats.best_of([1.0, 0.0], 2) == (1.0, 0.0)


def _write(run, rec):
    os.makedirs(run.run_dir, exist_ok=True)
    with open(os.path.join(run.run_dir, "record.json"), "w") as f:
        json.dump(rec, f)


def _with_lr(rec, run):
    lr = next((float(o.split("=", 1)[1]) for o in run.overrides if o.startswith("optim.lr=")), 0.1)
    rec["config"]["optim"] = {"lr": lr}  # the tuned runs' settings differ from the default runs'
    return rec


@pytest.fixture
def tuned(tmp_path):
    """A tuned study of ce and ls, 3 trials each (one of ce's failed), selected, finals and defaults trained."""
    return _make_tuned(tmp_path, TRIAL_VAL, TUNED, DEFAULT)


def _make_tuned(tmp_path, trial_val, tuned_top1, default_top1, keep=lambda run: True):
    """A tuned study of ``trial_val``'s methods (method -> each trial's validation top-1, None: failed), selected,
    finals and defaults trained (method -> test top-1 per seed); ``keep(run)`` False: no record of that run."""
    spec = {"runs_dir": str(tmp_path / "runs"), "results_dir": str(tmp_path / "res"), "seeds": list(SEEDS),
            "recipes": {"fashion-mnist/resnet20": "config/recipes/fmnist-resnet20.yaml"},
            "tuning": {"trials": 3, "seed": 100, "spaces": {
                m: {"optim.lr": {"low": 0.01, "high": 0.5, "log": True, "source": "test"}} for m in trial_val}},
            "studies": {"tuned": [{"datasets": ["fashion-mnist"], "models": ["resnet20"], "methods": list(trial_val),
                                   "tune": True}]}}
    path = tmp_path / "g.yaml"
    path.write_text(yaml.safe_dump(spec))
    g = grid.load_expand(path, check_recipes=False)
    for cell in g.tuned:
        for rid, val in zip(cell.trials, trial_val[cell.method]):
            run = g[rid]
            if not keep(run):
                continue
            if val is None:
                _write(run, record(run, None, status="failed", error="ValueError: boom"))
                continue
            rec = _with_lr(record(run, val - 0.01), run)  # the helper's validation top-1 is test + 0.01
            rec["last"]["test"]["top1"] = 1.0 - val  # the test split disagrees: it must not choose
            _write(run, rec)
        assert cli.main(["select", "--grid", str(path), "--cell", cell.name]) == 0
    g = grid.load_expand(path, check_recipes=False)  # now with the chosen finals
    for run in g.runs.values():
        if not keep(run) or "+trial=" in run.run_id:
            continue
        _write(run, _with_lr(record(run, (tuned_top1 if "+tuned=" in run.run_id else default_top1)[run.method]
                                    [run.seed]), run))
    summary.summarize(g, tmp_path / "res")
    return g, frames.read_summary(tmp_path / "res" / "summary.csv")


def _section(md: str, start: str) -> str:
    part = md.split(f"## {start}", 1)[1]
    return part.split("\n## ", 1)[0]


def test_the_tuned_table_gives_default_beside_tuned_and_paired_differences(tuned, tmp_path):
    g, runs = tuned
    paths = tables.write_tables("tuned", frames.study_runs(runs, "tuned"), cells_mod.cells(runs),
                                   tmp_path / "tables", grid=g)
    md = paths[1].read_text()
    section = _section(md, "Equal tuning, fashion-mnist / resnet20 / clean")
    rows = {line.split(" | ")[0].strip("| "): line.split(" | ") for line in section.splitlines()
            if line.startswith("| ce") or line.startswith("| ls")}
    head = [c.strip("| ") for c in next(line for line in section.splitlines() if line.startswith("| variant"))
            .split(" | ")]
    col = {name: i for i, name in enumerate(head)}
    assert rows["ce"][col["default"]] == "79.33 ± 1.15 (3)" and rows["ce"][col["tuned"]] == "82.33 ± 2.52 (3)"
    assert rows["ls"][col["tuned"]] == "85.00 ± 1.73 (3)"
    # chosen on validation (trial 1 for both; test would have picked trial 0), ce's failed trial lost
    assert rows["ce"][col["chosen trial: values (val top-1 %)"]].startswith("1: optim.lr=")
    assert "(val 70.00)" in rows["ce"][col["chosen trial: values (val top-1 %)"]]
    assert rows["ce"][col["trials"]].strip(" |") == "1 of 3 lost" and rows["ls"][col["trials"]].strip(" |") == \
        "0 of 3 lost"
    # tuning luck: the best of 3 trials resampled with replacement (every 3-tuple; the lost trial at 0 %)
    for m, chosen in (("ce", 1), ("ls", 1)):
        vals = [100 * (v or 0.0) for v in TRIAL_VAL[m]]
        best = [max(t) for t in itertools.product(vals, repeat=3)]
        mean = sum(best) / 27
        sd = math.sqrt(sum((b - mean) ** 2 for b in best) / 27)
        assert rows[m][col["E[best of k] val (sd)"]] == f"{mean:.2f} ({sd:.2f}), chosen {vals[chosen] - mean:+.2f}"
    # by hand: P(best = 70) = 1 − (2/3)³ = 19/27, P(50) = (2/3)³ − (1/3)³ = 7/27, P(0) = 1/27; E = 1680/27
    assert rows["ce"][col["E[best of k] val (sd)"]] == "62.22 (14.99), chosen +7.78"
    # compute: ce and ls cost one ce run a run, the failed trial its whole budget too
    assert rows["ce"][col["compute (ce runs): trials + finals"]].strip(" |") == "3.0 + 3.0"
    assert rows["ls"][col["compute (ce runs): trials + finals"]].strip(" |") == "3.0 + 3.0"
    # ls tuned − ce tuned: +0.03, +0.04, +0.01 over the seeds; alone in its family (Holm p = p)
    vs_ce = stats.paired(TUNED["ls"], TUNED["ce"], resolution=1e-4)
    assert rows["ls"][col["Δ tuned − tuned ce"]].startswith(f"{100 * vs_ce.delta:+.2f} ")
    assert f"t-test p={vs_ce.p_value:.3f}, Holm p={vs_ce.p_value:.3f}" in rows["ls"][col["Δ tuned − tuned ce"]]
    assert rows["ce"][col["Δ tuned − tuned ce"]] == "–"
    # tuned − default of each method: Holm over the two
    ps = [stats.paired(TUNED[m], DEFAULT[m], resolution=1e-4).p_value for m in ("ce", "ls")]
    for m, p_holm in zip(("ce", "ls"), stats.holm(ps)):
        d = stats.paired(TUNED[m], DEFAULT[m], resolution=1e-4)
        assert rows[m][col["Δ tuned − default"]].startswith(f"{100 * d.delta:+.2f} ")
        assert f"Holm p={p_holm:.3f}" in rows[m][col["Δ tuned − default"]]
    # the trials are the section's: no other table has a row of them, the intro counts them
    rest = md.split("## Equal tuning", 1)[0] + md.split("## Equal tuning", 1)[1].split("\n## ", 1)[1]
    assert "+trial=" not in rest
    assert "Its 6 tuning trial runs (5 complete) are in the Equal tuning section only." in md
    assert "ce+tuned=1 (tuned: trial 1's setting, chosen on validation)" in md  # the finals in the study tables
    # the csv keeps every cell, trials included
    assert sum("+trial=" in line for line in paths[0].read_text().splitlines()) == 6
    assert "Equal tuning" in paths[2].read_text() and "Equal tuning" in paths[3].read_text()


def _rows(g, runs, tmp_path):
    md = tables.write_tables("tuned", frames.study_runs(runs, "tuned"), cells_mod.cells(runs),
                                tmp_path / "tables", grid=g)[1].read_text()
    section = _section(md, "Equal tuning, fashion-mnist / resnet20 / clean")
    lines = [line.strip("| ").split(" | ") for line in section.splitlines() if line.startswith("| ")]
    head = lines[0]
    return {cells[0]: dict(zip(head, cells)) for cells in lines[1:]}, section  # the rule line is "|---|"


ICP_TRIALS = {"ce": [0.5, 0.6, 0.7], "icp-adam": [0.6, 0.7, 0.65]}
ICP_FINALS = {"ce": [0.8, 0.8, 0.8], "icp-adam": [0.81, 0.82, 0.83]}


def test_the_tuned_table_gives_each_methods_tuning_compute_in_ce_runs(tmp_path):
    g, runs = _make_tuned(tmp_path, ICP_TRIALS, ICP_FINALS, ICP_FINALS)
    rows, section = _rows(g, runs, tmp_path)
    # the records train 2 epochs: ICP-Adam's warm-up floor(0.25 · 2) = 0 epochs, then (2K + 4)/3 = 14/3 ce steps a
    # step: 3 trials of a 4.67x method are 14.0 ce runs, and so are its 3 finals; ce's are 3 and 3
    assert rows["icp-adam"]["compute (ce runs): trials + finals"] == "14.0 + 14.0"
    assert rows["ce"]["compute (ce runs): trials + finals"] == "3.0 + 3.0"
    assert "compute_ce_epochs" in section and "declared" in section  # the caption says where the numbers come from


def test_a_trial_without_a_record_is_priced_at_its_declared_cost(tmp_path):
    missing = "icp-adam+trial=2"
    g, runs = _make_tuned(tmp_path, ICP_TRIALS, ICP_FINALS, ICP_FINALS, keep=lambda run: missing not in run.run_id)
    rows, _ = _rows(g, runs, tmp_path)
    # the missing trial trains the recipe's epochs E (30): floor(0.25 E) ce epochs of warm-up, then 14/3 ce a step
    epochs = yaml.safe_load(open("config/recipes/fmnist-resnet20.yaml"))["train"]["epochs"]
    warm = int(0.25 * epochs)
    declared = (warm + (epochs - warm) * 14 / 3) / epochs
    assert declared < 14 / 3 - 0.1
    assert rows["icp-adam"]["compute (ce runs): trials + finals"] == \
        f"{2 * 14 / 3 + declared:.1f} + 14.0 (1 declared)"
    assert rows["icp-adam"]["trials"] == "1 of 3 lost"  # no record: it lost


def test_a_study_without_a_selection_yet_says_so(tuned, tmp_path):
    g, runs = tuned
    for cell in g.tuned:
        os.remove(g.selection(cell))
    md = tables.write_tables("tuned", frames.study_runs(runs, "tuned"), cells_mod.cells(runs),
                                tmp_path / "tables", grid=g)[1].read_text()
    assert md.count("no selection yet") == 2


def test_the_tuning_curve_is_the_expected_best_of_k_trials_with_lost_ones_at_zero(tuned, tmp_path):
    g, runs = tuned
    fig = figures.FIGURES["tuning"][1](runs, None, None)
    (ax,) = fig.axes
    lines = {line.get_label(): list(line.get_ydata()) for line in ax.get_lines()}
    assert set(lines) == {"ce (3 trials, 1 lost)", "ls (3 trials, 0 lost)", "ce: trial 0, its default setting "
                          "(seed 100)", "ls: trial 0, its default setting (seed 100)"}
    for m in ("ce", "ls"):  # dashed: trial 0, the default setting at the trials' seed
        assert lines[f"{m}: trial 0, its default setting (seed 100)"] == pytest.approx([100 * TRIAL_VAL[m][0]] * 2)
    for label, vals in (("ce (3 trials, 1 lost)", [50.0, 70.0, 0.0]), ("ls (3 trials, 0 lost)", [60.0, 65.0, 55.0])):
        want = [sum(max(s) for s in itertools.combinations(vals, k)) / math.comb(3, k) for k in (1, 2, 3)]
        assert lines[label] == pytest.approx(want, rel=1e-6)
    assert [p.name for p in figures.make("tuning", runs, None, tmp_path / "fig")] == ["tuning.png", "tuning.pdf"]


def test_icp_grid_lists_each_tuned_cell_and_its_finals_once_chosen(tuned, tmp_path, capsys):
    g, _ = tuned
    path = tmp_path / "g.yaml"
    assert cli.main(["grid", "--grid", str(path)]) == 0
    out, err = capsys.readouterr()
    assert "tuning fashion-mnist/resnet20/clean/ce [tuned]: 3 trials of optim.lr at seed 100; then 3 final runs " \
           "(ce+tuned=<chosen>) at seeds 0, 1, 2: trial 1 chosen, listed above" in err
    assert [line.split()[0] for line in out.splitlines() if "+tuned=" in line] == \
        [f"fashion-mnist/resnet20/clean/{m}+tuned=1/s{s}" for m in ("ce", "ls") for s in SEEDS]
    for cell in g.tuned:
        os.remove(g.selection(cell))
    assert cli.main(["grid", "--grid", str(path)]) == 0
    out, err = capsys.readouterr()
    assert err.count("no trial chosen yet") == 2 and "+tuned=" not in out
