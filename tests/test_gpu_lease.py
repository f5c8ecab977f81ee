"""The tools of one lent GPU call (tools/gpu_lease.sh), on the CPU: the smoke keeps a failure's traceback as its
row, and the sweep trains in priority order, never past its deadline, and says what it left out."""
import csv
import os
import subprocess
import sys
import time

import yaml

from icp import grid
from tests.conftest import REPO


def _tsv(path):
    with open(path) as f:
        return list(csv.DictReader(f, delimiter="\t"))


def test_smoke_rows_pass_or_keep_their_traceback(tmp_path, fmnist_root):
    out = tmp_path / "smoke"
    proc = subprocess.run(
        [sys.executable, str(REPO / "tools" / "gpu_smoke.py"), "smoke", "--device", "cpu", "--steps", "2",
         "--warmup", "1", "--threads", "1", "--workers", "2", "--modes", "eager", "--data-root", str(fmnist_root),
         "--methods", "ce", "nosuchmethod", "--budget", "240", "--out", str(out)],
        capture_output=True, text=True, timeout=300, cwd=tmp_path)
    assert proc.returncode == 1, proc.stderr[-2000:]  # one row failed
    rows = {r["method"]: r for r in _tsv(out / "smoke.tsv")}
    assert rows["ce"]["status"] == "pass" and float(rows["ce"]["img_per_s"]) > 0
    assert rows["nosuchmethod"]["status"] == "FAIL" and "nosuchmethod" in rows["nosuchmethod"]["error"]
    tracebacks = (out / "smoke_tracebacks.txt").read_text()
    assert "== nosuchmethod eager: FAIL" in tracebacks and "Traceback" in tracebacks
    assert "1 of 2 rows pass" in (out / "smoke.txt").read_text()


def _tiny(tmp_path, fmnist_root):
    spec = {"runs_dir": str(tmp_path / "runs"), "results_dir": str(tmp_path / "res"), "data_root": str(fmnist_root),
            "seeds": [0, 1], "recipes": {"fashion-mnist/resnet20": "config/recipes/fmnist-resnet20.yaml"},
            "set": ["data.train_subset=256", "data.test_subset=200", "train.epochs=1", "train.batch_size=64"],
            "studies": {"main": [{"datasets": ["fashion-mnist"], "models": ["resnet20"], "methods": ["ce", "ls"]}]}}
    path = tmp_path / "grid.yaml"
    path.write_text(yaml.safe_dump(spec))
    return path


def _sweep(tmp_path, grid_file, deadline_s, first):
    cmd = [sys.executable, str(REPO / "tools" / "gpu_reference.py"), "sweep", "--grid", str(grid_file), "--jobs",
           "2", "--cpus", "2", "--deadline", str(time.time() + deadline_s), "--out", str(tmp_path / "sweep.tsv"),
           "--first", *first]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=deadline_s + 120, cwd=REPO,
                          env={**os.environ, "PYTHONPATH": str(REPO)})
    assert proc.returncode == 0, proc.stderr[-2000:]
    return _tsv(tmp_path / "sweep.tsv")


def test_sweep_trains_the_first_variants_first_and_every_run_in_time(tmp_path, fmnist_root):
    g = grid.load_expand(_tiny(tmp_path, fmnist_root))
    rows = _sweep(tmp_path, tmp_path / "grid.yaml", 240, ["ls"])
    assert [r["run_id"].split("/")[3] for r in rows][:2] == ["ls", "ls"]  # started first, finished first at k = 2
    assert {r["status"] for r in rows} == {"complete"} and len(rows) == len(g.runs) == 4
    # a second sweep finds every run complete and trains nothing
    assert _sweep(tmp_path, tmp_path / "grid.yaml", 60, []) == []


def test_sweep_starts_nothing_past_its_deadline_and_names_what_it_left(tmp_path, fmnist_root):
    _tiny(tmp_path, fmnist_root)
    rows = _sweep(tmp_path, tmp_path / "grid.yaml", 0, ["ce"])
    assert len(rows) == 4 and {r["status"] for r in rows} == {"not started (deadline)"}
    assert not list((tmp_path / "runs").rglob("record.json"))


def test_a_copy_of_the_code_records_the_commit_its_copier_names(monkeypatch):
    from icp import records

    monkeypatch.setenv("ICP_GIT_COMMIT", "0123abc")
    assert records.code_version()["git_commit"] == "0123abc" and records.code_version()["git_dirty"] is None
    monkeypatch.delenv("ICP_GIT_COMMIT")
    assert records.code_version()["git_commit"] != "0123abc"
