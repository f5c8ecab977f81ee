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


def _tuned_grid(tmp_path, trials=3):
    from icp import grid

    spec = {
        "runs_dir": str(tmp_path / "runs"), "results_dir": str(tmp_path / "res"), "seeds": [0, 1],
        "recipes": {"fashion-mnist/resnet20": "config/recipes/fmnist-resnet20.yaml"},
        "tuning": {"trials": trials, "seed": 0, "draw_seed": 0, "spaces": {
            "ce": {"optim.lr": {"low": 0.01, "high": 0.5, "log": True, "source": "test"}},
            "icp-adam": {"optim.lr": {"low": 0.01, "high": 0.5, "log": True, "source": "test"},
                         "method.options.steps": {"low": 1, "high": 8, "int": True, "source": "test"}}}},
        "studies": {"tuned": [{"datasets": ["fashion-mnist"], "models": ["resnet20"], "methods": ["ce", "icp-adam"],
                               "tune": True}]},
    }
    grid.validate_schema(spec, "g.yaml")
    return grid.expand(spec, "g.yaml")


def test_a_tuned_block_expands_into_equal_trials_at_one_seed_beside_the_default_runs(tmp_path):
    g = _tuned_grid(tmp_path)
    assert [c.method for c in g.tuned] == ["ce", "icp-adam"]
    for cell in g.tuned:
        assert len(cell.trials) == 3 and cell.seeds == (0, 1)
        for t, (rid, setting) in enumerate(zip(cell.trials, cell.settings)):
            run = g[rid]
            assert rid == f"fashion-mnist/resnet20/clean/{cell.method}+trial={t}/s0" and run.seed == 0
            for key, value in setting.items():
                assert run.overrides.index(f"{key}={value}") > run.overrides.index("train.seed=0")
    # the default-setting runs of the block stay, at its seeds
    assert "fashion-mnist/resnet20/clean/icp-adam/s1" in g.runs
    # the same draws in a second expansion; a different space changes icp-adam's, not ce's learning rates
    again = _tuned_grid(tmp_path)
    assert [c.settings for c in again.tuned] == [c.settings for c in g.tuned]
    assert [s["optim.lr"] for s in g.tuned[0].settings] != [s["optim.lr"] for s in g.tuned[1].settings]


def test_a_final_run_is_the_chosen_trial_at_each_seed(tmp_path):
    g = _tuned_grid(tmp_path)
    cell = g.tuned[1]
    finals = g.finals(cell, 2)
    assert [r.run_id for r in finals] == [f"fashion-mnist/resnet20/clean/icp-adam+tuned=2/s{s}" for s in (0, 1)]
    trial = g[cell.trials[2]]
    for final in finals:
        assert [o for o in final.overrides if not o.startswith("train.seed=")] == \
            [o for o in trial.overrides if not o.startswith("train.seed=")]
        assert f"train.seed={final.seed}" in final.overrides
        assert g[final.run_id] == final  # found by id, though no static list holds it
    import pytest as _pytest
    with _pytest.raises(KeyError):
        g["fashion-mnist/resnet20/clean/icp-adam+tuned=7/s0"]


def test_a_tuned_method_without_a_space_is_refused_with_one_line(tmp_path):
    from icp import grid

    spec = {"recipes": {"fashion-mnist/resnet20": "config/recipes/fmnist-resnet20.yaml"},
            "tuning": {"trials": 2, "spaces": {"ce": {"optim.lr": {"low": 0.01, "high": 0.5, "source": "t"}}}},
            "studies": {"tuned": [{"datasets": ["fashion-mnist"], "models": ["resnet20"], "methods": ["ce", "ls"],
                                   "tune": True}]}}
    with pytest.raises(ConfigError, match="tunes ls but tuning.spaces has no space"):
        grid.expand(spec, "g.yaml")


def _record(val, test, status="complete"):
    return {"status": status, "last": {"val": {"top1": val}, "test": {"top1": test}}}


def test_the_selection_follows_validation_not_test_and_counts_failed_trials_as_lost():
    trials = [(f"c/ce+trial={i}/s0", {"optim.lr": lr}) for i, lr in enumerate([0.1, 0.2, 0.3, 0.4])]
    records = [_record(0.50, 0.90), _record(0.70, 0.10), None, _record(float("nan"), 0.99, "diverged")]
    sel = tuning.select(trials, records)
    assert sel["chosen"] == 1 and sel["chosen_settings"] == {"optim.lr": 0.2}  # test would pick trial 0
    assert [t["lost"] for t in sel["trials"]] == [False, False, True, True]
    assert [t["status"] for t in sel["trials"]] == ["complete", "complete", "missing", "diverged"]
    # ties go to the earlier trial; nothing complete chooses nothing
    assert tuning.select(trials[:2], [_record(0.6, 0.1), _record(0.6, 0.9)])["chosen"] == 0
    assert tuning.select(trials[:1], [_record(0.6, 0.1, "failed")])["chosen"] is None


