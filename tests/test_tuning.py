"""Equal tuning (icp.tuning): reproducible quasi-random draws, common random numbers (trial i of every method
tries the same lr and wd), trial 0 the published default, trial seeds apart from the finals', equal trial counts."""
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


def test_methods_share_lr_and_wd_at_every_trial_and_trial_0_is_the_default():
    """Common random numbers: the keys every space shares take the same Halton columns (lr 0, wd 1), so trial i
    of ce and of icp try the same lr and wd; a method's own keys take the columns after them."""
    defaults_ce = {"optim.lr": 0.1, "optim.weight_decay": 5e-4}
    defaults_icp = {"optim.lr": 0.1, "optim.weight_decay": 5e-4, "method.options.steps": 5,
                    "method.options.warmup": 0.25}
    ce, icp = tuning.draws(SPACE_CE, 6, 0, defaults_ce), tuning.draws(SPACE_ICP, 6, 0, defaults_icp)
    assert ce[0] == defaults_ce and icp[0] == defaults_icp  # trial 0: the published default
    points = tuning.unit_points(5, 0)
    for i in range(1, 6):
        lr = math.exp(math.log(0.01) + points[i - 1][0] * (math.log(1.0) - math.log(0.01)))
        assert ce[i]["optim.lr"] == icp[i]["optim.lr"] == pytest.approx(lr, rel=5e-3)
        assert ce[i]["optim.weight_decay"] == icp[i]["optim.weight_decay"]
    cols = tuning.columns(SPACE_ICP)
    assert cols["optim.lr"] == 0 and cols["optim.weight_decay"] == 1
    assert sorted(v for k, v in cols.items() if k.startswith("method.")) == [2, 3]
    # the same space gives the same trials whatever the method
    assert tuning.draws(dict(SPACE_CE), 6, 0, defaults_ce) == ce


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
    from icp import grid, gridfile

    spec = {
        "runs_dir": str(tmp_path / "runs"), "results_dir": str(tmp_path / "res"), "seeds": [0, 1],
        "recipes": {"fashion-mnist/resnet20": "config/recipes/fmnist-resnet20.yaml"},
        "tuning": {"trials": trials, "seed": 100, "draw_seed": 0, "spaces": {
            "ce": {"optim.lr": {"low": 0.01, "high": 0.5, "log": True, "source": "test"}},
            "icp-adam": {"optim.lr": {"low": 0.01, "high": 0.5, "log": True, "source": "test"},
                         "method.options.steps": {"low": 1, "high": 8, "int": True, "source": "test"}}}},
        "studies": {"tuned": [{"datasets": ["fashion-mnist"], "models": ["resnet20"], "methods": ["ce", "icp-adam"],
                               "tune": True}]},
    }
    gridfile.validate_schema(spec, "g.yaml")
    return grid.expand(spec, "g.yaml")


def test_a_tuned_block_expands_into_equal_trials_at_one_seed_beside_the_default_runs(tmp_path):
    g = _tuned_grid(tmp_path)
    assert [c.method for c in g.tuned] == ["ce", "icp-adam"]
    for cell in g.tuned:
        assert len(cell.trials) == 3 and cell.seeds == (0, 1)
        for t, (rid, setting) in enumerate(zip(cell.trials, cell.settings)):
            run = g[rid]
            assert rid == f"fashion-mnist/resnet20/clean/{cell.method}+trial={t}/s100" and run.seed == 100
            for key, value in setting.items():
                assert run.overrides.index(f"{key}={value}") > run.overrides.index("train.seed=100")
        assert cell.settings[0]["optim.lr"] == 0.1  # trial 0: the recipe's learning rate
    assert g.tuned[1].settings[0]["method.options.steps"] == 5  # and icp-adam's published K
    # the default-setting runs of the block stay, at its seeds
    assert "fashion-mnist/resnet20/clean/icp-adam/s1" in g.runs
    # the same draws in a second expansion; both methods try the same learning rates, trial by trial
    again = _tuned_grid(tmp_path)
    assert [c.settings for c in again.tuned] == [c.settings for c in g.tuned]
    assert [s["optim.lr"] for s in g.tuned[0].settings] == [s["optim.lr"] for s in g.tuned[1].settings]


def test_trials_at_a_seed_of_the_finals_are_refused(tmp_path):
    with pytest.raises(ConfigError, match="tuning.seed 0 is also a seed of study 'tuned''s final runs"):
        tuning.check_seeds({"seed": 0}, (0, 1), "g.yaml", "tuned")
    tuning.check_seeds({"seed": 100}, (0, 1), "g.yaml", "tuned")


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


