"""What a sweep costs the login node: run `snakemake <target> --profile P --config grid=G` and print one table row
with its wall time, the most processes and the peak RSS of the Snakemake process tree (everything it started on
this machine: launchers, their Python children; SLURM's jobs run under slurmd, not here), and the scheduler status
queries (`squeue`, `sacct`) it made, counted through wrappers first on PATH, with the most job ids in one query.

    python tools/login_bench.py --grid G [--profile profiles/slurm-ci] [--jobs 30] [--label after]

tests/test_faults.py uses the same functions on a 20-run sweep.
"""
from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

STATUS_COMMANDS = ("squeue", "sacct")


def process_tree_rss(root: int) -> list[int]:
    """RSS in KiB of ``root`` and of every process below it."""
    rows = [ln.split() for ln in subprocess.run(["ps", "-e", "-o", "pid=,ppid=,rss="], capture_output=True,
                                                text=True).stdout.splitlines()]
    children: dict[int, list[int]] = {}
    rss = {}
    for pid, ppid, kib in rows:
        children.setdefault(int(ppid), []).append(int(pid))
        rss[int(pid)] = int(kib)
    out, todo = [], [root]
    while todo:
        pid = todo.pop()
        if pid in rss:
            out.append(rss[pid])
        todo += children.get(pid, [])
    return out


def wrap_status_commands(folder: Path, log: Path) -> dict[str, str]:
    """Wrappers of squeue/sacct in ``folder`` that log each call (time and arguments) to ``log``; the environment
    that puts them first on PATH."""
    folder.mkdir(parents=True, exist_ok=True)
    for name in STATUS_COMMANDS:
        real = shutil.which(name)
        if real is None:
            raise SystemExit(f"login_bench: {name} not found (no SLURM client here)")
        (folder / name).write_text(f'#!/bin/sh\necho "{name} $(date +%s.%N) $*" >> {log}\nexec {real} "$@"\n')
        (folder / name).chmod(0o755)
    return {**os.environ, "PATH": f"{folder}:{os.environ['PATH']}"}


def calls(log: Path) -> list[dict]:
    """The logged status queries: command, time and the number of job ids asked about."""
    out = []
    for line in log.read_text().splitlines() if log.exists() else []:
        name, stamp, *args = line.split()
        ids = next((args[i + 1] for i, a in enumerate(args[:-1]) if a == "-j"), "")
        out.append({"command": name, "t": float(stamp), "ids": len([i for i in ids.split(",") if i])})
    return out


def measure(cmd: list[str], cwd: str | Path, work: Path, sample_s: float = 0.5) -> dict:
    """Run ``cmd`` with counted status commands; the login side's footprint while it ran."""
    log = work / "status-calls.log"
    env = wrap_status_commands(work / "bin", log)
    started = time.monotonic()
    proc = subprocess.Popen(cmd, cwd=cwd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    peak_kib = procs = 0
    while proc.poll() is None:
        tree = process_tree_rss(proc.pid)
        peak_kib, procs = max(peak_kib, sum(tree)), max(procs, len(tree))
        time.sleep(sample_s)
    output = proc.stdout.read()
    wall = time.monotonic() - started
    made = calls(log)
    return {"returncode": proc.returncode, "output": output, "wall_s": wall, "processes": procs,
            "peak_rss_mb": peak_kib / 1024, "status_calls": len(made),
            "calls_per_min": 60 * len(made) / wall if wall else 0.0,
            "max_ids_per_call": max((c["ids"] for c in made), default=0), "calls": made}


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--grid", required=True)
    p.add_argument("--profile", default="profiles/slurm-ci")
    p.add_argument("--jobs", type=int, default=30, help="runs in flight at once")
    p.add_argument("--target", default="runs")
    p.add_argument("--label", default="")
    p.add_argument("extra", nargs="*", help="more snakemake arguments")
    args = p.parse_args(argv)
    snakemake = str(Path(sys.executable).with_name("snakemake"))
    with tempfile.TemporaryDirectory() as tmp:
        m = measure([snakemake, args.target, "--profile", args.profile, "--jobs", str(args.jobs), *args.extra,
                     "--config", f"grid={args.grid}"], Path.cwd(), Path(tmp))
    if m["returncode"]:
        print(m["output"][-3000:], file=sys.stderr)
    print(f"{'label':12s} {'jobs':>5s} {'wall_s':>7s} {'processes':>9s} {'peak_rss_mb':>11s} {'status_calls':>12s} "
          f"{'per_min':>7s} {'max_ids':>7s} {'rc':>3s}")
    print(f"{args.label:12s} {args.jobs:5d} {m['wall_s']:7.0f} {m['processes']:9d} {m['peak_rss_mb']:11.0f} "
          f"{m['status_calls']:12d} {m['calls_per_min']:7.0f} {m['max_ids_per_call']:7d} {m['returncode']:3d}")
    return m["returncode"]


if __name__ == "__main__":
    sys.exit(main())
