"""The verdict: which method wins, one verdict per study (``main``, ``noisy``, ``fewshot`` and, when the grid has
it, ``tuned``) over its independent **units**, read from ``summary.csv`` like every table (torch-free; scipy and
scikit-posthocs are imported on use).

A *unit* is one dataset × model of a study (``noisy: fashion-mnist/resnet20``); a *setting* one of its conditions
(``sym0.4``). A study's settings in a unit (its noise levels, shot counts) share the data and the network, so they
are not independent: counting each as a replicate would make 10 noise levels on 2 datasets look like 20 tasks. So
the settings are averaged within a unit first and every statistic below runs over units. ``tuned`` is a study of its
own, never pooled with ``main`` (its clean condition is ``main``'s too): there a method's setting holds its tuned
finals (``<method>+tuned=<i>``, named by the method) against tuned ``ce``. Tuning trials, the generative study and
anything but a classifier are left out. The metric is the tables' headline, last-epoch test top-1.

* A method's **difference to ce in a unit, per seed**: its top-1 minus ce's at that seed in each setting of the
  unit both have, averaged over those settings (:func:`unit_differences`). It is reported two ways. *Kept per task*:
  in percentage points, the IQM over all (unit, seed) differences and, with several units, each unit's mean over
  seeds in a table of its own. *Normalised per task* (the headline, which sorts the methods and picks the best other): the
  **relative error reduction** Δ / (100 − ce's top-1), the share of ce's error the method removes in that unit.
  A point of top-1 means more where ce errs on 5 % than on 40 %; rliable (Agarwal et al. 2021, "Deep RL at the
  edge of the statistical precipice") aggregates across tasks only scores normalised per task for that reason.
* The **IQM** is the interquartile mean of a method's (unit, seed) values pooled over units
  (``scipy.stats.trim_mean(x, 0.25)``, rliable's), with a **stratified bootstrap** 95 % percentile interval
  (:func:`icp.stats.stratified_bootstrap`: units are strata, each resamples its own seeds; :data:`BOOTSTRAP_REPS`
  replicates from :data:`BOOTSTRAP_SEED`, so every machine prints the same; it is over seeds given these units,
  as rliable's, not over units). Where a unit has fewer than
  :data:`MIN_SEEDS` seed pairs there is no interval ("too few seeds"): with 2 seeds a stratum has 3 distinct
  resamples and the percentile interval covers far less than 95 %.
* The **probability of improvement** P(X > Y) (rliable): in each unit both have, the Mann–Whitney share of
  (x seed, y seed) pairs of their unit means (over the settings both have) where x is higher, ties 0.5; averaged
  over those units (:func:`icp.stats.probability_of_improvement`). Given over ``ce`` and over the best other
  method.
* **Ranked** are the methods measured in every unit of the study (``ce`` among them); one measured in fewer is
  listed apart ("measured on k of N units: not ranked") and is nobody's best other method. The **average rank**
  (1 = best, ties averaged) is of each unit's mean top-1 over the settings all ranked methods share there and their
  seeds. The **critical difference** (Nemenyi after Friedman, Demšar 2006; the ``critical_difference`` figure,
  drawn by scikit-posthocs) and Friedman's p are given only with at least :data:`MIN_UNITS` units: with fewer the
  test has almost no power and its asymptotic null is off, and the verdict says so instead.
* A **diverged** run is a loss, never missing: a method with a diverged run in a setting takes the worst possible
  top-1 (:data:`WORST`, 0 %) at every seed it ran there. A run missing, failed or in flight is missing.
* The **controls** (``icp+steps=0``, the α-only control; ``ce+budget=...``, FLOP-matched ce) are shown with their
  differences to ce and P(improvement), but are neither ranked nor anyone's best other method.

:func:`write` makes ``<results_dir>/tables/verdict.csv`` (every number, a ``study`` column) and ``verdict.md`` (a
section per study; ``icp tables``).
"""
from __future__ import annotations

