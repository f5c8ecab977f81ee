"""A run's lifecycle under a scheduler: divergence, one trainer per directory, corrupt checkpoints, signals."""
import json
import signal
import subprocess
import sys
import time


from icp import checkpoint, engine, records, runlock
from tests.conftest import REPO, TINY


def test_nan_loss_ends_the_run_as_diverged_naming_epoch_and_step(tiny_cfg, tmp_path):
    cfg = tiny_cfg("optim.lr=1e8", "train.grad_clip=null", "train.epochs=3")
    rec = engine.Trainer(cfg, tmp_path / "run").run()
    assert rec["status"] == "diverged"
    assert "at epoch 1, step " in rec["error"] and rec["epochs"] == []
    written = (tmp_path / "run" / "record.json").read_bytes()
    assert json.loads(written)["status"] == "diverged"
    mtime = (tmp_path / "run" / "last.pt").stat().st_mtime_ns
    (tmp_path / "run" / "record.json").unlink()  # as Snakemake does before it runs a job again
    time.sleep(1.1)  # a time stamp written now would differ from the run's (its resolution is one second)
    again = engine.Trainer(cfg, tmp_path / "run").run()  # final: not trained again
    assert again["status"] == "diverged" and again["error"] == rec["error"]
    assert (tmp_path / "run" / "last.pt").stat().st_mtime_ns == mtime
    assert (tmp_path / "run" / "record.json").read_bytes() == written  # as it ended, its time stamp included


def test_a_finite_run_is_not_called_diverged(tiny_cfg, tmp_path):
    assert engine.Trainer(tiny_cfg("train.epochs=1"), tmp_path / "run").run()["status"] == "complete"


def _train_cmd(fmnist_root, out, *extra):
    sets = [f"data.root={fmnist_root}", *TINY, *extra]
    return [sys.executable, "-m", "icp", "train", *sum((["--set", s] for s in sets), []), "--out", str(out)]


def _wait_for_record(path, timeout=120):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            return json.loads(path.read_text())
        except (OSError, ValueError):
            time.sleep(0.2)
    raise AssertionError(f"no {path}")


def test_second_trainer_is_refused_and_a_killed_one_leaves_no_stale_lock(fmnist_root, tmp_path):
    out = tmp_path / "run"
    first = subprocess.Popen(_train_cmd(fmnist_root, out, "train.epochs=50"), cwd=REPO, stderr=subprocess.PIPE)
    try:
        _wait_for_record(out / "record.json")
        second = subprocess.run(_train_cmd(fmnist_root, out, "train.epochs=50"), cwd=REPO, capture_output=True,
                                text=True, timeout=120)
        assert second.returncode == 2
        (line,) = second.stderr.strip().splitlines()
        assert "is being trained by another process" in line and f"pid {first.pid}" in line
    finally:
        first.kill()  # SIGKILL: no handler runs, the kernel drops the lock
        first.wait()
    with runlock.hold(out):  # free again at once
        pass


def test_sigterm_records_interrupted_and_the_run_resumes(fmnist_root, tmp_path):
    out = tmp_path / "run"
    proc = subprocess.Popen(_train_cmd(fmnist_root, out, "train.epochs=50"), cwd=REPO, stderr=subprocess.PIPE,
                            text=True)
    _wait_for_record(out / "record.json")
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 130 and "interrupted" in err
    rec = records.read(out / "record.json")
    assert rec["status"] == "interrupted" and rec["error"].startswith("KeyboardInterrupt")


def test_corrupt_last_checkpoint_resumes_from_the_one_kept_back(tiny_cfg, tmp_path, capsys):
    cfg = tiny_cfg("train.epochs=3")
    full = engine.Trainer(cfg, tmp_path / "full").run()
    run = tmp_path / "part"
    engine.Trainer(cfg, run).run(max_epochs=2)
    assert checkpoint.load(checkpoint.previous(run / "last.pt"))["epoch"] == 1
    (run / "last.pt").write_bytes(b"not a checkpoint")
    capsys.readouterr()
    resumed = engine.Trainer(cfg, run).run()
    err = capsys.readouterr().err.strip().splitlines()
    (warning,) = [ln for ln in err if ln.startswith("icp: warning:")]
    assert f"{run / 'last.pt'} is unreadable" in warning and "resumed from" in warning and "(epoch 1)" in warning
    (line,) = [ln for ln in err if ": resumed from epoch" in ln]  # the resume line names the file it used
    assert line.endswith("resumed from epoch 1 of 3 (last.prev.pt: last.pt was unreadable)")
    assert any("last.pt is unreadable" in note for note in resumed["notes"])  # and the record keeps why
    strip = lambda eps: [{k: v for k, v in e.items() if k not in ("time_s", "images_per_s")} for e in eps]
    assert resumed["status"] == "complete" and strip(resumed["epochs"]) == strip(full["epochs"])


