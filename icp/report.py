"""Aggregate run records (``record.json``, :mod:`icp.records`) into a comparison table: mean ± std over seeds.

Tables are built from records only. Runs are grouped by everything that defines a condition (dataset,
scenario, model, method with its options, epochs) except the seed. The table says how many seeds each row
has. Only ``complete`` runs count, unless ``include_incomplete`` is set; the ``status`` column then shows the
mix. ``icp report DIR...`` prints it as Markdown.
"""
from __future__ import annotations

import json
from pathlib import Path
from types import SimpleNamespace
from typing import Iterable

import pandas as pd

from icp import records

METRICS = ("top1", "macro_f1", "nll", "ece")
# options that name a per-run input rather than a condition (AI-KD's teacher is the ce run of the same seed)
PER_RUN_OPTIONS = ("teacher",)


def find_records(paths: Iterable[str | Path]) -> list[Path]:
    found = []
    for p in map(Path, paths):
        found += sorted(p.rglob("*record.json")) if p.is_dir() else [p]  # record.json, <run>.record.json
    return found


def runs_table(paths: Iterable[str | Path]) -> pd.DataFrame:
    """One row per run: its condition, seed, status, final test metrics and throughput."""
    rows = []
    for path in find_records(paths):
        r = records.read(path)
        last = (r.get("last") or {}).get("test") or {}
        opts = {k: v for k, v in (r.get("method_options") or {}).items() if k not in PER_RUN_OPTIONS}
        scenario = SimpleNamespace(scenario=SimpleNamespace(**r["config"]["scenario"]))
        rows.append({"dataset": r["dataset"], "scenario": records.scenario_tag(scenario), "model": r["model"],
                     "method": r["method"], "options": json.dumps(opts, sort_keys=True),
                     "epochs": r["config"]["train"]["epochs"], "seed": r["seed"], "status": r["status"],
                     "epochs_done": len(r["epochs"]), "images_per_s": r.get("images_per_s"),
                     "wall_time_s": r.get("wall_time_s"), "path": str(path.parent),
                     **{m: last.get(m) for m in METRICS}})
    return pd.DataFrame(rows)


def summary(paths: Iterable[str | Path], include_incomplete: bool = False) -> pd.DataFrame:
    """Mean and standard deviation (ddof 1) over seeds of each condition's final test metrics."""
    runs = runs_table(paths)
    if runs.empty:
        return runs
    if not include_incomplete:
        runs = runs[runs.status == "complete"]
    keys = ["dataset", "scenario", "model", "method", "options", "epochs"]
    g = runs.groupby(keys, sort=False)
    out = g.agg(seeds=("seed", "nunique"), **{f"{m}_mean": (m, "mean") for m in METRICS},
                **{f"{m}_std": (m, "std") for m in METRICS}, images_per_s=("images_per_s", "mean"),
                wall_time_s=("wall_time_s", "mean")).reset_index()
    return out


def markdown(table: pd.DataFrame, metrics: Iterable[str] = ("top1", "macro_f1", "ece")) -> str:
    """A Markdown table: one row per condition, ``mean ± std`` cells (in % for top1/macro_f1/ece)."""
    if table.empty:
        return "(no complete runs)"
    lines = ["| dataset | model | method | epochs | seeds | " + " | ".join(metrics) + " |",
             "|---|---|---|---|---|" + "---|" * len(list(metrics))]
    for _, row in table.iterrows():
        cells = []
        for m in metrics:
            scale = 1 if m == "nll" else 100
            mean, std = row[f"{m}_mean"] * scale, row[f"{m}_std"] * scale
            cells.append(f"{mean:.2f} ± {std:.2f}" if std == std else f"{mean:.2f}")
        lines.append(f"| {row.dataset} | {row.model} | {row.method} | {row.epochs} | {row.seeds} | "
                     + " | ".join(cells) + " |")
    return "\n".join(lines)
