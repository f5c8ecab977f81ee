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

from icp import faults, grid, launch, records, status
from tests.conftest import DRILL, REPO
from tests.test_pipeline import SNAKEMAKE, squeue, strip_timing, tiny_grid

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


def test_a_killed_trainer_is_named_by_its_signal_and_a_blinking_controller_is_told_from_a_refusal(tmp_path):
    log = tmp_path / "57_0_log.err"
    log.write_text("srun: error: localhost: task 0: Killed\nsrun: Terminating StepId=57.0\n")
    running = {"status": "running", "epochs": [{}, {}]}
    assert faults.describe("FAILED", running, [log]) == "killed (SIGKILL: out of memory or an admin)"
    assert faults.describe("CANCELLED", running, [log]).startswith("cancelled by the scheduler")  # SLURM's own stop
    assert faults.describe("FAILED", running) == "the job ended (FAILED) without a result after 2 recorded epochs"
    assert faults.signal_cause(-9) == "killed (SIGKILL: out of memory or an admin)"  # a child's returncode
    assert faults.signal_cause(-11).startswith("crashed (SIGSEGV")
    down = "sbatch: error: Batch job submission failed: Unable to contact slurm controller (connect failure)"
    assert faults.unreachable(RuntimeError(down)) and faults.unreachable("Socket timed out on send/recv operation")
    assert not faults.unreachable("sbatch: error: Batch job submission failed: Invalid partition name specified")
    delays = faults.retry_delays(300)
    assert delays[:4] == [5, 10, 20, 40] and max(delays) == 60 and sum(delays) == 300


def test_a_submission_is_retried_while_the_controller_does_not_answer_and_a_refusal_is_raised_at_once():
    calls, lines = [], []

    def submit():
        calls.append(1)
        if len(calls) < 3:
            raise RuntimeError("sbatch: error: Batch job submission failed: Unable to contact slurm controller")
        return "job"

    assert launch.submit_retrying(submit, "r", total_s=0.3, log=lines.append, first_s=0.1) == "job"
    assert len(calls) == 3 and len(lines) == 2 and "retry 1 of" in lines[0] and "does not answer" in lines[0]

    def refused():
        calls.append(1)
        raise RuntimeError("sbatch: error: Invalid partition name specified")

    calls.clear()
    with pytest.raises(RuntimeError, match="Invalid partition"):
        launch.submit_retrying(refused, "r", total_s=10, log=lines.append)
    assert len(calls) == 1


def test_a_requeued_jobs_record_says_requeued_once_back_in_the_queue(tmp_path):
    run = tmp_path / "run"
    run.mkdir()
    records.jsonfile.write({"status": "running", "epochs": [{}], "jobs": [{"job_id": "57"}]}, run / "record.json")
    memo: dict = {}
    assert not launch.watch_requeue(memo, run, "57", "RUNNING")
    assert not launch.watch_requeue(memo, run, "58", "PENDING")  # another job's record: left alone
    assert records.read(run / "record.json")["status"] == "running"
    memo = {}
    assert not launch.watch_requeue(memo, run, "57", "RUNNING")
    assert launch.watch_requeue(memo, run, "57", "PENDING")  # requeued: said once
    assert records.read(run / "record.json")["status"] == "requeued"
    assert not launch.watch_requeue(memo, run, "57", "PENDING")
    records.jsonfile.write({"status": "complete", "epochs": [{}], "jobs": [{"job_id": "57"}]}, run / "record.json")
    assert not records.mark_requeued(run, "57")  # a final record is never marked


