"""Faults a real cluster produces, on the real loopback SLURM cluster (with accounting), through the same
`snakemake --profile ... runs` command a user runs: each is one line naming its cause, the record says the same and
never runs ahead of its checkpoint, and running the same command again resumes the run. Also: a corrupt record is
reported and rebuilt, and the login side's scheduler queries do not grow with the runs in flight."""
import importlib.util
import os
import subprocess
import time
from pathlib import Path

import pytest
import yaml

from icp import faults, grid, records, status
from tests.conftest import REPO
from tests.test_pipeline import LAUNCH, SNAKEMAKE, strip_timing, tiny_grid

_spec = importlib.util.spec_from_file_location("login_bench", REPO / "tools" / "login_bench.py")
login_bench = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(login_bench)


def start(path, *extra, env=None) -> subprocess.Popen:
    cmd = ["timeout", "-s", "KILL", "600", SNAKEMAKE, "runs", "--profile", "profiles/slurm-ci", *extra,
           "--config", f"grid={path}"]
    return subprocess.Popen(cmd, cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            env=env or os.environ)


def run_to_end(path, *extra, timeout=600) -> tuple[int, str]:
    proc = start(path, *extra)
    out, _ = proc.communicate(timeout=timeout)
    return proc.returncode, out


def wait_for_epochs(record: Path, n: int, proc: subprocess.Popen, timeout: float = 240) -> dict:
    deadline = time.monotonic() + timeout
    while True:
        rec = records.load(record.parent).record
        if rec is not None and len(rec["epochs"]) >= n:
            return rec
        assert proc.poll() is None, proc.stdout.read()
        assert time.monotonic() < deadline, f"no epoch {n} within {timeout} s"
        time.sleep(0.2)


# ------------------------------------------------------------------------------------------------- unit
def test_describe_names_each_fault_in_one_line():
    assert faults.describe("CANCELLED", {"status": "running"}).startswith("cancelled by the scheduler")
    assert faults.describe("OUT_OF_MEMORY", None).startswith("out of memory")
    assert faults.describe("NODE_FAIL", None).startswith("node failure")
    assert "after 5 requeues" in faults.describe("TIMEOUT", {"status": "requeued"}, requeues=5)
    enospc = {"error": "OSError: [Errno 28] No space left on device: '/scratch/runs/x/last.pt'"}
    assert faults.describe("FAILED", enospc) == "no space left on device: /scratch/runs/x/last.pt"
    assert faults.describe("FAILED", {"error": "ValueError: bad"}) == "ValueError: bad"
    for line in (faults.describe(s, None) for s in [*faults.SCHEDULER, "FAILED", faults.UNKNOWN]):
        assert "\n" not in line and line


def test_a_corrupt_record_is_reported_never_missing_and_set_aside(tmp_path):
    run = tmp_path / "run"
    run.mkdir()
    assert records.load(run) == records.Found(None, run / "record.json", "")
    (run / "record.json").write_text('{"status": "complete", "epochs": [')
    found = records.load(run)
    assert found.record is None and found.problem.startswith("corrupt record.json (")
    line = records.set_aside_corrupt(run)
    assert "set aside as record.corrupt.json" in line and not (run / "record.json").exists()
    assert (run / "record.corrupt.json").exists() and records.set_aside_corrupt(run) is None


def test_set_aside_keeps_a_stopped_record_beside_and_final_ones_in_place(tmp_path):
    run = tmp_path / "run"
    run.mkdir()
    records.jsonfile.write({"status": "complete"}, run / "record.json")
    assert records.set_aside(run) is None and (run / "record.json").exists()
    records.jsonfile.write({"status": "failed", "error": "x"}, run / "record.json")
    assert records.set_aside(run) == run / "record.stopped.json" and not (run / "record.json").exists()
    assert records.load(run).record["status"] == "failed"  # status and summarize still see the stopped run


