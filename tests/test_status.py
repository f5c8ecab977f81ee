"""``icp status``: counts per study from records, lines per run in flight or failed, and runs whose job is gone."""
import json
import os
import socket
import subprocess
import sys

import yaml

from icp import grid, status


def write_grid(tmp_path, methods):
    g = {"runs_dir": str(tmp_path / "runs"), "seeds": [0],
         "recipes": {"fashion-mnist/resnet20": "config/recipes/fmnist-resnet20.yaml"},
         "studies": {"main": [{"datasets": ["fashion-mnist"], "models": ["resnet20"], "methods": methods}],
                     "noisy": [{"datasets": ["fashion-mnist"], "models": ["resnet20"], "methods": ["ce"],
                                "scenarios": ["sym0.4"]}]}}
    path = tmp_path / "grid.yaml"
    path.write_text(yaml.safe_dump(g))
    return path


def put(run, status_, job, epochs=0, error=None):
    rec = {"status": status_, "jobs": [job], "epochs": [{}] * epochs, "error": error,
           "last": {"test": {"top1": 0.5}} if epochs else None, "config": {"train": {"epochs": 30}}}
    os.makedirs(run.run_dir, exist_ok=True)
    with open(run.record, "w") as fh:
        json.dump(rec, fh)


def local_job(pid):
    return {"job_id": str(pid), "executor": "local", "hostname": socket.gethostname()}


def test_counts_in_flight_failed_and_lost_runs(tmp_path):
    path = write_grid(tmp_path, ["ce", "ls", "tfkd", "cskd"])
    g = grid.expand(grid.load(path), str(path), check_recipes=False)
    runs = {r.method + ("-noisy" if r.scenario != "clean" else ""): r for r in g.runs.values()}
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    put(runs["ce"], "complete", local_job(1), epochs=30)
    put(runs["ls"], "running", local_job(os.getpid()), epochs=3)
    put(runs["tfkd"], "running", local_job(dead.pid), epochs=7)
    put(runs["ce-noisy"], "failed", local_job(dead.pid), epochs=1, error="DataError: no such dataset")
    out = status.render(str(path))
    table = out.replace("not started", "not_started").splitlines()[:3]
    main, noisy = ({k: v for k, v in zip(table[0].split(), row.split())} for row in table[1:])
    assert [main[k] for k in ("complete", "running", "lost", "failed", "not_started", "total")] == \
        ["1", "1", "1", "0", "1", "4"]
    assert (noisy["failed"], noisy["total"]) == ("1", "1")
    lines = out.splitlines()[3:]
    assert any(ln.startswith("running") and runs["ls"].run_id in ln and "epoch 3/30" in ln and "test top-1 50.00%" in ln
               for ln in lines)
    assert any(ln.startswith("lost") and runs["tfkd"].run_id in ln and "job gone" in ln for ln in lines)
    assert any(ln.startswith("failed") and "DataError: no such dataset" in ln for ln in lines)
    only = status.render(str(path), study="noisy")
    assert runs["ls"].run_id not in only and len(only.splitlines()) == 3
