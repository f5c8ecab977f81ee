"""``icp status``: counts per study from records, lines per run in flight or failed, and runs whose job is gone."""
import json
import os
import shutil
import socket
import subprocess
import sys

import yaml

from icp import grid, gridfile, status
from icp.run_config import config_digest
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
           "config_digest": config_digest(run)}
    os.makedirs(run.run_dir, exist_ok=True)
    with open(run.record, "w") as fh:
        json.dump(rec, fh)


def local_job(pid):
    return {"job_id": str(pid), "executor": "local", "hostname": socket.gethostname()}


def test_counts_in_flight_failed_and_lost_runs(tmp_path):
    path = write_grid(tmp_path, ["ce", "ls", "tfkd", "cskd"])
    g = grid.expand(gridfile.load(path), str(path), check_recipes=False)
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
    assert runs["ls"].run_id not in only and len(only.splitlines()) == 5
    assert only.splitlines()[-1].startswith("progress: 0 of 1 runs final, 0 in flight")  # its failed run is not final


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
    g = grid.expand(gridfile.load(path), str(path), check_recipes=False)
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


def grid_folder(tmp_path):
    """A config folder like the project's: two grid files with their own runs directories (b's ce run has another
    config than a's: more epochs) and a training config that is no grid."""
    folder = tmp_path / "config"
    folder.mkdir()
    recipe = str(REPO / "config/recipes/fmnist-resnet20.yaml")
    for name, methods, sets in (("a", ["ce"], []), ("b", ["ce", "ls"], ["train.epochs=5"])):
        g = {"runs_dir": str(tmp_path / f"runs_{name}"), "seeds": [0], "set": sets,
             "recipes": {"fashion-mnist/resnet20": recipe},
             "studies": {"main": [{"datasets": ["fashion-mnist"], "models": ["resnet20"], "methods": methods}]}}
        (folder / f"{name}.yaml").write_text(yaml.safe_dump(g))
    (folder / "train.yaml").write_text(yaml.safe_dump({"method": {"name": "ce"}, "train": {"epochs": 2}}))
    load = lambda name: grid.expand(gridfile.load(folder / f"{name}.yaml"), str(folder / f"{name}.yaml"),  # noqa: E731
                                    check_recipes=False)
    return folder, load("a"), load("b")


def test_status_without_grid_reports_the_grid_whose_runs_exist(tmp_path):
    folder, a, b = grid_folder(tmp_path)
    assert gridfile.grid_files(folder) == [str(folder / "a.yaml"), str(folder / "b.yaml")]  # not train.yaml
    first = status.render(folder=folder)  # no records anywhere: the first grid, as before
    assert first.splitlines()[0].startswith(f"grid {folder / 'a.yaml'}: 1 runs")
    ls = next(r for r in b.runs.values() if r.method == "ls")
    put(ls, "complete", local_job(1), epochs=30)
    out = status.render(folder=folder).splitlines()  # only b has a record: b, without a word about a
    assert out[0] == f"grid {folder / 'b.yaml'}: 2 runs; records read under {tmp_path / 'runs_b'}"
    assert out[2].split()[:2] == ["main", "1"]
    # the command line: without --grid, config/ of the working directory
    cli = icp("status", cwd=tmp_path)
    assert cli.returncode == 0, cli.stderr
    assert cli.stdout.splitlines()[0] == f"grid config/b.yaml: 2 runs; records read under {tmp_path / 'runs_b'}"
    ce = a.runs["fashion-mnist/resnet20/clean/ce/s0"]
    put(ce, "complete", local_job(1), epochs=30)
    os.utime(ls.record, (1e9, 1e9))  # a's record is the most recent
    out = status.render(folder=folder).splitlines()
    assert out[:4] == ["grids with runs:",
                       f"  {folder / 'a.yaml'}: 1 of 1 runs have a record (newest "
                       f"{out[1].split('(newest ')[1]}",
                       f"  {folder / 'b.yaml'}: 1 of 2 runs have a record (newest 2001-09-09 "
                       f"{out[2].split('2001-09-09 ')[1]}",
                       f"showing {folder / 'a.yaml'}, the grid of the most recent record; another: icp status --grid FILE"]
    assert out[4].startswith(f"grid {folder / 'a.yaml'}: 1 runs")
    # runs directory given: a record of b's ce (same id as a's, another config) found by both is b's, not a's
    os.remove(ls.record)
    put(b.runs[ce.run_id], "complete", local_job(1), epochs=30)
    shutil.copy(b.runs[ce.run_id].record, ce.record)
    out = status.render(runs_dir=str(tmp_path / "runs_a"), folder=folder).splitlines()
    assert out[0].startswith(f"grid {folder / 'b.yaml'}: 2 runs; records read under {tmp_path / 'runs_a'}")


