"""Several runs in one job (icp.pack): launchers meet and share a job; each run keeps its own record and resumes
from its own last.pt when the pack's job is requeued."""
import subprocess
import sys
import threading
import time

from icp import pack, records
from tests.conftest import REPO, TINY


def _train_args(fmnist_root, out, run_id, *extra):
    sets = [f"data.root={fmnist_root}", *TINY, "train.epochs=1", *extra]
    return ["--config", str(REPO / "config/recipes/fmnist-resnet20.yaml"), *sum((["--set", s] for s in sets), []),
            "--out", str(out), "--run-id", run_id]


def test_three_launchers_with_two_runs_per_job_share_jobs_and_keep_their_records(fmnist_root, tmp_path):
    base = [sys.executable, "-m", "icp.launch", "--executor", "local", "--timeout-min", "10", "--poll-s", "0.5",
            "--runs-per-gpu", "2", "--pack-dir", str(tmp_path / ".packs"), "--pack-wait-s", "3", "--cpus", "2", "--"]
    procs = {}
    for i, method in enumerate(["ce", "ls", "tfkd"]):
        procs[method] = subprocess.Popen(
            base + _train_args(fmnist_root, tmp_path / method, f"tiny/{method}", f"method.name={method}"),
            cwd=REPO, stderr=subprocess.PIPE, text=True)
        time.sleep(0.3 * i)
    errs = {m: p.communicate(timeout=600)[1] for m, p in procs.items()}
    assert all(p.returncode == 0 for p in procs.values()), errs
    jobs, shares = {}, {}
    for method in procs:
        rec = records.read(tmp_path / method / "record.json")
        assert rec["status"] == "complete" and rec["run_id"] == f"tiny/{method}"
        (job,) = rec["jobs"]
        assert job["executor"] == "local"
        jobs.setdefault(job["job_id"], []).append(method)
        shares[method] = job["shared_by"]
        assert rec["compute_s"] == job["seconds"] / job["shared_by"]  # a packed run pays its share of the device
        assert (tmp_path / method / "submitit" / f"{job['job_id']}_train.log").exists()
    assert sorted(len(m) for m in jobs.values()) == [1, 2], jobs  # one pack of two, then the third alone
    assert all(shares[m] == len(members) for members in jobs.values() for m in members), shares
    assert sum("(joined)" in e for e in errs.values()) == 1 and sum("(submitted)" in e for e in errs.values()) == 2


def test_a_requeued_pack_resumes_every_run_from_its_checkpoint(fmnist_root, tmp_path):
    runs = [{"run_id": f"tiny/{m}", "run_dir": str(tmp_path / m),
             "train_args": _train_args(fmnist_root, tmp_path / m, f"tiny/{m}", f"method.name={m}",
                                       "train.epochs=8")} for m in ("ce", "ls")]
    job = pack.PackJob(runs, str(REPO), "debug", cpus=2)
    out = {}
    thread = threading.Thread(target=lambda: out.update(job()))
    thread.start()
    deadline = time.monotonic() + 300
    while not all(pack.read_json(tmp_path / m / "record.json").get("epochs") for m in ("ce", "ls")):
        assert time.monotonic() < deadline and thread.is_alive(), out
        time.sleep(0.2)
    delayed = job.checkpoint()  # what submitit calls on SLURM's warning signal
    thread.join(timeout=120)
    assert {r: v["status"] for r, v in out.items()} == {"tiny/ce": "requeued", "tiny/ls": "requeued"}
    stopped = {m: len(records.read(tmp_path / m / "record.json")["epochs"]) for m in ("ce", "ls")}
    assert all(1 <= n < 8 for n in stopped.values()), stopped
    final = delayed.function()  # the requeued job
    assert {r: v["status"] for r, v in final.items()} == {"tiny/ce": "complete", "tiny/ls": "complete"}
    for m in ("ce", "ls"):
        rec = records.read(tmp_path / m / "record.json")
        assert rec["resumed"] == 1 and [e["epoch"] for e in rec["epochs"]] == list(range(1, 9))
    assert pack.PackJob(runs, str(REPO), "debug", cpus=2)() == final  # final runs are not started again


def test_a_pack_member_that_fails_reports_its_error_without_failing_the_others(fmnist_root, tmp_path):
    runs = [{"run_id": "tiny/ok", "run_dir": str(tmp_path / "ok"),
             "train_args": _train_args(fmnist_root, tmp_path / "ok", "tiny/ok")},
            {"run_id": "tiny/bad", "run_dir": str(tmp_path / "bad"),
             "train_args": _train_args(fmnist_root, tmp_path / "bad", "tiny/bad", "data.dataset=cifar10")}]
    result = pack.PackJob(runs, str(REPO), "debug", cpus=2)()
    assert result["tiny/ok"]["status"] == "complete"
    assert result["tiny/bad"]["status"] == "failed" and result["tiny/bad"]["error"].startswith("icp: error:")
    assert "cifar" in result["tiny/bad"]["error"].lower()


def test_a_signal_handler_sees_children_exit_while_the_main_thread_waits_on_them():
    """SLURM's warning reaches a pack while __call__ waits in child.wait(): the handler must see the children exit
    (pack.exited peeks without Popen's waitpid lock) instead of idling to its deadline, as child.wait(timeout) did."""
    import signal
    import subprocess
    import sys
    import threading
    import time

    from icp import pack

    child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(0.8)"])
    seen = {}

    def handler(signum, frame):
        start = time.monotonic()
        while time.monotonic() - start < 10 and not pack.exited(child):
            time.sleep(0.05)
        seen["waited"] = time.monotonic() - start
        seen["exited"] = pack.exited(child)

    old = signal.signal(signal.SIGUSR2, handler)
    try:
        main = threading.main_thread().ident  # SLURM signals the process; its main thread runs the handler
        threading.Timer(0.2, lambda: signal.pthread_kill(main, signal.SIGUSR2)).start()
        child.wait()  # holds Popen's waitpid lock when the signal comes
    finally:
        signal.signal(signal.SIGUSR2, old)
    assert seen["exited"] and seen["waited"] < 5, seen
    assert child.returncode == 0