def _stop_group(proc, timeout=90.0) -> bool:
    """SIGTERM a process group (Snakemake, its jobs' launchers and their submitit jobs) and wait, bounded, until
    every process of it has gone; SIGKILL what is left. True when it had to."""
    import contextlib
    import os
    import signal
    import time

    try:
        os.killpg(proc.pid, signal.SIGTERM)
    except ProcessLookupError:  # it ended on its own
        proc.wait(timeout=30)
        return False
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        proc.poll()
        try:
            os.killpg(proc.pid, 0)
        except ProcessLookupError:
            return False
        time.sleep(0.2)
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, signal.SIGKILL)
    proc.wait(timeout=30)
    return True


def test_snakemake_runs_trials_then_the_selection_then_the_finals_and_a_rerun_does_nothing(tmp_path, fmnist_root):
    """Real Snakemake (local profile): the trials train, the checkpoint chooses on their validation top-1 (a
    diverged trial lost), the finals train with the chosen trial's learning rate at the block's seeds, and the same
    command again does nothing. Killed while the trials train, the command run again trains only what had not
    finished: a trial never trains twice."""
    import json
    import subprocess
    import sys
    import time
    from pathlib import Path

    import yaml

    from icp import grid, records
    from tests.conftest import REPO, TINY

    sets = [s for s in TINY if not s.startswith(("model.name", "train.progress", "optim.lr"))]
    spec = {"runs_dir": str(tmp_path / "runs"), "results_dir": str(tmp_path / "results"),
            "figures_dir": str(tmp_path / "figures"), "data_root": str(fmnist_root), "seeds": [0, 1],
            "recipes": {"fashion-mnist/resnet20": "config/recipes/fmnist-resnet20.yaml"},
            "set": [*sets, "train.epochs=1", "data.augment=none", "train.progress=false"],
            # trial 0 is the recipe's lr 0.1; draw_seed 14 then draws 0.0001 and 1e9 (diverges in its first epoch)
            "tuning": {"trials": 3, "seed": 100, "draw_seed": 14, "spaces": {"ce": {
                "optim.lr": {"values": [0.0001, 0.1, 1e9],
                             "source": "test: one rate that learns, one that barely does, one that diverges"}}}},
            "studies": {"tuned": [{"datasets": ["fashion-mnist"], "models": ["resnet20"], "methods": ["ce"],
                                   "seeds": [0, 1], "tune": True}]}}
    path = tmp_path / "grid.yaml"
    path.write_text(yaml.safe_dump(spec))
    g = grid.load_expand(path)
    (cell,) = g.tuned
    assert [s["optim.lr"] for s in cell.settings] == [0.1, 0.0001, 1e9]
    smk = [str(Path(sys.executable).with_name("snakemake")), "--profile", "local", "--config", f"grid={path}",
           "--cores", "2", "--jobs", "2", "runs"]

    # killed (SIGTERM to its process group) once a trial is complete, while another trains where one does
    def status(rid):
        rec = records.load(g[rid].run_dir).record
        return rec and rec["status"]

    with open(tmp_path / "killed.log", "w") as log:
        proc = subprocess.Popen(["timeout", "-s", "KILL", "600", *smk], cwd=REPO, stdout=log,
                                stderr=subprocess.STDOUT, start_new_session=True)
        seen: list = []  # the trials' statuses when it was killed
        try:
            deadline = time.monotonic() + 300
            while proc.poll() is None and time.monotonic() < deadline:
                seen = [status(rid) for rid in cell.trials]
                if "complete" in seen and ("running" in seen or all(seen)):
                    break
                time.sleep(0.2)
        finally:
            killed = _stop_group(proc)
    if killed:  # on a loaded machine Snakemake has been seen not to exit on SIGTERM: its lock is left behind
        subprocess.run(["timeout", "-s", "KILL", "300", *smk, "--unlock"], cwd=REPO, capture_output=True)
    states = {rid: status(rid) for rid in cell.trials}
    if "complete" not in states.values():  # say all: which job failed, and why (its launcher's log)
        logs = {p: p.read_text()[-1500:] for p in sorted((tmp_path / "runs").rglob("launch.log"))}
        pytest.fail(f"no trial complete: {states}\n--- snakemake\n{(tmp_path / 'killed.log').read_text()[-4000:]}\n"
                    + "\n".join(f"--- {p}\n{text}" for p, text in logs.items()), pytrace=False)
    done = {rid: (records.read(g[rid].record), (Path(g[rid].run_dir) / "last.pt").stat().st_mtime_ns)
            for rid, st in states.items() if st == "complete"}

    proc = subprocess.run(["timeout", "-s", "KILL", "600", *smk], cwd=REPO, capture_output=True, text=True)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    g = grid.load_expand(path)
    (cell,) = g.tuned
    for rid, (rec, mtime) in done.items():  # not trained again: the same record, the same checkpoint
        assert records.read(g[rid].record) == rec, rid
        assert (Path(g[rid].run_dir) / "last.pt").stat().st_mtime_ns == mtime, rid
    trials = [records.read(g[rid].record) for rid in cell.trials]
    assert [t["status"] for t in trials] == ["complete", "complete", "diverged"], (seen, states)
    sel = json.loads(Path(g.selection(cell)).read_text())
    vals = [t["last"]["val"]["top1"] for t in trials[:2]]
    assert sel["chosen"] == max(range(2), key=lambda i: (vals[i], -i))
    assert [t["val_top1"] for t in sel["trials"]] == [*vals, None]
    assert [t["lost"] for t in sel["trials"]] == [False, False, True] and sel["trials"][2]["status"] == "diverged"
    for rid in sel["finals"]:
        rec = records.read(g[rid].record)
        assert rec["status"] == "complete"
        assert rec["config"]["optim"]["lr"] == cell.settings[sel["chosen"]]["optim.lr"]
    assert sorted(records.read(g[r].record)["seed"] for r in sel["finals"]) == [0, 1]
    again = subprocess.run(["timeout", "-s", "KILL", "300", *smk, "-n"], cwd=REPO, capture_output=True, text=True)
    assert again.returncode == 0 and "Nothing to be done" in again.stdout + again.stderr, again.stdout[-2000:]