import math
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

import numpy as np
import pandas as pd

from icp import atomic
from icp.stats import (average_ranks, critical_difference, iqm, probability_of_improvement, snap,
                       stratified_bootstrap)
from icp.naming import variant_label
from icp.results.frames import CONDITION, kind_of, study_runs
from icp.results.render import markdown_table
from icp.results.text import interval_text, number, p_text

STUDIES = ("main", "noisy", "fewshot", "tuned")
BASELINE = "ce"
METRIC = "top1"
WORST = 0.0  # top-1 of a method in a setting where it diverged: the worst possible
BOOTSTRAP_REPS = 10_000
BOOTSTRAP_SEED = 0
CONFIDENCE = 0.95
ALPHA = 0.05  # Friedman's and the Nemenyi test's level (the CD diagram's bars)
MIN_UNITS = 5  # independent units needed for Friedman's test and the Nemenyi critical difference
MIN_SEEDS = 3  # seed pairs a unit needs for a bootstrap interval
TUNED = re.compile(r"\+tuned=\d+$")
TRIAL = re.compile(r"\+trial=\d+")


def applies(studies: Sequence[str]) -> bool:
    """Whether a grid with these studies has a verdict (one of :data:`STUDIES` but ``tuned`` alone)."""
    return any(s in studies for s in STUDIES if s != "tuned")


def is_control(variant: str) -> bool:
    """A control variant: the α-only control (``icp+steps=0`` and kin) or a FLOP-matched ce (``+budget=``)."""
    return "+budget=" in variant or "control" in variant_label(variant)


# ------------------------------------------------------------------------------------------ data
def setting_values(runs: pd.DataFrame, studies: Sequence[str] = STUDIES) -> pd.DataFrame:
    """One row per (study, setting, method, seed): ``setting`` (``study: dataset/model/scenario``), ``study``,
    ``unit`` (``dataset/model``), the condition, ``method`` (the variant; a tuned final by its method), ``seed``,
    ``value`` (last-epoch test top-1, or :data:`WORST` at every seed of a setting where the method diverged) and
    ``diverged``. Runs neither complete nor diverged are left out."""
    frames = []
    for study in studies:
        if runs.empty or "studies" not in runs:
            break
        rows = study_runs(runs, study)
        rows = rows[rows.model.map(kind_of) == "classifier"]
        rows = rows[~rows.variant.fillna("").str.contains(TRIAL)]
        tuned = rows.variant.fillna("").str.contains(TUNED)
        rows = rows[tuned] if study == "tuned" else rows[~tuned]
        rows = rows[rows.status.isin(["complete", "diverged"])]
        if rows.empty:
            continue
        frames.append(pd.DataFrame({
            "setting": [f"{study}: {d}/{m}/{s}" for d, m, s in zip(rows.dataset, rows.model, rows.scenario)],
            "study": study, "unit": [f"{d}/{m}" for d, m in zip(rows.dataset, rows.model)],
            **{k: rows[k].astype(str).to_numpy() for k in CONDITION},
            "method": rows.variant.str.replace(TUNED, "", regex=True).to_numpy(),
            "seed": rows.seed.astype(int).to_numpy(), "status": rows.status.to_numpy(),
            "value": pd.to_numeric(rows[METRIC], errors="coerce").to_numpy()}))
    columns = ["setting", "study", "unit", *CONDITION, "method", "seed", "value", "diverged"]
    if not frames:
        return pd.DataFrame(columns=columns)
    out = pd.concat(frames, ignore_index=True)
    out["diverged"] = out.groupby(["setting", "method"]).status.transform(lambda s: (s == "diverged").any())
    out.loc[out.diverged, "value"] = WORST
    out = out.dropna(subset=["value"]).drop_duplicates(["setting", "method", "seed"])
    return out[columns].reset_index(drop=True)


