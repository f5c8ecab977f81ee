"""``icp status``: where a sweep stands, from the grid and the records on disk (reads JSON only).

Per study, how many runs are complete / diverged / running / requeued / interrupted / failed / not started; then
one line per run in flight (running or requeued) with its epoch of total, last test top-1 (SSIM for a VAE) and job
id, and one per failed run with its error. A run in flight whose job is gone (not in SLURM's queue, or a local job's process has
ended: a cancelled sweep, a node that died) is marked ``lost``: its record could not say so itself, and
``snakemake`` again resumes it from ``last.pt``.

Without a grid file, the one of ``config/`` whose runs have records (:func:`choose_grid`). Records under the runs
directory that are another grid's runs are noted, naming that grid's file where it is in ``config/``.
"""
from __future__ import annotations

import os
import socket
import subprocess
import time
from pathlib import Path
from typing import NamedTuple, Optional

import pandas as pd

from icp import grid, gridfile, records
from icp import progress as progress_mod
from icp.run_config import config_digest
from icp.schema import ConfigError, did_you_mean, existing_dir

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


def foreign_ids(g: grid.Grid, base: Path) -> set[str]:
    """The ids of the run records under ``base`` that are not runs of ``g``."""
    if not base.is_dir():
        return set()
    ids = {str(p.parent.relative_to(base)) for name in (records.NAME, records.STOPPED) for p in base.rglob(name)}
    return ids - set(g.runs)




DEFAULT_GRID = "config/paper.yaml"  # what `icp status` reads where no grid under config/ has a record


class Recorded(NamedTuple):
    """A grid file's runs that have a record (under its runs directory, or the one given): run id -> (the record's
    path, its modification time)."""
    path: str
    grid: grid.Grid
    found: dict[str, tuple[Path, float]]

    @property
    def latest(self) -> float:
        return max((t for _, t in self.found.values()), default=0.0)


def _expanded(path: str, cache: dict) -> grid.Grid:
    if path not in cache:
        # with the tuned cells' final runs whose selection is written, as icp grid counts them
        cache[path] = grid.expand(gridfile.load(path), path, check_recipes=False).with_selections()
    return cache[path]


def _same_file(a: str, b: str) -> bool:
    return Path(a).resolve() == Path(b).resolve()


def recorded_runs(path: str, runs_dir: Optional[str] = None, cache: Optional[dict] = None) -> Recorded:
    """The runs of a grid file that have a record (record.json or a stopped run's), from the file system only."""
    g = _expanded(path, {} if cache is None else cache)
    base = Path(runs_dir) if runs_dir else None
    found = {}
    for rid, run in g.runs.items():
        run_dir = (base / rid) if base else Path(run.run_dir)
        for name in (records.NAME, records.STOPPED):
            try:
                found[rid] = (run_dir / name, (run_dir / name).stat().st_mtime)
                break
            except OSError:
                continue
    return Recorded(path, g, found)


def _own_only(candidates: list[Recorded]) -> list[Recorded]:
    """``candidates`` without the records that another candidate finds too (grids sharing a runs directory, or one
    given) but whose config digest is not that of the grid's run: a record belongs to the grids of its config."""
    seen: dict[Path, int] = {}
    for c in candidates:
        for p, _ in c.found.values():
            seen[p.resolve()] = seen.get(p.resolve(), 0) + 1
    digests: dict[Path, Optional[str]] = {}
    out = []
    for c in candidates:
        keep = {}
        for rid, (p, t) in c.found.items():
            if seen[p.resolve()] > 1:
                if p.resolve() not in digests:
                    digests[p.resolve()] = (records.load(p.parent).record or {}).get("config_digest")
                if digests[p.resolve()] not in (None, config_digest(c.grid.runs[rid])):
                    continue
            keep[rid] = (p, t)
        out.append(c._replace(found=keep))
    return out