def test_an_orphaned_trainer_stops_once_its_job_is_requeued_and_the_requeued_job_resumes_exactly(tiny_cfg, tmp_path):
    """slurmd lost: SLURM requeues the job while its trainer still runs. The launcher marks the record requeued
    (:func:`records.mark_requeued`, as :func:`launch.watch_requeue` does when the job is queued again); the orphan
    no longer writes ``running`` over it and finishes the run outside SLURM's allocation: it saves the epoch it was
    in, says ``requeued`` with a note, and stops. The requeued job (same id, as SLURM keeps it) resumes exactly."""
    from icp import checkpoint, engine

    cfg = tiny_cfg("train.epochs=3", "data.train_subset=200", "data.test_subset=100", "train.eval_batch_size=100")
    full = engine.Trainer(cfg, tmp_path / "full").run()
    run = tmp_path / "part"
    orphan = engine.Trainer(cfg, run, job=records.job_info("57", "slurm"))
    train_epoch = orphan.train_epoch

    def requeued_during_the_second_epoch(epoch):
        out = train_epoch(epoch)
        if epoch == 1:
            assert records.mark_requeued(run, "57")  # the record said running, epoch 1, job 57
        return out

    orphan.train_epoch = requeued_during_the_second_epoch
    rec = orphan.run()
    disk = records.read(run / "record.json")
    assert rec["status"] == disk["status"] == "requeued" and len(disk["epochs"]) == 2
    assert "requeued by SLURM while this trainer still ran" in disk["notes"][-1]
    assert checkpoint.load(run / "last.pt")["epoch"] == 2  # the record never runs ahead of its checkpoint
    assert not records.taken_back(run, "58") and not records.taken_back(run, None)
    resumed = engine.Trainer(cfg, run, job=records.job_info("57", "slurm")).run()
    assert resumed["status"] == "complete" and resumed["resumed"] == 1 and len(resumed["jobs"]) == 2
    strip = lambda eps: [{k: v for k, v in e.items() if k not in ("time_s", "images_per_s")} for e in eps]
    assert strip(resumed["epochs"]) == strip(full["epochs"])


def test_a_job_that_ended_before_its_training_wrote_a_record_leaves_one_that_says_failed(tmp_path, fmnist_root):
    """No data on the node: the training raised before its record; the run is failed with the cause in status and in
    the summary, never not started, and it starts afresh next time (the record is set aside)."""
    from types import SimpleNamespace

    path = tiny_grid(tmp_path, fmnist_root, ["ce"])
    (run,) = grid.load_expand(path).runs.values()
    Path(run.run_dir, "submitit").mkdir(parents=True)
    job = SimpleNamespace(job_id="57")
    cause = launch.record_stop(Path(run.run_dir), job, Path(run.run_dir) / "submitit", "FAILED",
                               "DataError: cifar100 not found under /nodes/data", 3, run.run_id, run.train_args(),
                               "slurm")
    assert cause == "DataError: cifar100 not found under /nodes/data"
    assert not Path(run.record).exists()
    stub = records.read(Path(run.run_dir) / records.STOPPED)
    assert stub["status"] == "failed" and stub["error"] == cause and stub["jobs"][0]["job_id"] == "57"
    text = status.render(str(path))
    assert f"failed    {run.run_id}  job 57: {cause}" in text and "another grid" not in text, text
    from icp.results import frames

    row = frames.runs_frame(grid.load_expand(path)).iloc[0]
    assert row.status == "failed" and row.error == cause


# ------------------------------------------------------------------------------------------- on SLURM
def test_scancel_is_named_and_rerunning_resumes_exactly_and_a_truncated_record_is_rebuilt(slurm, fmnist_root,
                                                                                           uninterrupted_drill,
                                                                                           tmp_path):
    path = tiny_grid(tmp_path, fmnist_root, ["ce"], *DRILL)
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
    # the same config, uninterrupted, also a SLURM job (trained once for the drills)
    assert strip_timing(final["epochs"]) == uninterrupted_drill[run.run_id]

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
    """12 runs in flight (2 train at a time on the 2-CPU test node, the rest wait in SLURM's queue): the login side is
    one Snakemake process whose squeue/sacct calls follow its status checks (one per second here), not the runs."""
    path = tiny_grid(tmp_path, fmnist_root, ["ce", "ls"], "train.epochs=1")
    g = yaml.safe_load(path.read_text())
    path.write_text(yaml.safe_dump({**g, "seeds": list(range(6))}))
    m = login_bench.measure(["timeout", "-s", "KILL", "600", SNAKEMAKE, "runs", "--profile", "profiles/slurm-ci",
                             "--jobs", "20", "--config", f"grid={path}"], REPO, tmp_path / "bench")
    assert m["returncode"] == 0, m["output"][-3000:]
    runs = grid.load_expand(path).runs
    assert len(runs) == 12 and all(records.read(r.record)["status"] == "complete" for r in runs.values())
    print(f"12 runs: {m['wall_s']:.0f} s, {m['status_calls']} squeue/sacct calls ({m['calls_per_min']:.0f} per "
          f"minute), up to {m['max_ids_per_call']} job ids per call; login side: {m['processes']} processes (the "
          f"timeout wrapper, Snakemake and its momentary squeue/sacct), peak RSS {m['peak_rss_mb']:.0f} MB")
    assert m["max_ids_per_call"] >= 10  # batched: one call asks about many jobs
    # one squeue (+ at most one sacct) per status check, one check a second: bounded by the time, not the 12 runs
    assert m["status_calls"] <= 2 * (m["wall_s"] + 5)
    squeues = [c["t"] for c in m["calls"] if c["command"] == "squeue"]
    assert all(b - a >= 0.5 for a, b in zip(squeues, squeues[1:]))  # never a burst of one call per run
    assert m["processes"] <= 4  # no process per run on the login side


