"""The ``Equal tuning`` section of a tuned study's tables (:mod:`icp.tuning`): per condition, one row per tuned
method with its default-setting result beside its tuned one, both mean ± std over the block's seeds (n), the
tuned result's difference to tuned ``ce`` and to the method's own default (paired by seed, :func:`icp.stats.paired`;
Holm's correction across the methods of the condition, one family per column), the chosen trial with its values
and validation top-1, its tuning luck (the bootstrap expected best of its k trials' validation top-1 and the sd of
that best, :func:`icp.stats.best_of`, beside the chosen value: how much of the chosen trial's margin is the max of
k draws), how many of its trials lost (failed or diverged: :data:`icp.tuning.RULE`), and what tuning cost: the
trials' and the finals' training compute in runs of ``ce`` of the recipe (:func:`ce_runs`: recorded, else
declared). The chosen trial's own test top-1 (at the tuning seed) is never shown as a result: it is the best of k
draws, which is why the finals train at seeds disjoint from the trials'.

It reads the study's rows of ``summary.csv`` (the trials ``<method>+trial=<i>``, the finals
``<method>+tuned=<i>``, the default runs ``<method>``) and each cell's selection record, never a test number for
the choice: the selection was written from the trials' validation top-1 before any final trained.
"""
from __future__ import annotations

import math
from typing import Optional

import pandas as pd

from icp import jsonfile, naming, stats
from icp.matching import matched_epochs
from icp.results.cells import paired
from icp.results.frames import CONDITION
from icp.results.text import cell_text, delta_text, number

TRIAL = r"\+trial=\d+"  # a tuning trial's factor in a variant: its rows are this section's, not the study tables'

LUCK = "E[best of k] val (sd)"  # the bootstrap best of k trials: tuning luck (icp.stats.best_of)
COMPUTE = "compute (ce runs): trials + finals"  # the tuning's training FLOPs (ce_runs)


def is_trial(variants: pd.Series) -> pd.Series:
    return variants.fillna("").str.contains(TRIAL, regex=True)


def _default_variant(g, cell) -> str:
    """The variant of a tuned cell's default-setting runs: its trials' variant without the trial factor."""
    run = g[cell.trials[0]]
    return naming.variant(run.method, run.options, [f for f in run.factors if f[0] != "trial"])


def _settings_text(settings: Optional[dict]) -> str:
    if not settings:
        return "–"
    return ", ".join(f"{k.removeprefix('method.options.')}={v:g}" if isinstance(v, float) else
                     f"{k.removeprefix('method.options.')}={v}" for k, v in settings.items())


def _in_condition(frame: pd.DataFrame, condition: tuple) -> pd.Series:
    mask = pd.Series(True, index=frame.index)
    for k, v in zip(CONDITION, condition):
        mask &= frame[k].astype(str) == str(v)
    return mask


def _row_of(study_cells: pd.DataFrame, condition: tuple, variant: str) -> Optional[pd.Series]:
    rows = study_cells[(study_cells.variant == variant) & _in_condition(study_cells, condition)]
    return rows.iloc[0] if len(rows) else None


def _done(runs: pd.DataFrame, ids) -> pd.DataFrame:
    return runs[runs.run_id.isin(list(ids)) & (runs.status == "complete")]


def _luck_text(sel: Optional[dict]) -> str:
    """The bootstrap E[best of k] of the cell's k trials' validation top-1 (lost ones at 0 %) and its sd
    (:func:`icp.stats.best_of`), and how far the chosen trial's value lies above it: its tuning luck."""
    if sel is None or not sel.get("trials"):
        return "–"
    values = [100 * (t["val_top1"] if t.get("val_top1") is not None else 0.0) for t in sel["trials"]]
    mean, sd = stats.best_of(values, len(values), replace=True)
    chosen = sel.get("chosen")
    return f"{mean:.2f} ({sd:.2f})" + (f", chosen {values[chosen] - mean:+.2f}" if chosen is not None else "")


def ce_runs(g, runs: pd.DataFrame, ids) -> tuple[float, int]:
    """The training compute of the runs ``ids`` in runs of ``ce`` of the same recipe, and how many of them it
    declares rather than reads: a run's recorded ``compute_ce_epochs`` over its epochs where its row has one, else
    its declared cost (:func:`icp.matching.matched_epochs`: :func:`icp.methods.options.training_cost` over the epochs
    of its resolved config). A failed or diverged run counts its whole budget, as it was given. NaN where neither
    is known."""
    by_id = runs.drop_duplicates("run_id").set_index("run_id") if "run_id" in runs else pd.DataFrame()
    total, declared = 0.0, 0
    for rid in ids:
        row = by_id.loc[rid] if rid in by_id.index else None
        c = row.get("compute_ce_epochs") if row is not None else None
        e = row.get("epochs") if row is not None else None
        if c is not None and e is not None and c == c and e == e and float(e) > 0:
            total += float(c) / float(e)
            continue
        try:
            total += matched_epochs(g[rid])[1]
        except Exception:  # noqa: BLE001  (a method or recipe this version cannot price)
            return math.nan, declared
        declared += 1
    return total, declared