def _shared(values: pd.DataFrame, unit: str, methods: Sequence[str]) -> pd.DataFrame:
    """The rows of ``methods`` in ``unit`` restricted to the settings that all of them have there."""
    part = values[(values.unit == unit) & values.method.isin(methods)]
    count = part.groupby("setting").method.nunique()
    return part[part.setting.isin(count.index[count == len(set(methods))])]


def unit_means(values: pd.DataFrame, unit: str, methods: Sequence[str]) -> dict[str, pd.Series]:
    """Per method its top-1 per seed in ``unit``: the mean over the settings all ``methods`` have there."""
    part = _shared(values, unit, methods)
    return {m: g.groupby("seed").value.mean() for m, g in part.groupby("method", sort=False)}


def unit_differences(values: pd.DataFrame, unit: str, method: str) -> pd.DataFrame:
    """Per seed (index) of ``unit`` ``delta``, the method's top-1 minus ce's averaged over the settings both have
    at that seed, and ``relative``, that delta over ce's error there (1 − ce's mean top-1 over those settings)."""
    part = _shared(values, unit, [method, BASELINE])
    wide = part.pivot_table(index=["setting", "seed"], columns="method", values="value").dropna()
    if wide.empty or method == BASELINE:
        return pd.DataFrame(columns=["delta", "relative"], dtype=float)
    per = (wide[method] - wide[BASELINE]).groupby(level="seed").mean().rename("delta").to_frame()
    error = 1 - wide[BASELINE].groupby(level="seed").mean()
    per["delta"] = snap(per.delta)
    per["relative"] = np.where(error > 0, per.delta / error.where(error > 0, 1.0), math.nan)
    return per


# ------------------------------------------------------------------------------------------ the verdict
@dataclass
class Verdict:
    """One study's verdict: ``table`` (one row per method), its units, the ranked methods' unit means (units ×
    methods, over the settings they share and the seeds) and, with :data:`MIN_UNITS` units, the CD and Friedman p."""

    study: str
    table: pd.DataFrame
    units: list = field(default_factory=list)
    ranked_methods: list = field(default_factory=list)
    cell_means: pd.DataFrame = field(default_factory=pd.DataFrame)
    per_unit: pd.DataFrame = field(default_factory=pd.DataFrame)  # methods × units, mean Δ top-1 vs ce (pp)
    cd: float = math.nan
    friedman_p: float = math.nan
    diverged: list = field(default_factory=list)  # (setting, method) pairs counted as losses

    @property
    def ranked_units(self) -> list:
        return list(self.cell_means.index)

    @property
    def has_cd(self) -> bool:
        return self.cd == self.cd

    def why_no_cd(self) -> str:
        """Why there is no critical-difference diagram ('' where there is one)."""
        if self.has_cd:
            return ""
        n = len(self.ranked_units)
        if len(self.ranked_methods) < 2:
            return f"no critical-difference diagram: fewer than two methods measured on every unit of {self.study}"
        units = ", ".join(self.ranked_units)
        return (f"no critical-difference diagram: {n} independent unit{'s' * (n != 1)} ({units}); "
                f"Friedman/Nemenyi need ≥ {MIN_UNITS}")


