"""The Snakemake pipeline: profiles, lint, the paper grid's dry run, and real runs on a real SLURM cluster
(tools/slurm_cluster.sh brings up a single-node cluster on loopback; every Snakemake call has a hard timeout)."""
import base64
import html
import json
import os
import re
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from icp import grid, gridfile, records
from icp.run_config import config_digest
from tests.conftest import DRILL, REPO, TINY

SNAKEMAKE = str(Path(sys.executable).with_name("snakemake"))


def snakemake(*args, timeout=600, cwd=REPO):
    cmd = ["timeout", "-s", "KILL", str(timeout), SNAKEMAKE, *args]
    return subprocess.run(cmd, cwd=cwd, capture_output=True, text=True)


def test_paper_grid_dry_run_lists_every_job():
    start = time.monotonic()
    proc = snakemake("-n", "all", "--quiet", "rules", timeout=60)
    elapsed = time.monotonic() - start
    assert proc.returncode == 0, proc.stderr
    counts = dict(re.findall(r"^(\w+)\s+(\d+)$", proc.stdout + proc.stderr, re.M))
    assert int(counts["train"]) == len(grid.load_expand(REPO / "config/paper.yaml").runs)
    print(f"dry run of the paper grid: {counts['train']} training jobs in {elapsed:.1f} s")


def test_config_fid_features_switches_the_generative_runs_to_inception():
    proc = snakemake("all", "-n", "-p", "--forceall", "--config", "fid_features=inception", timeout=120)
    assert proc.returncode == 0, proc.stderr
    paper = grid.load_expand(REPO / "config/paper.yaml")
    vae = [r for r in paper.runs.values() if r.model == "vae"]
    assert re.findall(r"train\.fid_features=\S+", proc.stdout) == ["train.fid_features=inception"] * len(vae)


@pytest.mark.parametrize("name, executor", [("slurm", "submitit_executor=slurm"),
                                            ("local", "submitit_executor=local")])
def test_profile_names_resolve_from_the_repository_root(name, executor):
    proc = snakemake("--profile", name, "-n", "all", timeout=60)
    assert proc.returncode == 0, proc.stderr
    out = proc.stdout + proc.stderr
    assert f"Using profile {name} " in out and executor in out


def test_workflow_is_lint_clean_and_snakefmt_formatted():
    lint = snakemake("--lint", timeout=60)
    assert lint.returncode == 0 and "Congratulations" in lint.stdout + lint.stderr, lint.stdout + lint.stderr
    fmt = subprocess.run([str(Path(sys.executable).with_name("snakefmt")), "--check", "Snakefile", "workflow"],
                         cwd=REPO, capture_output=True, text=True)
    assert fmt.returncode == 0, fmt.stderr


def write_records(g, top1: dict) -> None:
    """A complete one-epoch record at each run of grid ``g`` (no training): ``top1[method] + seed / 100``."""
    from icp import config

    for run in g.runs.values():
        cfg = config.resolve({}, [f"method.name={run.method}", f"train.seed={run.seed}", "train.epochs=1"]).to_dict()
        test = {"top1": top1[run.method] + run.seed / 100, "macro_f1": 0.6, "ece": 0.05, "nll": 1.0}
        rec = {"run_id": run.run_id, "status": "complete", "error": None, "dataset": run.dataset,
               "model": run.model, "method": run.method, "method_options": {}, "seed": run.seed, "config": cfg,
               "epochs": [{"epoch": 1, "images": 500, "time_s": 1.0, "test": test}], "last": {"epoch": 1, "test": test},
               "best": None, "wall_time_s": 2.0, "compute_s": 2.0, "images_per_s": 500.0, "env": {"device": "cpu"},
               "jobs": [{"job_id": None, "seconds": 2.0}]}
        Path(run.run_dir).mkdir(parents=True)
        Path(run.record).write_text(json.dumps(rec))


def report_results(path: Path) -> dict:
    """The results of a Snakemake HTML report: path -> {caption (HTML), data_uri, ...}."""
    return json.loads(re.search(r"^\s*var results = (\{.*\});$", path.read_text(), re.M).group(1))


