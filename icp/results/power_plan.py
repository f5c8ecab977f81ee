"""``icp grid --power``: per study and condition of a grid, the size of its primary family, the grid's seeds, the SD
of paired differences (from the grid's records, else its declared pilot), the smallest difference the family
detects and the seeds a declared target needs (:func:`plan`), printed by :func:`plan_text`. The statistics are
:mod:`icp.power`'s; the baseline each variant is compared with is :data:`icp.results.frames.BASELINE`'s.
"""
from __future__ import annotations

import math
from pathlib import Path

import pandas as pd

from icp import power
from icp.results.frames import BASELINE, kind_of


def plan(grid, runs=None, base_dir: str | Path = "."):
    """``icp grid --power``: per study and condition, the primary family's size, the grid's seeds, the SD of
    paired differences used (and its source), the detectable difference, and the seeds a declared target needs.
    ``runs``: :func:`icp.results.frames.runs_frame` of the grid (records give the SD where they can)."""
    analysis = grid.analysis or {}
    level, wanted = power.settings(analysis)
    rows = []
    for study, ids in grid.studies.items():
        study_runs = [grid.runs[r] for r in ids if "+trial=" not in grid.runs[r].variant]
        by_condition: dict[tuple, list] = {}
        for r in study_runs:
            by_condition.setdefault((r.dataset, r.model, r.scenario), []).append(r)
        pairs = [(r.variant, BASELINE[kind_of(r.model)][0]) for r in study_runs]
        comparisons = power.family(analysis, study, pairs)
        for cond, members in by_condition.items():
            seeds = lambda v: {r.seed for r in members if r.variant == v}  # noqa: E731
            n = max((len(seeds(c.variant) & seeds(c.against)) for c in comparisons), default=0)
            kind = kind_of(cond[1])
            diffs = []
            if runs is not None and len(runs):
                mine = runs[runs.run_id.isin({r.run_id for r in members})]
                diffs = power.paired_differences(mine, comparisons, BASELINE[kind][1]).get(cond, [])
            top1 = BASELINE[kind][1] == "top1"  # targets and pilots are top-1 differences
            sd = power.spread(analysis if top1 else {}, cond, diffs, comparisons, base_dir)
            goal = power.target(analysis, cond[0], cond[1]) if top1 else None
            m = sum(1 for c in comparisons if {c.variant, c.against} <= {r.variant for r in members})
            rows.append({"study": study, "condition": "/".join(cond), "family": m, "seeds": n,
                         "sd": math.nan if sd is None else sd.sd, "sd_source": "" if sd is None else sd.source,
                         "detectable": (math.nan if not m else math.inf if power.min_p(n) > level / m
                                        else math.nan if sd is None else power.detectable(n, sd.sd, m, level, wanted)),
                         "target": math.nan if goal is None else goal,
                         "seeds_for_target": (None if not m or goal is None or sd is None or sd.sd != sd.sd
                                              else power.seeds_for(goal, sd.sd, m, level, wanted))})
    return pd.DataFrame(rows)


def plan_text(table, level: float = power.LEVEL, wanted: float = power.POWER) -> str:
    """:func:`plan` as ``icp grid --power`` prints it: a row per condition with a primary family, the SDs'
    sources as numbered notes, and the studies without a family named on one line."""
    if table.empty:
        return "(no runs)"
    fmt = lambda v: "–" if v != v else ("never" if v == math.inf else f"{v:.2f}")  # noqa: E731
    compared = table[table.family > 0]
    sources = list(dict.fromkeys(s for s in compared.sd_source if s))
    head = ["study", "condition", "family", "seeds", "SD (pp)", "detectable (pp)", "target (pp)", "seeds for target",
            "SD from"]
    body = [[r.study, r.condition, str(r.family), str(r.seeds), fmt(r.sd), fmt(r.detectable), fmt(r.target),
             "–" if r.seeds_for_target is None or r.seeds_for_target != r.seeds_for_target
             else str(int(r.seeds_for_target)), f"[{sources.index(r.sd_source) + 1}]" if r.sd_source else "–"]
            for r in compared.itertuples()]
    widths = [max(len(x) for x in col) for col in zip(head, *body)]
    lines = ["  ".join(x.ljust(w) for x, w in zip(line, widths)).rstrip() for line in [head, *body]]
    lines += [f"[{i}] {s}" for i, s in enumerate(sources, 1)]
    lines.append(f"detectable: the smallest true mean difference found with {wanted * 100:g} % power by a paired "
                 f"t-test at the family's Holm level ({level:g} / family at its first step), at the grid's seeds")
    without = [s for s, fam in table.groupby("study", sort=False).family if not fam.any()]
    if without:
        lines.append(f"no primary comparisons (estimates only): {', '.join(without)}")
    return "\n".join(lines)