def _method_row(values: pd.DataFrame, units: list, m: str, reps: int, seed: int) -> dict:
    diffs = {u: unit_differences(values, u, m) for u in units}
    diffs = {u: d for u, d in diffs.items() if len(d)}
    pooled = pd.concat(diffs.values()) if diffs else pd.DataFrame(columns=["delta", "relative"], dtype=float)
    own = values[values.method == m][["unit", "seed"]].drop_duplicates()
    few = bool(diffs) and min(len(d) for d in diffs.values()) < MIN_SEEDS
    row = {"method": m, "control": is_control(m), "units": own.unit.nunique(), "units_total": len(units),
           "units_vs_ce": len(diffs), "seed_pairs": len(own) if m == BASELINE else len(pooled),
           "min_seeds": min((len(d) for d in diffs.values()), default=0), "too_few_seeds": few}
    for name, col in (("iqm_relative", "relative"), ("iqm_delta", "delta")):  # both in % / pp
        x = pooled[col].dropna().to_numpy(dtype=float)
        row[name] = float(iqm(x)) * 100 if len(x) else math.nan
        interval = (math.nan, math.nan) if few or not len(x) or m == BASELINE else stratified_bootstrap(
            [d[col].dropna().to_numpy() for d in diffs.values()], reps=reps, seed=seed, confidence=CONFIDENCE)
        row[f"{name}_low"], row[f"{name}_high"] = interval[0] * 100, interval[1] * 100
    pairs = [unit_means(values, u, [m, BASELINE]) for u in units]
    pairs = [p for p in pairs if m in p and BASELINE in p]
    row["p_improve_ce"] = math.nan if m == BASELINE else probability_of_improvement(
        [p[m] for p in pairs], [p[BASELINE] for p in pairs])
    row["diverged_settings"] = int(values[(values.method == m) & values.diverged].setting.nunique())
    row["per_unit"] = {u: float(d.delta.mean()) * 100 for u, d in diffs.items()}
    return row


def _ranks(values: pd.DataFrame, units: list, ranked: list) -> tuple[pd.DataFrame, pd.Series, float, float]:
    """The ranked methods' unit means (units where they share a setting), their average ranks, CD and Friedman p."""
    if len(ranked) < 2:
        return pd.DataFrame(), pd.Series(dtype=float), math.nan, math.nan
    means = {u: {m: s.mean() for m, s in unit_means(values, u, ranked).items()} for u in units}
    block = pd.DataFrame.from_dict({u: r for u, r in means.items() if len(r) == len(ranked)}, orient="index",
                                   columns=ranked)
    if block.empty:
        return block, pd.Series(dtype=float), math.nan, math.nan
    ranks = average_ranks(block)
    cd = friedman = math.nan
    if len(block) >= MIN_UNITS:
        cd = critical_difference(len(ranked), len(block), ALPHA)
        if len(ranked) >= 3:
            from scipy import stats

            with np.errstate(all="ignore"):
                friedman = float(stats.friedmanchisquare(*snap(block.to_numpy(dtype=float)).T).pvalue)
    return block, ranks, cd, friedman


def compute_study(values: pd.DataFrame, study: str, reps: int = BOOTSTRAP_REPS,
                  seed: int = BOOTSTRAP_SEED) -> Verdict:
    """The :class:`Verdict` of one study from its rows of :func:`setting_values`."""
    units = list(dict.fromkeys(values.unit))
    methods = list(dict.fromkeys(values.method))
    if BASELINE in methods:  # the baseline first, the rest in the grid's order
        methods = [BASELINE, *(m for m in methods if m != BASELINE)]
    rows = [_method_row(values, units, m, reps, seed) for m in methods]
    per_unit = pd.DataFrame({r["method"]: r.pop("per_unit") for r in rows}).T.reindex(columns=units)
    table = pd.DataFrame(rows)
    table["ranked"] = ~table.control & (table.units == len(units))
    table.loc[table.method == BASELINE, ["iqm_relative", "iqm_delta"]] = 0.0  # ce against itself
    ranked = table.method[table.ranked].tolist()
    block, ranks, cd, friedman = _ranks(values, units, ranked)
    table["avg_rank"] = table.method.map(ranks).astype(float)
    # the best other method: the ranked one with the highest normalised IQM difference to ce (ce's own is 0)
    contenders = table[table.ranked & table.iqm_relative.notna()].sort_values(
        "iqm_relative", ascending=False, kind="stable").method.tolist()
    best, p_best = [], []
    for m in table.method:
        other = next((o for o in contenders if o != m), None)
        pairs = [unit_means(values, u, [m, other]) for u in units] if other else []
        pairs = [p for p in pairs if m in p and other in p]
        best.append(other if pairs else "")
        p_best.append(probability_of_improvement([p[m] for p in pairs], [p[other] for p in pairs]))
    table["best_other"], table["p_improve_best"] = best, p_best
    table["group"] = np.where(table.ranked, 0, np.where(table.control, 2, 1))  # ranked, measured on fewer, controls
    table = table.sort_values(["group", "iqm_relative", "method"], ascending=[True, False, True], kind="stable",
                              na_position="last").drop(columns="group").reset_index(drop=True)
    diverged = sorted(set(zip(values.setting[values.diverged], values.method[values.diverged])))
    return Verdict(study, table, units, ranked if len(block) else [], block, per_unit.reindex(table.method), cd,
                   friedman, diverged)