# ------------------------------------------------------------- a pack requeued, a controller that blinks, kill -9
CLUSTER = ["bash", str(REPO / "tools/slurm_cluster.sh")]


def _reference(tmp_path, path, *extra) -> dict:
    """The same grid under another runs directory, trained uninterrupted by the same command: run id -> epochs."""
    g = yaml.safe_load(path.read_text())
    ref = tmp_path / "reference.yaml"
    ref.write_text(yaml.safe_dump({**g, "runs_dir": str(tmp_path / "reference-runs"),
                                   "results_dir": str(tmp_path / "reference-results")}))
    code, out = run_to_end(ref, *extra)
    assert code == 0, out[-3000:]
    return {rid: strip_timing(records.read(r.record)["epochs"]) for rid, r in grid.load_expand(ref).runs.items()}


def test_a_requeued_pack_says_requeued_while_queued_and_resumes_both_runs_in_the_same_call(slurm, fmnist_root,
                                                                                           tmp_path):
    """`scontrol requeue` of a pack's job mid-run: its two trainers stop (SIGTERM), the pack writes no result, the
    workflow waits for the requeued job, both records say requeued while SLURM holds it, and when it runs again
    each run resumes from its own last.pt: Snakemake exits 0 in the same call, with no error line and no rerun, and
    every epoch equals the uninterrupted pack's."""
    path = tiny_grid(tmp_path, fmnist_root, ["ce", "ls"], "data.train_subset=1500", "train.epochs=4")
    runs = list(grid.load_expand(path).runs.values())
    packed = ("--set-resources", "train:runs_per_gpu=2")
    proc = start(path, *packed)
    try:
        recs = [wait_for_epochs(Path(r.record), 1, proc) for r in runs]
        (job_id,) = {rec["jobs"][0]["job_id"] for rec in recs}  # one job for the pack
        assert all(len(rec["epochs"]) < 4 for rec in recs)
        requeued_at = time.monotonic()
        subprocess.run(["scontrol", "requeue", job_id], check=True, timeout=30)
        said, deadline = None, time.monotonic() + 180
        while said is None:  # SLURM holds a requeued job about two minutes: the records say so meanwhile
            assert proc.poll() is None and time.monotonic() < deadline, proc.stdout.read()[-3000:]
            state, reason = squeue(job_id)
            now = [records.load(r.run_dir).record["status"] for r in runs]
            if state == "PENDING" and now == ["requeued", "requeued"]:
                said = status.render(str(path))
                subprocess.run(["scontrol", "update", f"JobId={job_id}", "StartTime=now"], capture_output=True)
            time.sleep(0.3)
        out, _ = proc.communicate(timeout=400)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert all(f"requeued  {r.run_id}  epoch " in said for r in runs), said  # icp status tells it from a live run
    assert proc.returncode == 0 and "icp: error" not in out, out[-3000:]
    print(f"requeued pack: both runs resumed and completed {time.monotonic() - requeued_at:.0f} s after the requeue")
    reference = _reference(tmp_path, path, *packed)
    for run in runs:
        final = records.read(run.record)
        assert final["status"] == "complete" and final["resumed"] == 1, final["status"]
        assert [j["job_id"] for j in final["jobs"]] == [job_id, job_id]  # the same job, run twice
        assert strip_timing(final["epochs"]) == reference[run.run_id], run.run_id


def test_a_controller_down_at_submission_loses_no_run(slurm, fmnist_root, tmp_path):
    """slurmctld stopped for 30 s (longer than one sbatch's own wait for it) while a sweep of four runs submits:
    each submission it does not answer is retried with a line, and every run completes in the same call."""
    path = tiny_grid(tmp_path, fmnist_root, ["ce", "ls"], "train.epochs=1")
    g = yaml.safe_load(path.read_text())
    path.write_text(yaml.safe_dump({**g, "seeds": [0, 1]}))
    subprocess.run([*CLUSTER, "ctld-stop"], check=True, capture_output=True, timeout=60)
    try:
        began = time.monotonic()
        proc = start(path)
        time.sleep(30)
    finally:
        subprocess.run([*CLUSTER, "ctld-start"], check=True, capture_output=True, timeout=60)
    out, _ = proc.communicate(timeout=500)
    runs = grid.load_expand(path).runs
    retries = [ln for ln in out.splitlines() if "the controller does not answer" in ln and "retry" in ln]
    print(f"controller down 30 s: {len(retries)} retry lines; all {len(runs)} runs done "
          f"{time.monotonic() - began:.0f} s after the start", *retries, sep="\n")
    assert proc.returncode == 0, out[-3000:]
    assert retries and "not submitted" not in out, out[-3000:]
    assert all(records.read(r.record)["status"] == "complete" for r in runs.values())