def test_the_note_on_another_grids_records_names_its_grid_file(tmp_path):
    folder, a, b = grid_folder(tmp_path)
    for run in b.runs.values():  # b's two runs: ce (a's id, another config) and ls (an id a does not have)
        put(run, "complete", local_job(1), epochs=30)
    out = status.render(str(folder / "a.yaml"), str(tmp_path / "runs_b"), folder=folder).splitlines()
    assert out[1] == (f"note: 2 records under {tmp_path / 'runs_b'} are runs of {folder / 'b.yaml'} (not counted "
                      f"here); icp status --grid {folder / 'b.yaml'}")
    assert out[3].split()[:2] == ["main", "0"]
    stray = grid.Run(**{**a.runs["fashion-mnist/resnet20/clean/ce/s0"].__dict__,
                        "run_id": "fashion-mnist/resnet20/clean/byot/s0",
                        "run_dir": str(tmp_path / "runs_b/fashion-mnist/resnet20/clean/byot/s0")})
    put(stray, "complete", local_job(1), epochs=30)  # a run of no grid in the folder
    note = status.render(str(folder / "a.yaml"), str(tmp_path / "runs_b"), folder=folder).splitlines()[1]
    assert note == (f"note: 3 records under {tmp_path / 'runs_b'} are runs of {folder / 'b.yaml'} (2) and of another "
                    "grid (1) (not counted here); name their grid file with --grid")


def test_status_counts_the_runs_icp_grid_counts_with_the_tuned_finals(tmp_path):
    """A tuned grid whose selections are written: its final runs are runs of the grid for icp status too."""
    from icp import grid

    path = REPO / "config" / "laptop.yaml"
    n = len(grid.load_expand(path).runs)
    (tmp_path / "runs").mkdir()
    proc = subprocess.run([sys.executable, "-m", "icp", "status", "--grid", str(path), str(tmp_path / "runs")],
                          cwd=REPO, capture_output=True, text=True, timeout=120)
    assert proc.returncode in (0, 1), proc.stderr[-2000:]
    assert f"{n} runs" in proc.stdout.splitlines()[0] + proc.stderr, proc.stdout[:500] + proc.stderr[-500:]
    assert any("+tuned=" in r for r in grid.load_expand(path).runs)  # the selections are committed


def test_watch_writes_a_block_per_refresh_to_a_log_and_ends_once_every_run_is_final(tmp_path, capsys, monkeypatch):
    path = write_grid(tmp_path, ["ce"])
    g = grid.load_expand(path, check_recipes=False)
    (main, noisy) = g.runs.values()
    put(main, "complete", local_job(1), epochs=30)
    put(noisy, "running", local_job(os.getpid()), epochs=3)
    calls = []

    def finish_the_noisy_run(seconds):  # the sleep between refreshes: the sweep moves on meanwhile
        calls.append(seconds)
        put(noisy, "complete", local_job(1), epochs=30)

    monkeypatch.setattr(status.time, "sleep", finish_the_noisy_run)
    assert status.watch(str(path), None, None, every=7, store=False) == 0
    out = capsys.readouterr().out
    assert calls == [7] and out.count("(every 7 s; Ctrl-C stops watching, not the sweep)") == 2
    assert "\x1b[" not in out  # not a terminal: blocks, no cursor codes
    assert "progress: 1 of 2 runs final, 1 in flight" in out and "progress: 2 of 2 runs final" in out