def compute(runs: pd.DataFrame, studies: Sequence[str] = STUDIES, reps: int = BOOTSTRAP_REPS,
            seed: int = BOOTSTRAP_SEED) -> dict[str, Verdict]:
    """Per study of ``studies`` with a complete classifier run, its :class:`Verdict` (rows of ``summary.csv``)."""
    values = setting_values(runs, studies)
    return {s: compute_study(values[values.study == s], s, reps, seed) for s in studies if (values.study == s).any()}


def nemenyi(verdict: Verdict) -> pd.DataFrame:
    """The Nemenyi p-values (after Friedman's) between the ranked methods over the units
    (``scikit_posthocs.posthoc_nemenyi_friedman``)."""
    import scikit_posthocs as sp

    block = verdict.cell_means[verdict.ranked_methods]
    return sp.posthoc_nemenyi_friedman(pd.DataFrame(-snap(block.to_numpy(dtype=float)), columns=block.columns))


# ------------------------------------------------------------------------------------------ writing
def _interval(r: pd.Series, name: str, unit: str) -> str:
    """A method's IQM difference ``name`` with its bootstrap interval (:func:`icp.results.text.interval_text`)."""
    if r.method == BASELINE:
        return "0 (the baseline)"
    return interval_text(r[name], r[f"{name}_low"], r[f"{name}_high"], unit, bool(r.too_few_seeds))


INTRO = ("Last-epoch test top-1, one verdict per study over its independent units (a unit: one dataset × model; a "
         "study's settings in a unit, e.g. its noise levels or shot counts, are averaged first, per method and "
         "seed; `tuned` is its own study, never pooled with `main`). Δ: a method's top-1 minus ce's, paired by "
         "seed in each setting and averaged over the unit's settings both have. Normalised per task (the headline, "
         "which orders the methods): the relative error reduction Δ / (100 − ce's top-1) in each unit; kept per "
         "task: Δ in percentage points (with several units, per unit in a table of its own). IQM: the "
         "interquartile mean over all (unit, seed) values; its interval: a stratified bootstrap (units as strata, "
         f"seeds resampled within; {BOOTSTRAP_REPS:,} replicates, seed {BOOTSTRAP_SEED}), none where a unit has "
         f"fewer than {MIN_SEEDS} seeds (too few seeds). P(improvement): P(X > Y) over the seeds of each unit "
         "both have, ties 0.5, averaged over those units (Agarwal et al. 2021). Ranked are the methods measured on "
         "every unit of the study; the best other method is the ranked one with the highest normalised IQM. A "
         "method with a diverged run in a setting takes 0 % top-1 at every seed there: a loss, not missing. The "
         "controls are not ranked.")


