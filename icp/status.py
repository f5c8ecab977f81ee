"""``icp status``: where a sweep stands, from the grid and the records on disk (reads JSON only).

Per study, how many runs are complete / diverged / running / requeued / interrupted / failed / not started; then
one line per run in flight (running or requeued) with its epoch of total, last test top-1 (SSIM for a VAE) and job
id, and one per failed run with its error. A run in flight whose job is gone (not in SLURM's queue, or a local job's process has
ended: a cancelled sweep, a node that died) is marked ``lost``: its record could not say so itself, and
``snakemake`` again resumes it from ``last.pt``.
"""
from __future__ import annotations

import os
import socket
import subprocess
from pathlib import Path
from typing import Optional

import pandas as pd

from icp import grid, records
from icp.config import ConfigError, did_you_mean, existing_dir
from icp.metrics import headline

LABEL = {"top1": "top-1", "ssim": "SSIM", "elbo": "ELBO"}  # the metric an in-flight run shows

COLUMNS = ("complete", "diverged", "running", "requeued", "lost", "interrupted", "failed", "corrupt", "not started")


def read_records(g: grid.Grid, runs_dir: Optional[str] = None) -> tuple[dict[str, dict], dict[str, str]]:
    """(run id -> its record, run id -> what is wrong with a record that cannot be read); runs without a record are
    in neither. A stopped run's record set aside (record.stopped.json) counts as its record (:func:`records.load`)."""
    base = Path(runs_dir) if runs_dir else None
    found, corrupt = {}, {}
    for rid, run in g.runs.items():
        got = records.load((base / rid) if base else run.run_dir)
        if got.record is not None:
            found[rid] = got.record
        elif got.problem:
            corrupt[rid] = f"{got.path}: {got.problem}"
    return found, corrupt


def table(g: grid.Grid, states: dict[str, str], study: Optional[str] = None) -> pd.DataFrame:
    """Per study, how many of its runs are in each state (``states``: run id -> state; absent = not started)."""
    rows = []
    for name in ([study] if study else list(g.studies)):
        counts = dict.fromkeys(COLUMNS, 0)
        for run in g.select(name):
            counts[states.get(run.run_id, "not started")] += 1
        rows.append({"study": name, **counts, "total": sum(counts.values())})
    return pd.DataFrame(rows)


def slurm_queue() -> Optional[set[str]]:
    """Ids of the jobs in SLURM's queue (array tasks by their job id), or None without a reachable SLURM."""
    try:
        out = subprocess.run(["squeue", "--me", "-h", "-o", "%i"], capture_output=True, text=True, timeout=30)
    except (OSError, subprocess.TimeoutExpired):
        return None
    return {ln.split("_")[0].strip() for ln in out.stdout.splitlines()} if out.returncode == 0 else None


def job_alive(job: dict, queue: Optional[set[str]]) -> Optional[bool]:
    """Whether a record's job still exists: True/False when this machine can tell, else None."""
    if job.get("executor") == "slurm" and queue is not None:
        return str(job.get("job_id")) in queue
    if job.get("executor") == "local" and job.get("hostname") == socket.gethostname():
        try:
            os.kill(int(job["job_id"]), 0)  # a local job's id is its process id
        except (ProcessLookupError, ValueError, TypeError):
            return False
        except PermissionError:
            return True
        return True
    return None


def foreign_records(g: grid.Grid, base: Path) -> int:
    """How many run records under ``base`` are not runs of ``g`` (the runs of another grid file)."""
    if not base.is_dir():
        return 0
    ids = {str(p.parent.relative_to(base)) for name in (records.NAME, records.STOPPED) for p in base.rglob(name)}
    return len(ids - set(g.runs))


def _digest(run: grid.Run) -> str:
    """The config digest that this grid's run has (a record under its id with another is another grid's run)."""
    from icp import config

    return config.load(run.recipe, list(run.overrides)).digest()


def render(grid_path: str, runs_dir: Optional[str] = None, study: Optional[str] = None) -> str:
    """The status of ``grid_path``'s runs (under ``runs_dir``, default the grid's own), headed by what was read."""
    g = grid.expand(grid.load(grid_path), grid_path, check_recipes=False)
    if study is not None and study not in g.studies:
        raise ConfigError(f"{grid_path}: no study '{study}'{did_you_mean(study, g.studies)}")
    base = existing_dir(runs_dir, "runs directory") if runs_dir is not None else Path(g.runs_dir)
    wanted = {r.run_id for r in g.select(study)}
    found, corrupt = read_records(g, runs_dir)
    other = {rid for rid, rec in found.items() if rid in wanted and rec.get("config_digest") != _digest(g[rid])}
    found = {rid: rec for rid, rec in found.items() if rid not in other}
    head = [f"grid {grid_path}: {len(wanted)} runs{f' of study {study}' if study else ''}; records read under "
            f"{base}{'' if base.is_dir() else ' (no such directory yet: nothing has run)'}"]
    foreign = foreign_records(g, base) + len(other)
    if foreign:
        head.append(f"note: {foreign} records under {base} are runs of another grid (not counted here); "
                    "name their grid file with --grid")
    recs = {rid: rec for rid, rec in found.items() if rid in wanted}
    last_job = {rid: (rec.get("jobs") or [{}])[-1] for rid, rec in recs.items()}
    in_flight = [rid for rid, rec in recs.items() if rec["status"] in ("running", "requeued")]
    queue = slurm_queue() if any(last_job[rid].get("executor") == "slurm" for rid in in_flight) else None
    states = {rid: rec["status"] for rid, rec in recs.items()}
    states.update({rid: "corrupt" for rid in corrupt if rid in wanted})
    states.update({rid: "lost" for rid in in_flight if job_alive(last_job[rid], queue) is False})
    lines = [*head, table(g, states, study).to_string(index=False)]
    for rid, rec in recs.items():
        job = last_job[rid]
        if rid in in_flight:
            name, value = headline((rec.get("last") or {}).get("test") or {})  # a VAE shows its SSIM
            shown = "-" if value != value else f"{value:.2f}" if name == "elbo" else f"{100 * value:.2f}%"
            lost = f" ({job.get('executor')} job gone; the record says {rec['status']})" if states[rid] == "lost" else ""
            lines.append(f"{states[rid]:9s} {rid}  epoch {len(rec['epochs'])}/{rec['config']['train']['epochs']}"
                         f"  test {LABEL.get(name, name)} {shown}  job {job.get('job_id')}{lost}")
        elif rec["status"] in ("failed", "interrupted", "diverged"):
            lines.append(f"{rec['status']:9s} {rid}  job {job.get('job_id')}: {rec.get('error')}")
    lines += [f"corrupt   {rid}  {problem} (snakemake again sets it aside and rebuilds the run from last.pt)"
              for rid, problem in corrupt.items() if rid in wanted]
    return "\n".join(lines)