def plain(html_text: str) -> str:
    return " ".join(html.unescape(re.sub(r"<[^>]+>", "", html_text)).split())


def test_report_renders_the_tables_and_captions_every_figure(tmp_path):
    from icp import figures

    path = tiny_grid(tmp_path, tmp_path / "data", ["ce", "ls"])
    g_config = yaml.safe_load(path.read_text())
    path.write_text(yaml.safe_dump({**g_config, "seeds": [0, 1]}))
    g = grid.load_expand(path)
    write_records(g, {"ce": 0.61, "ls": 0.64})
    report = tmp_path / "report.html"
    # the aggregation run makes what the report shows, so Snakemake holds the metadata of every job but training's
    proc = snakemake("--cores", "2", "--config", f"grid={path}", "--report", str(report), "--report-after-run",
                     timeout=300)
    out = proc.stdout + proc.stderr
    assert proc.returncode == 0, out[-3000:]
    # the records, made outside Snakemake, have no job metadata: one line says so, not one warning per record
    assert "Missing metadata" not in out and out.count("made outside this Snakemake") == 1, out[-3000:]
    results = report_results(report)
    table = results[f"{tmp_path}/results/tables/main.html"]
    assert table["mime_type"] == "text/html" and "The tables of study main" in plain(table["caption"])
    page = base64.b64decode(table["data_uri"].split("base64,", 1)[1]).decode()
    assert "<table>" in page and "<td>ce</td>" in page and "<td>ls</td>" in page
    # two seeds: no difference can be significant (sign-flip p >= 0.5), so the best is not bold
    assert "<td>61.50 ± 0.71 (2)</td>" in page and "<td>64.50 ± 0.71 (2)</td>" in page and "<strong>" not in page
    assert not any(p.endswith((".csv", ".md", ".tex")) for p in results)  # the formatted tables, not the raw ones
    names = figures.available(g.studies)
    assert {p for p in results if p.endswith(".png")} == {f"{tmp_path}/figures/{n}.png" for n in names}
    for name in names:  # each figure's own caption (only ``literal`` markup), then what all figures share
        caption = plain(results[f"{tmp_path}/figures/{name}.png"]["caption"])
        assert caption.startswith(" ".join(figures.CAPTIONS[name].replace("``", "").split())), name
        assert f"Figure {name} " in caption
    front = json.loads(re.search(r'var workflow_desc = (".*");', report.read_text()).group(1))
    assert f"Grid {path}." in plain(front)  # the front page (workflow/report/workflow.rst) names the grid


# ------------------------------------------------------------------------------------------ real SLURM
def test_the_test_cluster_keeps_accounting(slurm):
    job = subprocess.run(["sbatch", "--parsable", "--wrap", "true", "-o", "/dev/null"], capture_output=True,
                         text=True, timeout=30, check=True).stdout.strip().split(";")[0]
    deadline, state = time.monotonic() + 60, ""
    while state != "COMPLETED" and time.monotonic() < deadline:
        time.sleep(0.5)
        state = subprocess.run(["sacct", "-n", "-X", "-j", job, "-o", "State"], capture_output=True, text=True,
                               timeout=30).stdout.strip()
    assert state == "COMPLETED", f"sacct says {state!r} for job {job}"


def tiny_grid(tmp_path, fmnist_root, methods, *extra):
    sets = [s for s in TINY if not s.startswith(("model.name", "train.progress"))]
    g = {"runs_dir": str(tmp_path / "runs"), "results_dir": str(tmp_path / "results"),
         "figures_dir": str(tmp_path / "figures"), "data_root": str(fmnist_root), "seeds": [0],
         "recipes": {"fashion-mnist/resnet20": "config/recipes/fmnist-resnet20.yaml"},
         "set": [*sets, "data.augment=none", *extra],
         "studies": {"main": [{"datasets": ["fashion-mnist"], "models": ["resnet20"], "methods": methods}]}}
    path = tmp_path / "grid.yaml"
    path.write_text(yaml.safe_dump(g))
    return path