def choose_grid(runs_dir: Optional[str] = None, folder: str | Path = "config",
                cache: Optional[dict] = None) -> tuple[str, list[str]]:
    """The grid file that ``icp status`` reports without ``--grid``, and the lines that say why: among the grid files
    in ``folder`` (:func:`icp.gridfile.grid_files`), the one whose runs have records; where several have, one line
    each with its counts, and the one shown: that of the most recent record (then the most runs with a record, then
    the largest share of its runs: a subset grid sharing a runs directory with a larger one, as config/reference.yaml
    shares config/paper.yaml's). None has any: :data:`DEFAULT_GRID` (or the folder's first grid)."""
    cache = {} if cache is None else cache
    files = gridfile.grid_files(folder)
    found = [f for f in _own_only([recorded_runs(p, runs_dir, cache) for p in files]) if f.found]
    if not found:
        default = next((p for p in files if _same_file(p, DEFAULT_GRID)), files[0] if files else DEFAULT_GRID)
        return default, []
    if len(found) == 1:
        return found[0].path, []
    found.sort(key=lambda f: (f.latest, len(f.found), len(f.found) / len(f.grid.runs)), reverse=True)
    where = f" under {runs_dir}" if runs_dir else ""
    lines = [f"grids with runs{where}:"]
    lines += [f"  {f.path}: {len(f.found):,} of {len(f.grid.runs):,} runs have a record (newest "
              f"{time.strftime('%Y-%m-%d %H:%M', time.localtime(f.latest))})" for f in found]
    lines.append(f"showing {found[0].path}, the grid of the most recent record; another: icp status --grid FILE")
    return found[0].path, lines


def owners(ids: dict[str, Optional[str]], exclude: str, folder: str | Path = "config",
           cache: Optional[dict] = None) -> dict[str, int]:
    """Which grid files in ``folder`` (other than ``exclude``) the runs ``ids`` (run id -> its record's config
    digest) belong to: grid file -> how many of them it has, by id and config digest; each run counted once, for the
    first grid file (by name) that has it."""
    cache = {} if cache is None else cache
    out: dict[str, int] = {}
    left = dict(ids)
    for path in gridfile.grid_files(folder):
        if not left or _same_file(path, exclude):
            continue
        try:
            g = _expanded(path, cache)
        except ConfigError:  # a grid file that does not load names nothing
            continue
        mine = {rid for rid, digest in left.items() if rid in g.runs and digest == config_digest(g.runs[rid])}
        if mine:
            out[path] = len(mine)
            left = {rid: d for rid, d in left.items() if rid not in mine}
    return out


def _foreign_note(foreign: dict[str, Optional[str]], base: Path, grid_path: str, folder: str | Path,
                  cache: dict) -> str:
    """The line about the records under ``base`` that are another grid's runs, naming the grid files in ``folder``
    they belong to (by run id and config digest), and the command that shows them."""
    named = owners(foreign, grid_path, folder, cache)
    unknown = len(foreign) - sum(named.values())
    parts = [(path, n) for path, n in named.items()] + ([("another grid", unknown)] if unknown else [])
    whose = parts[0][0] if len(parts) == 1 else " and of ".join(f"{name} ({n})" for name, n in parts)
    if len(named) == 1 and not unknown:  # the command that shows them
        path = next(iter(named))
        hint = f"icp status --grid {path}" + ("" if _same_file(str(base), _expanded(path, cache).runs_dir)
                                              else f" {base}")
    else:
        hint = "name their grid file with --grid"
    return f"note: {len(foreign)} records under {base} are runs of {whose} (not counted here); {hint}"


class Snapshot(NamedTuple):
    text: str
    grid: grid.Grid
    progress: "progress_mod.Progress"


def render(grid_path: Optional[str] = None, runs_dir: Optional[str] = None, study: Optional[str] = None,
           folder: str | Path = "config") -> str:
    """The status of ``grid_path``'s runs (under ``runs_dir``, default the grid's own), headed by what was read.
    Without ``grid_path``, the grid file in ``folder`` whose runs have records (:func:`choose_grid`)."""
    return snapshot(grid_path, runs_dir, study, folder).text