TRIAL_ID = "fashion-mnist/resnet20/clean/ce+trial=0/s0"


def _launch_raising(monkeypatch, fmnist_root, out, run_id, exc):
    """``icp.launch`` (debug executor: the job runs in this process) of a tiny run whose first epoch raises ``exc``."""
    import pdb

    from icp import engine, launch
    from tests.conftest import REPO, TINY

    def train_epoch(self, epoch):
        raise exc

    monkeypatch.setattr(engine.Trainer, "train_epoch", train_epoch)
    monkeypatch.setattr(pdb, "post_mortem", lambda *a, **k: None)  # submitit's debug job opens pdb on an error
    sets = [f"data.root={fmnist_root}", *TINY, "train.epochs=1"]
    return launch.main(["--executor", "debug", "--timeout-min", "5", "--",
                        "--config", str(REPO / "config/recipes/fmnist-resnet20.yaml"),
                        *sum((["--set", s] for s in sets), []), "--out", str(out), "--run-id", run_id])


def test_a_trial_whose_training_raises_is_lost_and_kept_while_another_run_and_a_fault_resume(
        tmp_path, fmnist_root, monkeypatch, capsys):
    """The issue's rule: a failed trial counts as a trial that lost (never silently dropped, never drawn again). Its
    job succeeds with its failed record kept, so the selection runs and marks it lost; the same error in a run that
    is no trial, or an environmental error (OSError) in a trial, fails the job and sets the record aside to resume."""
    from icp import launch, records

    trial = tmp_path / "trial"
    assert _launch_raising(monkeypatch, fmnist_root, trial, TRIAL_ID, ValueError("bad settings")) == 0
    rec = records.read(trial / "record.json")
    assert rec["status"] == "failed" and rec["error"] == "ValueError: bad settings"
    assert not (trial / records.STOPPED).exists()
    assert f"icp.launch: warning: {TRIAL_ID}: tuning trial lost: ValueError: bad settings" in capsys.readouterr().err
    assert tuning.select([(TRIAL_ID, {})], [rec])["trials"][0]["lost"] is True

    plain = tmp_path / "plain"
    assert _launch_raising(monkeypatch, fmnist_root, plain, TRIAL_ID.replace("+trial=0", ""),
                           ValueError("bad settings")) == 1
    assert not (plain / "record.json").exists()
    assert records.read(plain / records.STOPPED)["status"] == "failed"

    fault = tmp_path / "fault"
    assert _launch_raising(monkeypatch, fmnist_root, fault, TRIAL_ID, FileNotFoundError("data gone")) == 1
    assert not (fault / "record.json").exists() and (fault / records.STOPPED).exists()
    assert "tuning trial lost" not in capsys.readouterr().err

    # the trial factor is read from the id's method segment only
    assert launch.trial_of(TRIAL_ID) == 0 and launch.trial_of("d/m/clean/ce+lr=1e+20+trial=12/s3") == 12
    assert launch.trial_of("d/m/clean/ce+tuned=1/s0") is None and launch.trial_of("trial=1/ce") is None