def test_snakemake_on_slurm_trains_a_tiny_grid_with_a_dependency(slurm, fmnist_root, tmp_path):
    path = tiny_grid(tmp_path, fmnist_root, ["ls", "aikd"])  # aikd adds and waits for the ce run
    # two runs per job: ce and ls go in one pack, aikd (after ce) in another
    proc = snakemake("--profile", "profiles/slurm-ci", "--config", f"grid={path}", "--set-resources",
                     "train:runs_per_gpu=2", timeout=600)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    g = grid.load_expand(path)
    assert len(g.runs) == 3
    job_ids = {}
    for run in g.runs.values():
        rec = records.read(run.record)
        assert rec["status"] == "complete" and rec["run_id"] == run.run_id
        (job,) = rec["jobs"]
        assert job["executor"] == "slurm" and job["job_id"].isdigit()
        job_ids[run.method] = int(job["job_id"])
        assert (Path(run.run_dir) / "submitit" / f"{job['job_id']}_train.log").exists()
    assert job_ids["ce"] == job_ids["ls"] != job_ids["aikd"]
    # the ce run finished before its dependant was submitted
    aikd = next(r for r in g.runs.values() if r.method == "aikd")
    ce_end = records.read(g.runs[aikd.depends[0]].record)["updated_at"]
    assert records.read(aikd.record)["jobs"][0]["started_at"] >= ce_end
    again = snakemake("--profile", "profiles/slurm-ci", "--config", f"grid={path}", "-n", timeout=120)
    assert "Nothing to be done" in again.stdout + again.stderr


def test_a_run_that_raises_fails_snakemake_naming_run_and_error(slurm, fmnist_root, tmp_path):
    path = tiny_grid(tmp_path, fmnist_root, ["ce"], "data.dataset=cifar10")  # no CIFAR-10 here: DataError in the job
    # the login side's check would stop it before submission (test_preflight); data "only on the nodes" skips it
    proc = snakemake("--profile", "profiles/slurm-ci", "--config", f"grid={path}", "check_inputs=false", timeout=600)
    out = proc.stdout + proc.stderr
    assert proc.returncode != 0
    assert "icp: error: fashion-mnist/resnet20/clean/ce/s0: " in out
    line = next(ln for ln in out.splitlines() if "icp: error:" in ln)
    assert "DataError" in line and "cifar" in line.lower()
    assert not (tmp_path / "runs/fashion-mnist/resnet20/clean/ce/s0/record.json").exists()  # data fails first


# ------------------------------------------------------------------------------ requeue and time-out on SLURM
LAUNCH = [sys.executable, "-m", "icp.launch", "--executor", "slurm", "--cpus", "1", "--poll-s", "1"]


def squeue(job_id: str) -> tuple[str, str]:
    """(state, reason) of a job, ('', '') once it has left the queue."""
    out = subprocess.run(["squeue", "-h", "-j", job_id, "-o", "%T %r"], capture_output=True, text=True).stdout
    return tuple(out.split(maxsplit=1)) if out.strip() else ("", "")


def wait_releasing_requeued(proc: subprocess.Popen, record: Path, timeout: float) -> list[str]:
    """Wait for the launcher ``proc``; whenever its job is requeued, start it at once (Slurm holds a requeued
    job for about two minutes). Returns the states seen, in order."""
    deadline, seen = time.monotonic() + timeout, []
    while proc.poll() is None:
        if time.monotonic() > deadline:
            proc.terminate()  # the launcher cancels its job
            raise AssertionError(f"the launcher did not end within {timeout} s; states {seen}")
        jobs = (records.read(record).get("jobs") or []) if record.exists() else []
        if jobs:
            state, reason = squeue(jobs[-1]["job_id"])
            if not seen or seen[-1] != state:
                seen.append(state)
            if state == "PENDING" and "BeginTime" in reason:
                subprocess.run(["scontrol", "update", f"JobId={jobs[-1]['job_id']}", "StartTime=now"],
                               capture_output=True)
        time.sleep(0.5)
    return seen