def _section(v: Verdict) -> list[str]:
    n, k = len(v.units), len(v.ranked_methods)
    nr = len(v.ranked_units)
    rank_head = f"average rank (of {k}, over {nr} unit{'s' * (nr != 1)})" if k else "average rank"
    head = ["method", "units (seed pairs with ce)", "IQM relative error reduction vs ce [95 % stratified bootstrap]",
            "IQM Δ top-1 vs ce (pp) [95 %]", "P(improvement) over ce", "P(improvement) over the best other method",
            rank_head]
    rows = []
    for _, r in v.table.iterrows():
        best = f"{number(r.p_improve_best, '.2f')} (vs {r.best_other})" if r.best_other else "–"
        count = f"{r.units} of {n} ({r.seed_pairs})" + (
            f", diverged in {r.diverged_settings} setting(s)" if r.diverged_settings else "")
        rank = number(r.avg_rank, ".2f") if r.ranked or r.control else f"measured on {r.units} of {n} units: not ranked"
        rows.append([variant_label(r.method), count, _interval(r, "iqm_relative", " %"), _interval(r, "iqm_delta", ""),
                     number(r.p_improve_ce, ".2f"), best, rank])
    units = ", ".join(f"`{u}`" for u in v.units)
    per = ["Per unit: mean Δ top-1 vs ce over seeds (pp).", "", markdown_table(
        ["method", *v.units], ([variant_label(m), *(number(x, "+.2f") for x in row)]
                               for m, row in v.per_unit.iterrows() if m != BASELINE)), ""] if n > 1 else []
    if v.has_cd:
        friedman = "" if v.friedman_p != v.friedman_p else f"; Friedman {p_text(v.friedman_p, spaced=True)}"
        ranks = (f"Ranks (1 = best) of each unit's mean top-1, over the {len(v.ranked_units)} units: critical "
                 f"difference (Nemenyi, α = {ALPHA:g}) {v.cd:.2f} ranks{friedman}. Two methods whose average ranks "
                 "differ by less are not told apart (figure `critical_difference`).")
    else:
        ranks = v.why_no_cd()[0].upper() + v.why_no_cd()[1:] + "."
    apart = v.table[~v.table.ranked & ~v.table.control]
    if len(apart):
        ranks += " Listed apart, not ranked (measured on fewer units): " + ", ".join(
            f"`{m}` ({u} of {n})" for m, u in zip(apart.method, apart.units)) + "."
    if v.diverged:
        ranks += " Counted as losses (diverged): " + "; ".join(f"`{m}` in `{s}`" for s, m in v.diverged) + "."
    return [f"## {v.study}", "", f"{n} independent unit{'s' * (n != 1)}: {units}.", "", markdown_table(head, rows), "",
            *per, ranks, ""]


def markdown(verdicts: dict[str, Verdict]) -> str:
    """The verdicts as markdown: what they read, then per study its table, its per-unit differences and its
    ranks (with a critical difference only over :data:`MIN_UNITS` units or more)."""
    if not verdicts:
        return "# Verdict per study\n\nNo complete classifier run of the studies main, noisy, fewshot or tuned.\n"
    return "\n".join(["# Verdict per study", "", INTRO, "", *(l for v in verdicts.values() for l in _section(v))])


def csv_table(verdicts: dict[str, Verdict]) -> pd.DataFrame:
    """Every study's table, a ``study`` column first, with its ranked units, CD and Friedman p on each row."""
    frames = [v.table.assign(ranked_units=len(v.ranked_units), critical_difference=v.cd, friedman_p=v.friedman_p)
              for v in verdicts.values()]
    frames = [f.insert(0, "study", v.study) or f for f, v in zip(frames, verdicts.values())]
    return pd.concat(frames, ignore_index=True) if frames else pd.DataFrame(columns=["study", "method"])


def write(runs: pd.DataFrame, out_dir: str | Path, studies: Sequence[str] = STUDIES) -> list[Path]:
    """``verdict.csv`` (the tables' numbers, top-1 differences in percentage points, relative error reductions in
    %, a ``study`` column) and ``verdict.md`` under ``out_dir``."""
    verdicts = compute(runs, studies)
    out_dir = Path(out_dir)
    paths = [out_dir / "verdict.csv", out_dir / "verdict.md"]
    atomic.write(csv_table(verdicts).round(6).to_csv(index=False), paths[0], mkdir=True)
    atomic.write(markdown(verdicts), paths[1], mkdir=True)
    return paths