def test_lost_trial_reads_the_runs_own_failed_record_and_spares_stops_and_faults(tmp_path):
    from icp import jsonfile, launch, records

    def lost(status, error, run_id=TRIAL_ID, job="7", state="COMPLETED", name=records.NAME):
        run_dir = tmp_path / f"r{len(list(tmp_path.iterdir()))}"
        run_dir.mkdir()
        jsonfile.write({"status": status, "error": error, "run_id": TRIAL_ID, "jobs": [{"job_id": "7"}]},
                       run_dir / name)
        return launch.lost_trial(run_id, run_dir, job, state)

    assert lost("failed", "ValueError: x") == "ValueError: x"
    assert lost("failed", "RuntimeError: shape mismatch", job=None) == "RuntimeError: shape mismatch"
    for status in ("interrupted", "requeued", "running", "complete", "diverged"):
        assert lost(status, "ValueError: x") is None, status
    for error in ("OSError: [Errno 28] No space left on device", "PermissionError: x", "MemoryError: ",
                  "OutOfMemoryError: CUDA out of memory.", "RuntimeError: CUDA error: an illegal memory access",
                  "DataError: no data", "CheckpointError: unreadable", "RunBusy: busy", "KeyboardInterrupt: ",
                  "cancelled by the scheduler", ""):
        assert lost("failed", error) is None, error
    assert lost("failed", "ValueError: x", run_id=TRIAL_ID.replace("+trial=0", "")) is None  # not a trial
    assert lost("failed", "ValueError: x", job="8") is None  # an earlier job's record
    assert lost("failed", "ValueError: x", state="OUT_OF_MEMORY") is None  # the scheduler ended the job
    assert lost("failed", "ValueError: x", name=records.STOPPED) is None  # set aside: not this job's record


def test_the_submitit_executor_reports_a_lost_trial_as_a_success(tmp_path):
    """``snakemake --executor submitit`` (icp.executor): the job of a lost trial succeeds, its record kept."""
    from types import SimpleNamespace

    pytest.importorskip("snakemake_interface_executor_plugins")
    from icp import executor, jsonfile, records

    calls = []

    def finish(run_id, error):
        run_dir = tmp_path / f"r{len(list(tmp_path.iterdir()))}"
        run_dir.mkdir()
        jsonfile.write({"status": "failed", "error": error, "run_id": run_id, "jobs": [{"job_id": "5"}]},
                       run_dir / records.NAME)
        (run_dir / "result.pkl").write_bytes(b"")

        def result():
            raise RuntimeError(f"job failed\n{error}")

        sjob = SimpleNamespace(job_id="5", paths=SimpleNamespace(result_pickle=run_dir / "result.pkl"), result=result)
        info = SimpleNamespace(aux={"runs": [{"run_id": run_id, "run_dir": str(run_dir), "train_args": []}],
                                    "job": sjob, "folder": run_dir,
                                    "opts": SimpleNamespace(max_requeues=0, executor="slurm")},
                               job=SimpleNamespace(log=[str(run_dir / "launch.log")]))
        fake = SimpleNamespace(logger=SimpleNamespace(warning=lambda m: calls.append(("warning", m))),
                               report_job_success=lambda i: calls.append(("success", i)),
                               report_job_error=lambda i, msg: calls.append(("error", msg)))
        executor.Executor._finish(fake, info, "COMPLETED")
        return run_dir

    kept = finish(TRIAL_ID, "ValueError: x")
    assert [c[0] for c in calls] == ["warning", "success"] and "tuning trial lost: ValueError: x" in calls[0][1]
    assert records.read(kept / records.NAME)["status"] == "failed"
    calls.clear()
    stopped = finish(TRIAL_ID, "FileNotFoundError: gone")
    assert [c[0] for c in calls] == ["error"] and (stopped / records.STOPPED).exists()


def test_the_selection_reads_the_settings_validation_never_the_clean_oracle():
    """A noisy cell's record carries last.val (noisy labels) and last.val_clean (the oracle): trial 1 is best on the
    noisy validation, trial 0 on the clean labels a noisy-label method does not have; the selection takes trial 1."""
    trials = [(f"c/ce+trial={i}/s0", {"optim.lr": lr}) for i, lr in enumerate([0.1, 0.2])]
    records = [{"status": "complete", "last": {"val": {"top1": 0.40}, "val_clean": {"top1": 0.90}, "test": {"top1": 0.9}}},
               {"status": "complete", "last": {"val": {"top1": 0.45}, "val_clean": {"top1": 0.60}, "test": {"top1": 0.6}}}]
    sel = tuning.select(trials, records)
    assert sel["chosen"] == 1 and sel["metric"] == "last.val.top1"
    assert [t["val_top1"] for t in sel["trials"]] == [0.40, 0.45]