def test_no_readable_checkpoint_is_one_line_naming_the_file(fmnist_root, tmp_path):
    out = tmp_path / "run"
    out.mkdir()
    (out / "last.pt").write_bytes(b"garbage")
    proc = subprocess.run(_train_cmd(fmnist_root, out), cwd=REPO, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2
    (line,) = proc.stderr.strip().splitlines()
    assert line.startswith("icp: error: ") and str(out / "last.pt") in line and "unreadable" in line


def test_launcher_stays_light():
    code = "import sys, icp.launch; sys.exit('torch' in sys.modules)"
    assert subprocess.run([sys.executable, "-c", code], cwd=REPO).returncode == 0


def test_launcher_local_executor_trains_and_reports(fmnist_root, tmp_path):
    out = tmp_path / "run"
    sets = [f"data.root={fmnist_root}", *TINY, "train.epochs=1"]
    base = [sys.executable, "-m", "icp.launch", "--executor", "local", "--timeout-min", "10", "--poll-s", "0.5",
            "--"]
    train = ["--config", str(REPO / "config/recipes/fmnist-resnet20.yaml"), *sum((["--set", s] for s in sets), []),
             "--out", str(out), "--run-id", "tiny/ce"]
    ok = subprocess.run(base + train, cwd=REPO, capture_output=True, text=True, timeout=300)
    assert ok.returncode == 0, ok.stderr
    rec = records.read(out / "record.json")
    assert rec["status"] == "complete" and rec["run_id"] == "tiny/ce"
    (job,) = rec["jobs"]
    assert job["executor"] == "local" and job["job_id"] and (out / "submitit").is_dir()
    bad = subprocess.run(base + train[:-4] + ["--set", "data.dataset=cifar10", "--out", str(tmp_path / "bad"),
                                              "--run-id", "tiny/bad"], cwd=REPO, capture_output=True, text=True,
                         timeout=300)
    assert bad.returncode == 1
    assert "icp.launch: error: tiny/bad" in bad.stderr and "DataError" in bad.stderr


def test_a_launcher_stopped_by_sigterm_sets_the_record_aside_after_its_job_has_ended(fmnist_root, tmp_path):
    """Snakemake removes a failed job's output once its launcher has exited: the launcher waits for the cancelled
    job's last write (``interrupted``) and sets the record aside, so no record.json is left to pass for the run's
    output and running the workflow again resumes the run."""
    out = tmp_path / "run"
    # a run that cannot end before the stop reaches it, however loaded the machine (50 epochs once completed first)
    sets = [f"data.root={fmnist_root}", *TINY, "train.epochs=100000"]
    cmd = [sys.executable, "-m", "icp.launch", "--executor", "local", "--timeout-min", "10", "--poll-s", "0.5", "--",
           "--config", str(REPO / "config/recipes/fmnist-resnet20.yaml"), *sum((["--set", s] for s in sets), []),
           "--out", str(out), "--run-id", "tiny/ce+trial=0"]
    proc = subprocess.Popen(cmd, cwd=REPO, stderr=subprocess.PIPE, text=True)
    try:
        _wait_for_record(out / "record.json")
        proc.send_signal(signal.SIGTERM)
        _, err = proc.communicate(timeout=120)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 130 and "cancelled job" in err, err
    time.sleep(2)  # nothing writes it after the launcher has gone
    assert not (out / "record.json").exists()
    assert records.read(out / records.STOPPED)["status"] == "interrupted"


def test_a_launcher_stopped_after_its_run_completed_reports_success_and_keeps_the_record(fmnist_root, tmp_path):
    """SIGTERM while the launcher sleeps between polls of a run that has just completed: the run is final, so the
    launcher exits 0 and the record stays (Snakemake, letting its running jobs finish, keeps it; exit 130 made it
    remove the complete record as a failed job's output, and the run trained again)."""
    out = tmp_path / "run"
    sets = [f"data.root={fmnist_root}", *TINY, "train.epochs=1"]
    cmd = [sys.executable, "-m", "icp.launch", "--executor", "local", "--timeout-min", "10", "--poll-s", "600", "--",
           "--config", str(REPO / "config/recipes/fmnist-resnet20.yaml"), *sum((["--set", s] for s in sets), []),
           "--out", str(out), "--run-id", "tiny/ce"]
    proc = subprocess.Popen(cmd, cwd=REPO, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 240
        while time.monotonic() < deadline and (records.load(out).record or {}).get("status") != "complete":
            time.sleep(0.2)
        assert records.load(out).record["status"] == "complete"
        time.sleep(1)
        proc.send_signal(signal.SIGTERM)
        _, err = proc.communicate(timeout=120)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 0 and "complete before the stop (SIGTERM" in err, err
    assert records.read(out / "record.json")["status"] == "complete" and not (out / records.STOPPED).exists()


def test_the_local_profile_resources_reach_the_launcher_unrounded(tmp_path):
    """Snakemake rounds a numeric resource to an integer: the profile's 0.5 s poll arrived as --poll-s 0, a launcher
    that polled without sleeping. Every launcher option the local profile sets must reach the command as written."""
    import yaml

    from icp import launch

    profile = yaml.safe_load((REPO / "profiles" / "local" / "config.yaml").read_text())["default-resources"]
    from pathlib import Path

    smk = str(Path(sys.executable).with_name("snakemake"))
    proc = subprocess.run([smk, "--profile", "local", "--config", "grid=config/laptop.yaml", "-n", "-p", "--forcerun",
                           "train", "runs"], cwd=REPO, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    line = next(ln for ln in proc.stdout.splitlines() if "-m icp.launch" in ln)
    for name, option in launch.RESOURCES.items():
        if name in profile and name != "submitit_executor":
            flag = "--" + option.replace("_", "-")
            given = line.split(flag + " ", 1)[1].split()[0]
            assert float(given) == float(profile[name]), (flag, given, profile[name])
