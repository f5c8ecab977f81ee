"""``icp status``: where a sweep stands, from the grid and the records on disk (reads JSON only).

Per study, how many runs are complete / diverged / running / requeued / interrupted / failed / not started; then
one line per run in flight (running or requeued) with its epoch of total, last test top-1 and job id, and one per
failed run with its error.
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Optional

import pandas as pd

from icp import grid

COLUMNS = ("complete", "diverged", "running", "requeued", "interrupted", "failed", "not started")


def read_records(g: grid.Grid, runs_dir: Optional[str] = None) -> dict[str, dict]:
    """run id -> its record (runs without a readable record.json are absent)."""
    base = Path(runs_dir) if runs_dir else None
    out = {}
    for rid, run in g.runs.items():
        path = (base / rid / "record.json") if base else Path(run.record)
        try:
            out[rid] = json.loads(path.read_text())
        except (OSError, ValueError):
            continue
    return out


def table(g: grid.Grid, recs: dict[str, dict], study: Optional[str] = None) -> pd.DataFrame:
    rows = []
    for name in ([study] if study else list(g.studies)):
        counts = dict.fromkeys(COLUMNS, 0)
        for rid in [r.run_id for r in g.select(name)]:
            counts[recs[rid]["status"] if rid in recs else "not started"] += 1
        rows.append({"study": name, **counts, "total": sum(counts.values())})
    return pd.DataFrame(rows)


def render(grid_path: str, runs_dir: Optional[str] = None, study: Optional[str] = None) -> str:
    g = grid.expand(grid.load(grid_path), grid_path, check_recipes=False)
    recs = read_records(g, runs_dir)
    lines = [table(g, recs, study).to_string(index=False)]
    wanted = {r.run_id for r in g.select(study)}
    for rid, rec in recs.items():
        if rid not in wanted:
            continue
        job = (rec.get("jobs") or [{}])[-1].get("job_id")
        if rec["status"] in ("running", "requeued"):
            last = ((rec.get("last") or {}).get("test") or {}).get("top1")
            top1 = f"{100 * last:.2f}%" if last is not None else "-"
            lines.append(f"{rec['status']:9s} {rid}  epoch {len(rec['epochs'])}/{rec['config']['train']['epochs']}"
                         f"  test top-1 {top1}  job {job}")
        elif rec["status"] in ("failed", "interrupted", "diverged"):
            lines.append(f"{rec['status']:9s} {rid}  job {job}: {rec.get('error')}")
    return "\n".join(lines)
