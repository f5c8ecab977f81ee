"""The ``Equal tuning`` section of a tuned study's tables (:mod:`icp.tuning`): per condition, one row per tuned
method with its default-setting result beside its tuned one, both mean ± std over the block's seeds (n), the
tuned result's difference to tuned ``ce`` and to the method's own default (paired by seed, :func:`icp.stats.paired`;
Holm's correction across the methods of the condition, one family per column), the chosen trial with its values
and validation top-1, and how many of its trials lost (failed or diverged: :data:`icp.tuning.RULE`).

It reads the study's rows of ``summary.csv`` (the trials ``<method>+trial=<i>``, the finals
``<method>+tuned=<i>``, the default runs ``<method>``) and each cell's selection record, never a test number for
the choice: the selection was written from the trials' validation top-1 before any final trained.
"""
from __future__ import annotations

import math
from typing import Optional

import pandas as pd

from icp import jsonfile, stats

TRIAL = r"\+trial=\d+"  # a tuning trial's factor in a variant: its rows are this section's, not the study tables'


def is_trial(variants: pd.Series) -> pd.Series:
    return variants.fillna("").str.contains(TRIAL, regex=True)


def _default_variant(g, cell) -> str:
    """The variant of a tuned cell's default-setting runs: its trials' variant without the trial factor."""
    from icp import grid as grid_mod

    run = g[cell.trials[0]]
    return grid_mod.variant(run.method, run.options, [f for f in run.factors if f[0] != "trial"])


def _settings_text(settings: Optional[dict]) -> str:
    if not settings:
        return "–"
    return ", ".join(f"{k.removeprefix('method.options.')}={v:g}" if isinstance(v, float) else
                     f"{k.removeprefix('method.options.')}={v}" for k, v in settings.items())


def _in_condition(frame: pd.DataFrame, condition: tuple) -> pd.Series:
    from icp.aggregate import CONDITION

    mask = pd.Series(True, index=frame.index)
    for k, v in zip(CONDITION, condition):
        mask &= frame[k].astype(str) == str(v)
    return mask


def _row_of(study_cells: pd.DataFrame, condition: tuple, variant: str) -> Optional[pd.Series]:
    rows = study_cells[(study_cells.variant == variant) & _in_condition(study_cells, condition)]
    return rows.iloc[0] if len(rows) else None


def _done(runs: pd.DataFrame, ids) -> pd.DataFrame:
    return runs[runs.run_id.isin(list(ids)) & (runs.status == "complete")]


def _delta(result: stats.Paired, p_holm: float, tex: bool) -> str:
    from icp.aggregate import _delta_text

    row = {"variant": "tuned", "baseline": "other", "delta_of": "top1", "delta": result.delta,
           "ci_low": result.ci_low, "ci_high": result.ci_high, "pairs": result.pairs, "p_value": result.p_value,
           "p_holm": p_holm, "test": result.test, "constant": result.constant}
    return _delta_text(row, tex)


def sections(study: str, study_cells: pd.DataFrame, runs: pd.DataFrame, g, tex: bool = False
             ) -> list[tuple[str, pd.DataFrame]]:
    """The section's tables, one per condition of the study's tuned cells: (title, methods × columns of text).
    ``study_cells``: the study's cells (:func:`icp.aggregate.cells`), ``runs``: its rows of ``summary.csv``,
    ``g``: the grid (its tuned cells and where their selection records are)."""
    from icp.aggregate import _cell_text, _paired

    tuned = [c for c in g.tuned if c.study == study]
    by_condition: dict[tuple, list] = {}
    for cell in tuned:
        by_condition.setdefault((cell.dataset, cell.model, cell.scenario), []).append(cell)
    out = []
    for condition, cells in by_condition.items():
        rows, tuned_done, default_done = {}, {}, {}
        for cell in cells:
            sel = jsonfile.read(g.selection(cell))
            chosen = None if sel is None else sel.get("chosen")
            default = _default_variant(g, cell)
            d_row = _row_of(study_cells, condition, default)
            finals = g.finals(cell, chosen) if chosen is not None else []
            t_row = _row_of(study_cells, condition, finals[0].variant) if finals else None
            trials = len(cell.trials)
            if sel is None:
                chosen_text, lost_text = "no selection yet", f"{trials} trials"
            else:
                lost = sum(bool(t["lost"]) for t in sel["trials"])
                lost_text = f"{lost} of {trials} lost"
                chosen_text = ("none: every trial lost" if chosen is None else
                               f"{chosen}: {_settings_text(sel['chosen_settings'])} "
                               f"(val {100 * sel['trials'][chosen]['val_top1']:.2f})")
            rows[default] = {
                "default": "–" if d_row is None else _cell_text(d_row, "top1", tex),
                "tuned": "–" if t_row is None else _cell_text(t_row, "top1", tex),
                "chosen trial: values (val top-1 %)": chosen_text, "trials": lost_text}
            default_done[default] = runs[(runs.variant == default) & (runs.status == "complete")
                                         & _in_condition(runs, condition)]
            tuned_done[default] = _done(runs, (r.run_id for r in finals))
        base = "ce" if "ce" in tuned_done else None
        vs_ce = {v: _paired(d, tuned_done[base], "top1") for v, d in tuned_done.items() if base and v != base}
        vs_default = {v: _paired(d, default_done[v], "top1") for v, d in tuned_done.items()}
        for name, results in ((f"Δ tuned − tuned {base}", vs_ce), ("Δ tuned − default", vs_default)):
            holm = dict(zip(results, stats.holm([r.p_value for r in results.values()])))
            for v in rows:
                rows[v][name] = _delta(results[v], holm[v], tex) if v in results else "–"
        table = pd.DataFrame.from_dict(rows, orient="index")
        order = ["default", "tuned", *(c for c in table.columns if c.startswith("Δ")),
                 "chosen trial: values (val top-1 %)", "trials"]
        table = table[[c for c in order if c in table.columns]]
        name = " / ".join(map(str, condition))
        seeds = sorted({s for c in cells for s in c.seeds})
        title = (f"Equal tuning, {name}: test top-1 (%) at the last epoch of each method at its paper's default "
                 f"setting and tuned ({len(cells[0].trials)} trials per method, trial 0 its default, the others "
                 f"quasi-random with the same lr and wd for every method, at seed "
                 f"{g[cells[0].trials[0]].seed}, chosen on validation top-1, then trained at seeds "
                 f"{', '.join(map(str, seeds))}): mean ± std over seeds (n); the tuned result's difference to tuned "
                 f"{base or 'ce (not tuned here)'} and to its own default in percentage points, seeds paired "
                 "(95 % t interval; Holm across the methods, per column); the chosen trial's values; trials "
                 "lost (failed or diverged)")
        out.append((title, table))
    return out


def expected_best(values, k: int) -> float:
    """The expected best of ``k`` trials drawn at random without replacement from these ``n`` trials' values:
    with the values sorted ascending, v_(1) ≤ … ≤ v_(n), E[max of k] = Σ_{i=k}^{n} v_(i) C(i−1, k−1) / C(n, k)
    (the i-th smallest is the maximum of C(i−1, k−1) of the C(n, k) subsets). At k = n it is the best trial; at
    k = 1 the mean: the tuning curve shows whether more trials would still have paid."""
    v = sorted(float(x) for x in values)
    n = len(v)
    if not 1 <= k <= n:
        raise ValueError(f"k must be between 1 and the {n} trials, got {k}")
    return sum(v[i - 1] * math.comb(i - 1, k - 1) for i in range(k, n + 1)) / math.comb(n, k)