def test_icp_select_writes_the_selection_from_the_trials_records(tmp_path, monkeypatch):
    import json

    import yaml

    from icp import cli, grid, jsonfile

    spec = yaml.safe_load(yaml.safe_dump({
        "runs_dir": str(tmp_path / "runs"), "results_dir": str(tmp_path / "res"), "seeds": [0, 1],
        "recipes": {"fashion-mnist/resnet20": "config/recipes/fmnist-resnet20.yaml"},
        "tuning": {"trials": 3, "spaces": {"ce": {"optim.lr": {"low": 0.01, "high": 0.5, "log": True,
                                                               "source": "test"}}}},
        "studies": {"tuned": [{"datasets": ["fashion-mnist"], "models": ["resnet20"], "methods": ["ce"],
                               "tune": True}]}}))
    path = tmp_path / "g.yaml"
    path.write_text(yaml.safe_dump(spec))
    g = grid.load_expand(path, check_recipes=False)
    cell = g.tuned[0]
    for rid, val in zip(cell.trials, (0.4, 0.8)):  # the third trial has no record: it lost
        run_dir = tmp_path / "runs" / rid
        run_dir.mkdir(parents=True)
        jsonfile.write(_record(val, 1 - val), run_dir / "record.json")
    assert cli.main(["select", "--grid", str(path), "--cell", cell.name]) == 0
    sel = json.loads((tmp_path / "res" / "tuning" / cell.name / "selection.json").read_text())
    assert sel["chosen"] == 1 and [t["lost"] for t in sel["trials"]] == [False, False, True]
    assert sel["finals"] == [f"fashion-mnist/resnet20/clean/ce+tuned=1/s{s}" for s in (0, 1)]
    assert cli.main(["select", "--grid", str(path), "--cell", "fashion-mnist/resnet20/clean/ls"]) == 2


def test_snakemake_runs_trials_then_the_selection_then_the_finals_and_a_rerun_does_nothing(tmp_path, fmnist_root):
    """Real Snakemake (local profile): the trials train, the checkpoint chooses on their validation top-1, the
    finals train with the chosen trial's learning rate at the block's seeds, and the same command again does
    nothing."""
    import json
    import subprocess
    import sys
    from pathlib import Path

    import yaml

    from icp import grid, records
    from tests.conftest import REPO, TINY

    sets = [s for s in TINY if not s.startswith(("model.name", "train.progress", "optim.lr"))]
    spec = {"runs_dir": str(tmp_path / "runs"), "results_dir": str(tmp_path / "results"),
            "figures_dir": str(tmp_path / "figures"), "data_root": str(fmnist_root), "seeds": [0, 1],
            "recipes": {"fashion-mnist/resnet20": "config/recipes/fmnist-resnet20.yaml"},
            "set": [*sets, "train.epochs=1", "data.augment=none", "train.progress=false"],
            "tuning": {"trials": 2, "seed": 0, "spaces": {"ce": {
                "optim.lr": {"values": [0.0001, 0.1], "source": "test: one rate that learns, one that barely does"}}}},
            "studies": {"tuned": [{"datasets": ["fashion-mnist"], "models": ["resnet20"], "methods": ["ce"],
                                   "seeds": [0, 1], "tune": True}]}}
    path = tmp_path / "grid.yaml"
    path.write_text(yaml.safe_dump(spec))
    smk = [str(Path(sys.executable).with_name("snakemake")), "--profile", "local", "--config", f"grid={path}",
           "--cores", "2", "--jobs", "2", "runs"]
    proc = subprocess.run(["timeout", "-s", "KILL", "600", *smk], cwd=REPO, capture_output=True, text=True)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    g = grid.load_expand(path)
    (cell,) = g.tuned
    sel = json.loads(Path(g.selection(cell)).read_text())
    vals = [records.read(g[rid].record)["last"]["val"]["top1"] for rid in cell.trials]
    assert sel["chosen"] == max(range(2), key=lambda i: (vals[i], -i))
    assert [t["val_top1"] for t in sel["trials"]] == vals
    for rid in sel["finals"]:
        rec = records.read(g[rid].record)
        assert rec["status"] == "complete"
        assert rec["config"]["optim"]["lr"] == cell.settings[sel["chosen"]]["optim.lr"]
    assert sorted(records.read(g[r].record)["seed"] for r in sel["finals"]) == [0, 1]
    again = subprocess.run(["timeout", "-s", "KILL", "300", *smk, "-n"], cwd=REPO, capture_output=True, text=True)
    assert again.returncode == 0 and "Nothing to be done" in again.stdout + again.stderr, again.stdout[-2000:]
