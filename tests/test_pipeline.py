"""The Snakemake pipeline: profiles, lint, the paper grid's dry run, and real runs on a real SLURM cluster
(tools/slurm_cluster.sh brings up a single-node cluster on loopback; every Snakemake call has a hard timeout)."""
import re
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from icp import grid, records
from tests.conftest import REPO, TINY

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


# ------------------------------------------------------------------------------------------ real SLURM
@pytest.fixture(scope="module")
def slurm():
    """A cluster for this module: started here (and stopped after) unless one already answers."""
    script = ["bash", str(REPO / "tools/slurm_cluster.sh")]
    if subprocess.run([*script, "status"], capture_output=True).returncode == 0:
        yield
        return
    up = subprocess.run(["bash", str(REPO / "tools/slurm_cluster.sh"), "up"], capture_output=True, text=True,
                        timeout=600)
    assert up.returncode == 0, up.stderr
    yield
    subprocess.run(["bash", str(REPO / "tools/slurm_cluster.sh"), "down"], capture_output=True, timeout=120)


def tiny_grid(tmp_path, fmnist_root, methods, *extra):
    sets = [s for s in TINY if not s.startswith(("model.name", "train.progress"))]
    g = {"runs_dir": str(tmp_path / "runs"), "data_root": str(fmnist_root), "seeds": [0],
         "recipes": {"fashion-mnist/resnet20": "config/recipes/fmnist-resnet20.yaml"},
         "set": [*sets, "data.augment=none", *extra],
         "studies": {"main": [{"datasets": ["fashion-mnist"], "models": ["resnet20"], "methods": methods}]}}
    path = tmp_path / "grid.yaml"
    path.write_text(yaml.safe_dump(g))
    return path


def test_snakemake_on_slurm_trains_a_tiny_grid_with_a_dependency(slurm, fmnist_root, tmp_path):
    path = tiny_grid(tmp_path, fmnist_root, ["ls", "aikd"])  # aikd adds and waits for the ce run
    proc = snakemake("--profile", "profiles/slurm-ci", "--config", f"grid={path}", timeout=600)
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
        assert (Path(run.run_dir) / "submitit" / f"{job['job_id']}_0_log.out").exists()
    # the ce run finished before its dependant was submitted
    ce_end = records.read(g.runs[g.depends_records and next(r.depends[0] for r in g.runs.values()
                                                             if r.depends)].record)["updated_at"]
    aikd = next(r for r in g.runs.values() if r.method == "aikd")
    assert records.read(aikd.record)["jobs"][0]["started_at"] >= ce_end
    again = snakemake("--profile", "profiles/slurm-ci", "--config", f"grid={path}", "-n", timeout=120)
    assert "Nothing to be done" in again.stdout + again.stderr


def test_a_run_that_raises_fails_snakemake_naming_run_and_error(slurm, fmnist_root, tmp_path):
    path = tiny_grid(tmp_path, fmnist_root, ["ce"], "data.dataset=cifar10")  # no CIFAR-10 here: DataError in the job
    proc = snakemake("--profile", "profiles/slurm-ci", "--config", f"grid={path}", timeout=600)
    out = proc.stdout + proc.stderr
    assert proc.returncode != 0
    assert "icp.launch: error: fashion-mnist/resnet20/clean/ce/s0" in out
    line = next(ln for ln in out.splitlines() if "icp.launch: error:" in ln)
    assert "DataError" in line and "cifar" in line.lower()
    assert records.read(tmp_path / "runs/fashion-mnist/resnet20/clean/ce/s0/record.json")["status"] == "failed" \
        if (tmp_path / "runs/fashion-mnist/resnet20/clean/ce/s0/record.json").exists() else True