def strip_timing(epochs):
    return [{k: v for k, v in e.items() if k not in ("time_s", "images_per_s")} for e in epochs]


def test_requeued_run_resumes_and_matches_the_uninterrupted_run(slurm, fmnist_root, uninterrupted_drill,
                                                                 tmp_path):
    path = tiny_grid(tmp_path, fmnist_root, ["ce"], *DRILL)
    (run,) = grid.load_expand(path).runs.values()
    record = Path(run.record)
    proc = subprocess.Popen([*LAUNCH, "--timeout-min", "10", "--", *run.train_args()], cwd=REPO,
                            stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 240
        while not (record.exists() and records.read(record)["epochs"]):
            assert proc.poll() is None and time.monotonic() < deadline, "the run never finished an epoch"
            time.sleep(0.2)
        rec = records.read(record)
        job_id = rec["jobs"][0]["job_id"]
        assert rec["status"] == "running" and len(rec["epochs"]) < 4
        subprocess.run(["scontrol", "requeue", job_id], check=True, timeout=30)
        seen = wait_releasing_requeued(proc, record, timeout=300)
        assert proc.returncode == 0, proc.stderr.read()
    finally:
        if proc.poll() is None:
            proc.terminate()
    # the reference: the same config, uninterrupted, also a SLURM job (same threads and libraries), trained once
    final = records.read(record)
    print(f"requeue: job {job_id} states {seen}; resumed {final['resumed']} time(s)")
    assert final["status"] == "complete" and final["resumed"] >= 1 and "PENDING" in seen
    assert [j["job_id"] for j in final["jobs"]] == [job_id, job_id]  # the same SLURM job, run twice
    assert strip_timing(final["epochs"]) == uninterrupted_drill[run.run_id]


def test_a_run_longer_than_its_time_limit_is_requeued_by_submitit_and_completes(slurm, fmnist_root, tmp_path):
    # a 1-minute limit (SLURM's least), warned 30 s before it: about 30 s per attempt, of which start-up takes
    # 5-10 s. The run needs about 50 s of training on an idle 2-core machine (short epochs, each checkpointed), so
    # that it outlasts one attempt even there (20 epochs once finished inside the first) and every attempt makes
    # progress; on a loaded machine it takes a few attempts more, each about 40 s.
    epochs = 40
    path = tiny_grid(tmp_path, fmnist_root, ["ce"], f"train.epochs={epochs}")
    (run,) = grid.load_expand(path).runs.values()
    record = Path(run.record)
    proc = subprocess.Popen([*LAUNCH, "--timeout-min", "1", "--signal-delay-s", "30", "--max-requeues", "12", "--",
                             *run.train_args()], cwd=REPO, stderr=subprocess.PIPE, text=True)
    try:
        seen = wait_releasing_requeued(proc, record, timeout=600)
    finally:
        if proc.poll() is None:
            proc.terminate()
    err = proc.stderr.read()
    assert proc.returncode == 0, err
    final = records.read(record)
    attempts = final["jobs"]
    print(f"time-out: {len(attempts)} attempts of job {attempts[0]['job_id']}, states {seen}, "
          f"resumed {final['resumed']} time(s), {final['wall_time_s']:.0f} s of training")
    assert final["status"] == "complete" and len(final["epochs"]) == epochs
    assert len(attempts) >= 2 and len({j["job_id"] for j in attempts}) == 1
    log = Path(run.run_dir, "submitit", f"{attempts[0]['job_id']}_0_log.err").read_text()
    assert "timed-out" in log  # submitit's handler of SLURM's warning signal requeued it


def test_status_marks_a_run_whose_slurm_job_left_the_queue_as_lost(slurm, tmp_path):
    from tests.test_status import put, write_grid
    from icp import status

    path = write_grid(tmp_path, ["ce", "ls"])
    runs = {r.method: r for r in grid.expand(gridfile.load(path), str(path), check_recipes=False).runs.values()
            if r.scenario == "clean"}
    sb = subprocess.run(["sbatch", "--parsable", "--wrap", "sleep 120", "-o", "/dev/null"], capture_output=True,
                        text=True, timeout=30, check=True)
    job_id = sb.stdout.strip().split(";")[0]
    try:
        gone = subprocess.run(["sbatch", "--parsable", "--wrap", "true", "-o", "/dev/null"], capture_output=True,
                              text=True, timeout=30, check=True).stdout.strip().split(";")[0]
        deadline = time.monotonic() + 60
        while squeue(gone)[0] not in ("", "COMPLETED") and time.monotonic() < deadline:
            time.sleep(0.5)
        put(runs["ce"], "running", {"job_id": job_id, "executor": "slurm"}, epochs=2)
        put(runs["ls"], "requeued", {"job_id": gone, "executor": "slurm"}, epochs=2)
        lines = status.render(str(path)).splitlines()
        assert any(ln.startswith("running") and runs["ce"].run_id in ln and f"job {job_id}" in ln for ln in lines)
        assert any(ln.startswith("lost") and runs["ls"].run_id in ln and "record says requeued" in ln
                   for ln in lines)
    finally:
        subprocess.run(["scancel", job_id], timeout=30)


def test_a_finished_run_plans_no_job_from_another_interpreter(fmnist_root, tmp_path):
    """The interpreter is not a run's parameter: a recreated venv (another sys.executable, the same packages) or a
    moved checkout plans no job for a run that is finished."""
    import site
    import venv

    path = tiny_grid(tmp_path, fmnist_root, ["ce"])
    proc = snakemake("--profile", "local", "--config", f"grid={path}", "--jobs", "1", "--cores", "1", "runs",
                     timeout=600)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    other = tmp_path / "other-venv"
    venv.EnvBuilder(with_pip=False).create(other)
    (pth,) = (other / "lib").glob("python*/site-packages")
    (pth / "icp-test.pth").write_text("\n".join([*site.getsitepackages(), str(REPO)]) + "\n")
    python = other / "bin" / "python"
    assert subprocess.run([python, "-c", "import sys, snakemake; print(sys.executable)"], capture_output=True,
                          text=True).stdout.strip() == str(python)
    again = subprocess.run(["timeout", "-s", "KILL", "120", python, "-m", "snakemake", "--profile", "local",
                            "--config", f"grid={path}", "-n", "runs"], cwd=REPO, capture_output=True, text=True)
    assert again.returncode == 0, again.stderr[-3000:]
    assert "Nothing to be done" in again.stdout + again.stderr, again.stdout[-3000:] + again.stderr[-3000:]


def test_a_stopped_record_that_no_trainer_holds_is_set_aside_at_start(fmnist_root, tmp_path):
    """A record.json whose run is not final (a job that wrote `interrupted` after its launcher had given up) would
    pass for the run's output: the workflow sets it aside when no live trainer holds the run, and plans the run;
    one that a trainer holds (its lock) stays."""
    import fcntl

    from icp import runlock

    path = tiny_grid(tmp_path, fmnist_root, ["ce", "ls"])
    g = grid.load_expand(path)
    ce, ls = (next(r for r in g.runs.values() if r.method == m) for m in ("ce", "ls"))
    for run in (ce, ls):
        Path(run.run_dir).mkdir(parents=True)
        Path(run.record).write_text(json.dumps({"status": "interrupted", "run_id": run.run_id}))
    fd = os.open(Path(ls.run_dir) / runlock.LOCK_NAME, os.O_RDWR | os.O_CREAT)
    fcntl.flock(fd, fcntl.LOCK_EX)  # a live trainer of ls
    try:
        assert runlock.busy(ls.run_dir) and not runlock.busy(ce.run_dir)
        proc = snakemake("--profile", "local", "--config", f"grid={path}", "-n", "runs", timeout=120)
    finally:
        os.close(fd)
    out = proc.stdout + proc.stderr
    assert proc.returncode == 0, out[-3000:]
    assert not Path(ce.record).exists() and (Path(ce.run_dir) / records.STOPPED).exists()
    assert f"{ce.record}: interrupted, not final and no trainer holds it" in out
    assert Path(ls.record).exists()
    assert re.search(r"^train\s+1$", out, re.M), out[-2000:]  # ce planned again; ls left to its trainer


def test_a_record_of_another_config_is_set_aside_with_its_checkpoints_and_the_run_planned(fmnist_root, tmp_path):
    """A finished record under a run's id whose config digest is not the grid's run's (a setting outside the id
    changed, or the code changed what one means) would pass for the run's output, and its last.pt would be refused
    on resume: its state moves to stale/<digest>/ (nothing deleted), the run is planned; a record of today's
    config stays."""
    path = tiny_grid(tmp_path, fmnist_root, ["ce", "ls"])
    g = grid.load_expand(path)
    ce, ls = (next(r for r in g.runs.values() if r.method == m) for m in ("ce", "ls"))
    for run, digest in ((ce, "0123456789ab"), (ls, config_digest(ls))):
        Path(run.run_dir).mkdir(parents=True)
        Path(run.record).write_text(json.dumps({"status": "complete", "run_id": run.run_id, "config_digest": digest}))
        (Path(run.run_dir) / "last.pt").write_bytes(b"weights")
    (Path(ce.run_dir) / "launch.log").write_text("a log\n")
    proc = snakemake("--profile", "local", "--config", f"grid={path}", "-n", "runs", timeout=120)
    out = proc.stdout + proc.stderr
    assert proc.returncode == 0, out[-3000:]
    stale = Path(ce.run_dir) / records.STALE / "0123456789ab"
    assert sorted(p.name for p in stale.iterdir()) == ["last.pt", "record.json"]
    assert not Path(ce.record).exists() and (Path(ce.run_dir) / "launch.log").exists()
    assert f"{ce.record}: made with another config (digest 0123456789ab" in out
    assert Path(ls.record).exists() and (Path(ls.run_dir) / "last.pt").exists()
    assert re.search(r"^train\s+1$", out, re.M), out[-2000:]  # ce planned again; ls is done
    assert records.set_aside_stale(ce.run_dir, "0123456789ab") is None  # nothing left to move


def test_a_killed_snakemakes_locks_are_cleared_and_a_second_sweep_is_refused(fmnist_root, tmp_path):
    """Snakemake's own locks left by a kill no longer need `--unlock`: the next Snakemake, holding the checkout's
    sweep lock (so no other is alive), clears them. While a Snakemake holds it, a second sweep is refused."""
    path = tiny_grid(tmp_path, fmnist_root, ["ce"])
    locks = REPO / ".snakemake" / "locks"
    holder = subprocess.Popen([sys.executable, "-c", "import sys, time; from icp import runlock; "
                               "print(runlock.hold_checkout(sys.argv[1])[0], flush=True); time.sleep(120)",
                               str(REPO / ".snakemake")], cwd=REPO, stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "True"
        busy = snakemake("--profile", "local", "--config", f"grid={path}", "--jobs", "1", "--cores", "1", "runs",
                         timeout=300)
        assert busy.returncode == 1 and "icp: error: another Snakemake runs in this checkout (pid " in busy.stderr
        assert not (tmp_path / "runs").exists()
    finally:
        holder.kill()
        holder.wait()
    locks.mkdir(parents=True, exist_ok=True)
    (locks / "0.input.lock").write_text(str(tmp_path))  # as a Snakemake killed by SIGKILL leaves it
    proc = snakemake("--profile", "local", "--config", f"grid={path}", "--jobs", "1", "--cores", "1", "runs",
                     timeout=600)
    out = proc.stdout + proc.stderr
    assert proc.returncode == 0, out[-3000:]
    assert "removed 1 stale Snakemake lock(s)" in out and not list(locks.glob("*.lock"))