def _compute_text(g, runs: pd.DataFrame, cell, finals) -> str:
    trials, d_trials = ce_runs(g, runs, cell.trials)
    text = number(trials, ".1f")
    if finals:
        done, d_finals = ce_runs(g, runs, [r.run_id for r in finals])
        text += " + " + number(done, ".1f")
        d_trials += d_finals
    else:
        text += " + –"
    return text + (f" ({d_trials} declared)" if d_trials else "")


def _delta(result: stats.Paired, p_holm: float, tex: bool) -> str:
    """A paired result as the tables write a difference (:func:`icp.results.text.delta_text`)."""
    row = {"variant": "tuned", "baseline": "other", "delta_of": "top1", "delta": result.delta,
           "ci_low": result.ci_low, "ci_high": result.ci_high, "pairs": result.pairs, "p_value": result.p_value,
           "p_holm": p_holm, "test": result.test, "constant": result.constant}
    return delta_text(row, tex)


def sections(study: str, study_cells: pd.DataFrame, runs: pd.DataFrame, g, tex: bool = False
             ) -> list[tuple[str, pd.DataFrame]]:
    """The section's tables, one per condition of the study's tuned cells: (title, methods × columns of text).
    ``study_cells``: the study's cells (:func:`icp.results.cells.cells`), ``runs``: its rows of ``summary.csv``,
    ``g``: the grid (its tuned cells and where their selection records are)."""
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
                "default": "–" if d_row is None else cell_text(d_row, "top1", tex),
                "tuned": "–" if t_row is None else cell_text(t_row, "top1", tex),
                "chosen trial: values (val top-1 %)": chosen_text, LUCK: _luck_text(sel), "trials": lost_text,
                COMPUTE: _compute_text(g, runs, cell, finals)}
            default_done[default] = runs[(runs.variant == default) & (runs.status == "complete")
                                         & _in_condition(runs, condition)]
            tuned_done[default] = _done(runs, (r.run_id for r in finals))
        base = "ce" if "ce" in tuned_done else None
        vs_ce = {v: paired(d, tuned_done[base], "top1") for v, d in tuned_done.items() if base and v != base}
        vs_default = {v: paired(d, default_done[v], "top1") for v, d in tuned_done.items()}
        for name, results in ((f"Δ tuned − tuned {base}", vs_ce), ("Δ tuned − default", vs_default)):
            holm = dict(zip(results, stats.holm([r.p_value for r in results.values()])))
            for v in rows:
                rows[v][name] = _delta(results[v], holm[v], tex) if v in results else "–"
        table = pd.DataFrame.from_dict(rows, orient="index")
        order = ["default", "tuned", *(c for c in table.columns if c.startswith("Δ")),
                 "chosen trial: values (val top-1 %)", LUCK, "trials", COMPUTE]
        table = table[[c for c in order if c in table.columns]]
        name = " / ".join(map(str, condition))
        seeds = sorted({s for c in cells for s in c.seeds})
        title = (f"Equal tuning, {name}: test top-1 (%) at the last epoch of each method at its paper's default "
                 f"setting and tuned ({len(cells[0].trials)} trials per method, trial 0 its default, the others "
                 f"quasi-random with the same lr and wd for every method, at seed "
                 f"{g[cells[0].trials[0]].seed}, chosen on validation top-1, then trained at seeds "
                 f"{', '.join(map(str, seeds))}): mean ± std over seeds (n); the tuned result's difference to tuned "
                 f"{base or 'ce (not tuned here)'} and to its own default in percentage points, seeds paired "
                 "(95 % t interval; Holm across the methods, per column); the chosen trial's values and "
                 f"validation top-1 (its own test top-1 at seed {g[cells[0].trials[0]].seed} is no result: it is the "
                 "best of k draws, which is why the finals train at other seeds); E[best of k] val (sd): the "
                 "expected best validation top-1 of k trials resampled with replacement from the method's k "
                 "trials (lost ones at 0 %), exact (Dodge et al. 2019), its sd, and how far the chosen trial lies "
                 "above it: tuning luck, not the method; trials lost (failed or diverged); compute: the trials' "
                 "and the finals' training FLOPs in runs of ce of the recipe (each run's recorded "
                 "compute_ce_epochs over its epochs; its declared cost, icp.methods.options.training_cost, where "
                 "it has no record yet, counted as declared), every trial at its whole budget, lost ones too")
        out.append((title, table))
    return out

