"""The Equal tuning section of a tuned study's tables and the tuning-curve figure, from known records
(icp.tuning_table, icp.figures.tuning)."""
import itertools
import json
import math
import os

import pytest
import yaml

from icp import aggregate, cli, figures, grid, stats, tuning_table
from tests.test_aggregate import record

SEEDS = (0, 1, 2)
TRIAL_VAL = {"ce": [0.50, 0.70, None], "ls": [0.60, 0.65, 0.55]}  # None: a failed trial, which loses
TUNED = {"ce": [0.80, 0.82, 0.85], "ls": [0.83, 0.86, 0.86]}  # test top-1 of the finals, per seed
DEFAULT = {"ce": [0.78, 0.80, 0.80], "ls": [0.80, 0.81, 0.85]}


def test_expected_best_of_k_trials_is_the_mean_best_over_every_subset_of_k():
    values = [0.31, 0.77, 0.5, 0.5, 0.12, 0.9]
    for k in range(1, len(values) + 1):
        subsets = list(itertools.combinations(values, k))
        brute = sum(max(s) for s in subsets) / len(subsets)
        assert tuning_table.expected_best(values, k) == pytest.approx(brute, rel=1e-12)
    assert tuning_table.expected_best(values, 1) == pytest.approx(sum(values) / len(values))
    assert tuning_table.expected_best(values, len(values)) == max(values)
    with pytest.raises(ValueError):
        tuning_table.expected_best(values, 7)


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
    spec = {"runs_dir": str(tmp_path / "runs"), "results_dir": str(tmp_path / "res"), "seeds": list(SEEDS),
            "recipes": {"fashion-mnist/resnet20": "config/recipes/fmnist-resnet20.yaml"},
            "tuning": {"trials": 3, "seed": 100, "spaces": {
                m: {"optim.lr": {"low": 0.01, "high": 0.5, "log": True, "source": "test"}} for m in TRIAL_VAL}},
            "studies": {"tuned": [{"datasets": ["fashion-mnist"], "models": ["resnet20"], "methods": ["ce", "ls"],
                                   "tune": True}]}}
    path = tmp_path / "g.yaml"
    path.write_text(yaml.safe_dump(spec))
    g = grid.load_expand(path, check_recipes=False)
    for cell in g.tuned:
        for rid, val in zip(cell.trials, TRIAL_VAL[cell.method]):
            run = g[rid]
            if val is None:
                _write(run, record(run, None, status="failed", error="ValueError: boom"))
                continue
            rec = _with_lr(record(run, val - 0.01), run)  # the helper's validation top-1 is test + 0.01
            rec["last"]["test"]["top1"] = 1.0 - val  # the test split disagrees: it must not choose
            _write(run, rec)
        assert cli.main(["select", "--grid", str(path), "--cell", cell.name]) == 0
    g = grid.load_expand(path, check_recipes=False)  # now with the chosen finals
    for run in g.runs.values():
        if "+tuned=" in run.run_id:
            _write(run, _with_lr(record(run, TUNED[run.method][run.seed]), run))
        elif "+trial=" not in run.run_id:
            _write(run, _with_lr(record(run, DEFAULT[run.method][run.seed]), run))
    aggregate.summarize(g, tmp_path / "res")
    return g, aggregate.read_summary(tmp_path / "res" / "summary.csv")


def _section(md: str, start: str) -> str:
    part = md.split(f"## {start}", 1)[1]
    return part.split("\n## ", 1)[0]


def test_the_tuned_table_gives_default_beside_tuned_and_paired_differences(tuned, tmp_path):
    g, runs = tuned
    paths = aggregate.write_tables("tuned", aggregate.study_runs(runs, "tuned"), aggregate.cells(runs),
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


def test_a_study_without_a_selection_yet_says_so(tuned, tmp_path):
    g, runs = tuned
    for cell in g.tuned:
        os.remove(g.selection(cell))
    md = aggregate.write_tables("tuned", aggregate.study_runs(runs, "tuned"), aggregate.cells(runs),
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