def _trainer_pids(folder: Path) -> list[int]:
    """The Python processes of submitit's job in ``folder`` (not the srun that started them)."""
    found = []
    for proc in Path("/proc").iterdir():
        try:
            argv = (proc / "cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        if proc.name.isdigit() and Path(argv[0].decode()).name.startswith("python") and \
                b"submitit.core._submit" in argv and str(folder).encode() in argv:
            found.append(int(proc.name))
    return found


def test_a_trainer_killed_by_sigkill_is_named_by_its_signal_and_resumes_exactly(slurm, fmnist_root,
                                                                               uninterrupted_drill, tmp_path):
    path = tiny_grid(tmp_path, fmnist_root, ["ce"], *DRILL)
    (run,) = grid.load_expand(path).runs.values()
    record = Path(run.record)
    proc = start(path)
    wait_for_epochs(record, 1, proc)
    pids = _trainer_pids(Path(run.run_dir) / "submitit")
    assert pids, "no trainer process found"
    for pid in pids:
        os.kill(pid, 9)
    out, _ = proc.communicate(timeout=180)
    assert proc.returncode != 0
    line = next((ln for ln in out.splitlines() if ln.startswith(f"icp: error: {run.run_id}: ")), out[-3000:])
    assert "killed (SIGKILL: out of memory or an admin)" in line, line
    stopped = records.load(run.run_dir).record
    assert stopped["status"] == "failed" and stopped["error"] == "killed (SIGKILL: out of memory or an admin)"
    code, out = run_to_end(path)
    assert code == 0, out[-3000:]
    final = records.read(record)
    assert final["status"] == "complete" and final["resumed"] == 1
    assert strip_timing(final["epochs"]) == uninterrupted_drill[run.run_id]


def test_a_dataset_missing_on_the_login_side_stops_the_sweep_before_any_submission(slurm, fmnist_root, tmp_path):
    """A grid naming CIFAR-100 with nothing under its data root, beside installed Fashion-MNIST runs: one line names
    it with the command that prepares it, exit 1, and SLURM receives no job at all (accounting counts them)."""
    from tests.test_preflight import _two_datasets

    def jobs() -> int:
        out = subprocess.run(["sacct", "-n", "-X", "-a", "-S", "2000-01-01", "-o", "JobID"], capture_output=True,
                             text=True, timeout=60)
        assert out.returncode == 0, out.stderr
        return len(out.stdout.split())

    before = jobs()
    code, out = run_to_end(_two_datasets(tmp_path, fmnist_root), timeout=300)
    errors = [ln for ln in out.splitlines() if ln.startswith("icp: error:")]
    assert code == 1 and len(errors) == 1 and "cifar100 not found" in errors[0], out[-3000:]
    assert "icp data prepare --dataset cifar100" in errors[0]
    assert jobs() == before and not (tmp_path / "runs").exists()


def test_the_timeout_line_counts_the_requeues_the_records_jobs_used(tmp_path):
    """A pack killed at its first time limit used no requeue, whatever max_requeues allowed."""
    from types import SimpleNamespace

    from icp import jsonfile, launch

    run_dir = tmp_path / "run"
    run_dir.mkdir()
    jsonfile.write({"status": "running", "run_id": "r", "jobs": [{"job_id": "7"}]}, run_dir / "record.json")
    line = launch.record_stop(run_dir, SimpleNamespace(job_id="7"), tmp_path, "TIMEOUT", "", requeues=5)
    assert "TIMEOUT after 0 requeues" in line
    jsonfile.write({"status": "running", "run_id": "r", "jobs": [{"job_id": "7"}] * 3}, run_dir / "record.json")
    assert "TIMEOUT after 2 requeues" in launch.record_stop(run_dir, SimpleNamespace(job_id="7"), tmp_path,
                                                               "TIMEOUT", "", requeues=5)
