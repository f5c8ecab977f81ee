"""``icp status``: counts per study from records, lines per run in flight or failed, and runs whose job is gone."""
import json
import os
import socket
import subprocess
import sys

import yaml

from icp import grid, status
from tests.conftest import REPO


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
           "last": {"test": {"top1": 0.5}} if epochs else None, "config": {"train": {"epochs": 30}},
           "config_digest": status._digest(run)}
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
    assert out.splitlines()[0] == f"grid {path}: 5 runs; records read under {tmp_path / 'runs'}"
    table = out.replace("not started", "not_started").splitlines()[1:4]
    main, noisy = ({k: v for k, v in zip(table[0].split(), row.split())} for row in table[1:])
    assert [main[k] for k in ("complete", "running", "lost", "failed", "not_started", "total")] == \
        ["1", "1", "1", "0", "1", "4"]
    assert (noisy["failed"], noisy["total"]) == ("1", "1")
    lines = out.splitlines()[4:]
    assert any(ln.startswith("running") and runs["ls"].run_id in ln and "epoch 3/30" in ln and "test top-1 50.00%" in ln
               for ln in lines)
    assert any(ln.startswith("lost") and runs["tfkd"].run_id in ln and "job gone" in ln for ln in lines)
    assert any(ln.startswith("failed") and "DataError: no such dataset" in ln for ln in lines)
    only = status.render(str(path), study="noisy")
    assert runs["ls"].run_id not in only and len(only.splitlines()) == 4


def icp(*args, cwd=None):
    return subprocess.run([sys.executable, "-m", "icp", *args], capture_output=True, text=True, cwd=cwd, timeout=120)


def test_status_says_what_it_read_refuses_a_missing_directory_and_notes_another_grids_runs(tmp_path):
    path = write_grid(tmp_path, ["ce", "ls"])
    missing = icp("status", str(tmp_path / "rnus"), "--grid", str(path))
    assert missing.returncode == 2 and missing.stdout == ""
    assert missing.stderr.strip() == f"icp: error: {tmp_path / 'rnus'}: no such runs directory"
    (tmp_path / "runs").mkdir()
    typo = icp("status", str(tmp_path / "rnus"), "--grid", str(path))
    assert typo.stderr.strip().endswith(f"did you mean {tmp_path / 'runs'}?")
    g = grid.expand(grid.load(path), str(path), check_recipes=False)
    ce = next(r for r in g.runs.values() if r.method == "ce" and r.scenario == "clean")
    put(ce, "complete", local_job(1), epochs=30)
    rec = json.loads(open(ce.record).read())
    json.dump({**rec, "config_digest": "another"}, open(ce.record, "w"))  # same id, another grid's config
    other = grid.Run(**{**ce.__dict__, "run_id": "fashion-mnist/resnet20/clean/byot/s0",
                        "run_dir": str(tmp_path / "runs/fashion-mnist/resnet20/clean/byot/s0")})
    put(other, "complete", local_job(1), epochs=30)  # an id this grid does not have
    out = status.render(str(path), str(tmp_path / "runs"))
    assert "note: 2 records under" in out and "runs of another grid" in out
    assert out.splitlines()[3].split()[1] == "0"  # main: none complete


def test_report_of_a_missing_path_is_one_line_and_a_closed_pipe_is_quiet(tmp_path):
    r = icp("report", str(tmp_path / "nope"))
    assert r.returncode == 2 and r.stderr.strip() == f"icp: error: {tmp_path / 'nope'}: no such run directory or record.json"
    piped = subprocess.run(f"{sys.executable} -m icp grid --grid config/paper.yaml | head -1", shell=True,
                           capture_output=True, text=True, timeout=120, cwd=REPO)
    assert piped.stdout.count("\n") == 1 and "Traceback" not in piped.stderr and "BrokenPipe" not in piped.stderr


def test_the_command_line_imports_no_torch_until_a_command_needs_it():
    code = "import sys, icp.cli; icp.cli.parser().format_help(); print('torch' in sys.modules)"
    assert subprocess.run([sys.executable, "-c", code], capture_output=True, text=True).stdout.strip() == "False"
    assert "one line, exit status 2" in icp("--help").stdout