# ------------------------------------------------------------------------------------------- on SLURM
def test_scancel_is_named_and_rerunning_resumes_exactly_and_a_truncated_record_is_rebuilt(slurm, fmnist_root,
                                                                                           tmp_path):
    path = tiny_grid(tmp_path, fmnist_root, ["ce"], "data.train_subset=1500", "train.epochs=4")
    (run,) = grid.load_expand(path).runs.values()
    record = Path(run.record)
    proc = start(path)
    rec = wait_for_epochs(record, 1, proc)
    job_id = rec["jobs"][0]["job_id"]
    subprocess.run(["scancel", job_id], check=True, timeout=30)
    cancelled_at = time.monotonic()
    out, _ = proc.communicate(timeout=180)
    noticed = time.monotonic() - cancelled_at
    print(f"scancel: snakemake ended {noticed:.1f} s after scancel (KillWait 5 s, status checks every 1 s)")
    assert proc.returncode != 0
    lines = [ln for ln in out.splitlines() if ln.startswith(f"icp: error: {run.run_id}: ")]
    assert lines and "cancelled by the scheduler" in lines[0] and f"job {job_id}" in lines[0], out[-3000:]
    assert not record.exists()  # set aside, so that Snakemake trains the run again
    stopped = records.load(run.run_dir).record
    assert stopped["status"] == "failed" and stopped["error"].startswith("cancelled by the scheduler")
    assert status.render(str(path)).count("failed") >= 1

    code, out = run_to_end(path)  # the same command again: resumes from last.pt, no flag
    assert code == 0, out[-3000:]
    final = records.read(record)
    assert final["status"] == "complete" and final["resumed"] == 1 and len(final["jobs"]) == 2
    assert final["jobs"][0]["job_id"] == job_id and not (Path(run.run_dir) / records.STOPPED).exists()
    ref_dir = tmp_path / "reference"  # the same config, uninterrupted, also a SLURM job
    ref = subprocess.run([*LAUNCH, "--timeout-min", "10", "--",
                          *[a if a != run.run_dir else str(ref_dir) for a in run.train_args()]],
                         cwd=REPO, capture_output=True, text=True, timeout=300)
    assert ref.returncode == 0, ref.stderr
    assert strip_timing(final["epochs"]) == strip_timing(records.read(ref_dir / "record.json")["epochs"])

    # a truncated record: reported by status and summarize, then set aside and rebuilt from last.pt by the workflow
    text = record.read_text()
    record.write_text(text[: len(text) // 2])
    assert f"corrupt   {run.run_id}" in status.render(str(path))
    summ = subprocess.run([str(Path(SNAKEMAKE).with_name("python")), "-m", "icp", "summarize", "--grid", str(path)],
                          cwd=REPO, capture_output=True, text=True, timeout=120)
    assert f"corrupt: {run.run_id} (" in summ.stdout, summ.stdout + summ.stderr
    code, out = run_to_end(path)
    assert code == 0 and f"{record}: corrupt record.json" in out and "set aside" in out, out[-3000:]
    rebuilt = records.read(record)  # last.pt's copy of the record: its compute stamp is from just before the end
    assert {k: rebuilt[k] for k in ("status", "epochs", "last", "best", "config_digest", "resumed")} == \
        {k: final[k] for k in ("status", "epochs", "last", "best", "config_digest", "resumed")}
    assert (Path(run.run_dir) / records.CORRUPT).exists()


def test_a_full_disk_is_named_with_its_path_nothing_is_corrupt_and_rerunning_resumes(slurm, fmnist_root, tmp_path):
    disk = tmp_path / "disk"
    disk.mkdir()
    if subprocess.run(["mount", "-t", "tmpfs", "-o", "size=64m", "tmpfs", str(disk)], capture_output=True).returncode:
        pytest.skip("cannot mount a tmpfs here (needs root)")
    try:
        path = tiny_grid(tmp_path, fmnist_root, ["ce"], "data.train_subset=1500", "train.epochs=6")
        g = yaml.safe_load(path.read_text())
        path.write_text(yaml.safe_dump({**g, "runs_dir": str(disk / "runs")}))
        (run,) = grid.load_expand(path).runs.values()
        record = Path(run.record)
        proc = start(path)
        wait_for_epochs(record, 1, proc)
        free = os.statvfs(disk)
        filler = disk / "filler"
        with open(filler, "wb") as fh:  # leave 64 KiB: the next checkpoint (about 2 MB) cannot be written
            fh.write(b"\0" * (free.f_bavail * free.f_frsize - 64 * 1024))
        out, _ = proc.communicate(timeout=240)
        assert proc.returncode != 0
        line = next((ln for ln in out.splitlines() if ln.startswith(f"icp: error: {run.run_id}: ")), out[-3000:])
        assert "no space left on device: " + str(disk / "runs") in line, line
        stopped = records.load(run.run_dir)
        assert stopped.problem == "" and stopped.record["error"].startswith("no space left on device")
        import torch

        saved = torch.load(Path(run.run_dir) / "last.pt", weights_only=False)["epoch"]
        assert len(stopped.record["epochs"]) == saved  # the record never runs ahead of its checkpoint
        filler.unlink()
        code, out = run_to_end(path)
        assert code == 0, out[-3000:]
        final = records.read(record)
        assert final["status"] == "complete" and len(final["epochs"]) == 6 and final["resumed"] == 1
    finally:
        subprocess.run(["umount", "-l", str(disk)], capture_output=True)


def test_status_queries_per_sweep_are_bounded_by_polls_not_by_runs(slurm, fmnist_root, tmp_path):
    """20 runs in flight (2 train at a time on the 2-CPU test node, the rest wait in SLURM's queue): the login side is
    one Snakemake process whose squeue/sacct calls follow its status checks (one per second here), not the runs."""
    path = tiny_grid(tmp_path, fmnist_root, ["ce", "ls"], "train.epochs=1")
    g = yaml.safe_load(path.read_text())
    path.write_text(yaml.safe_dump({**g, "seeds": list(range(10))}))
    m = login_bench.measure(["timeout", "-s", "KILL", "600", SNAKEMAKE, "runs", "--profile", "profiles/slurm-ci",
                             "--jobs", "20", "--config", f"grid={path}"], REPO, tmp_path / "bench")
    assert m["returncode"] == 0, m["output"][-3000:]
    runs = grid.load_expand(path).runs
    assert len(runs) == 20 and all(records.read(r.record)["status"] == "complete" for r in runs.values())
    print(f"20 runs: {m['wall_s']:.0f} s, {m['status_calls']} squeue/sacct calls ({m['calls_per_min']:.0f} per "
          f"minute), up to {m['max_ids_per_call']} job ids per call; login side: {m['processes']} processes (the "
          f"timeout wrapper, Snakemake and its momentary squeue/sacct), peak RSS {m['peak_rss_mb']:.0f} MB")
    assert m["max_ids_per_call"] >= 10  # batched: one call asks about many jobs
    # one squeue (+ at most one sacct) per status check, one check a second: bounded by the time, not the 20 runs
    assert m["status_calls"] <= 2 * (m["wall_s"] + 5)
    squeues = [c["t"] for c in m["calls"] if c["command"] == "squeue"]
    assert all(b - a >= 0.5 for a, b in zip(squeues, squeues[1:]))  # never a burst of one call per run
    assert m["processes"] <= 4  # no process per run on the login side