def snapshot(grid_path: Optional[str] = None, runs_dir: Optional[str] = None, study: Optional[str] = None,
             folder: str | Path = "config") -> Snapshot:
    """:func:`render`'s text with the grid it read and its progress (:mod:`icp.progress`: runs per hour, ETA)."""
    cache: dict = {}
    chosen: list[str] = []
    if grid_path is None:
        if runs_dir is not None:
            existing_dir(runs_dir, "runs directory")
        grid_path, chosen = choose_grid(runs_dir, folder, cache)
    g = _expanded(grid_path, cache)
    if study is not None and study not in g.studies:
        raise ConfigError(f"{grid_path}: no study '{study}'{did_you_mean(study, g.studies)}")
    base = existing_dir(runs_dir, "runs directory") if runs_dir is not None else Path(g.runs_dir)
    wanted = {r.run_id for r in g.select(study)}
    found, corrupt = read_records(g, runs_dir)
    other = {rid for rid, rec in found.items() if rid in wanted and rec.get("config_digest") != config_digest(g[rid])}
    foreign = {rid: (records.load(base / rid).record or {}).get("config_digest") for rid in foreign_ids(g, base)}
    foreign.update({rid: found[rid].get("config_digest") for rid in other})
    found = {rid: rec for rid, rec in found.items() if rid not in other}
    head = [*chosen, f"grid {grid_path}: {len(wanted)} runs{f' of study {study}' if study else ''}; records read under "
            f"{base}{'' if base.is_dir() else ' (no such directory yet: nothing has run)'}"]
    if foreign:
        head.append(_foreign_note(foreign, base, grid_path, folder, cache))
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
            from icp.metrics import headline_text  # torch: only where a run is in flight

            shown = headline_text((rec.get("last") or {}).get("test") or {})  # a VAE shows its SSIM
            lost = f" ({job.get('executor')} job gone; the record says {rec['status']})" if states[rid] == "lost" else ""
            lines.append(f"{states[rid]:9s} {rid}  epoch {len(rec['epochs'])}/{rec['config']['train']['epochs']}"
                         f"  test {shown}  job {job.get('job_id')}{lost}")
        elif rec["status"] in ("failed", "interrupted", "diverged"):
            lines.append(f"{rec['status']:9s} {rid}  job {job.get('job_id')}: {rec.get('error')}")
    lines += [f"corrupt   {rid}  {problem} (snakemake again sets it aside and rebuilds the run from last.pt)"
              for rid, problem in corrupt.items() if rid in wanted]
    done = progress_mod.progress(g, recs, states, study)
    lines.append(progress_mod.line(done))
    return Snapshot("\n".join(lines), g, done)


def watch(grid_path: Optional[str], runs_dir: Optional[str], study: Optional[str], every: float,
          store: bool = True) -> int:
    """``icp status --watch``: :func:`snapshot` every ``every`` seconds until every run is final, redrawn in place in
    a terminal and as one block per refresh (under its time) in a log, the grid's MLflow store synced each time
    (:mod:`icp.tracker_store`). Ctrl-C stops the watching, never the sweep (exit 130)."""
    import sys

    from icp import tracker_store

    tty = sys.stdout.isatty()
    try:
        while True:
            snap = snapshot(grid_path, runs_dir, study)
            if store:
                tracker_store.sync_grid(snap.grid, runs_dir=runs_dir)
            head = f"{time.strftime('%Y-%m-%d %H:%M:%S')}  (every {every:g} s; Ctrl-C stops watching, not the sweep)"
            print(("\x1b[H\x1b[2J" if tty else "") + head, snap.text, "" if tty else "\n", sep="\n", flush=True)
            if snap.progress.final == snap.progress.total:
                return 0
            time.sleep(every)
    except KeyboardInterrupt:
        print("", file=sys.stderr)
        return 130

