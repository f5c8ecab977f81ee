"""Cells: per condition (dataset, model, scenario), variant and config, the statistics over seeds and the paired
comparison with the baseline, with Holm's correction over a family of comparisons.

* :func:`cells`: per condition, variant (method with its non-default options) and config key, the mean and
  standard deviation (ddof 1) over seeds of the ``complete`` runs, with ``n``; ``diverged`` runs are counted and
  never averaged in; runs missing, failed or in flight are counted as ``not_final``; ``left_out`` counts them per
  status. A grid run without a record joins the cell of its condition and variant when that cell has one config
  key. Each variant is compared with the baseline cell of the same condition and settings (``ce`` on top-1 for
  classifiers, ``vae`` on SSIM for the generative study: :data:`icp.results.frames.BASELINE`) over the seeds both
  have complete (:func:`paired`, :mod:`icp.stats`): mean paired difference ``delta``, its 95 % t interval
  ``ci_low``/``ci_high``, ``t_stat``, the two-sided paired t-test ``p_value`` (``scipy.stats.ttest_rel``; none
  below two pairs or when every difference is zero; t = ±inf for constant differences), ``p_holm`` (Holm across
  the variants compared with that baseline) and ``pairs``. Cost: ``images_per_s`` = total images ÷ total training
  time over the complete runs (so a slow epoch weighs by its time), ``speed_vs_baseline`` the ratio of those;
  ``hours``, ``gpu_hours`` and ``attempts`` summed over every run with a record, failed, diverged or requeued
  alike (lost work was spent); ``teacher_hours``/``teacher_gpu_hours``: the hours of the runs whose directory is
  the ``teacher`` of one of the cell's runs (AI-KD's ce teachers).
* A study's tables redo Holm over the study's declared primary family (:func:`family_rows`, :func:`with_family`,
  :mod:`icp.power`); :func:`significant` says which differences may be bold (:data:`ALPHA`).
"""
from __future__ import annotations

import math
from pathlib import Path
from typing import Optional, Sequence

import pandas as pd

from icp import stats
from icp.results.frames import BASELINE, CONDITION, METRICS, kind_of

# columns of runs_frame that cells reads; a grid whose runs all lack records has none of them
RECORD_COLUMNS = ("config_key", "setting_key", "train_images", "train_time_s", "hours", "gpu_hours", "attempts",
                  "teacher", "device_name", "best_by", "epochs", "fid_features", "test_size", "val_top1", "method_options",
                  "compute_ce_epochs")
# what a cell may leave out, counted per status in its text: "(2/3, 1 diverged)"
LEFT_OUT = ("corrupt", "diverged", "failed", "interrupted", "missing", "requeued", "running")
COMPARISON = ("delta", "ci_low", "ci_high", "t_stat", "p_value", "p_holm", "pairs", "test", "constant",
              "speed_vs_baseline")
ALPHA = 0.05  # the level at which a Holm-adjusted difference counts as significant (and may be bold)


def _with_config_keys(runs: pd.DataFrame, keys: list[str]) -> pd.DataFrame:
    """``runs`` with every :data:`RECORD_COLUMNS` column, and a config_key for the runs without a record
    (missing): the one key of the other runs of their condition and variant, so that they count in that cell;
    where those runs have several keys, a missing run cannot say which it belongs to and stays apart."""
    runs = runs.reindex(columns=list(dict.fromkeys([*runs.columns, *RECORD_COLUMNS])))
    only = runs.groupby(keys, sort=False, dropna=False).config_key.transform(
        lambda k: k.dropna().iloc[0] if k.dropna().nunique() == 1 else math.nan)
    return runs.assign(config_key=runs.config_key.fillna(only))


def _run_dir(path: str) -> str:
    """A run directory, resolved; given a checkpoint inside one (AI-KD's teacher may name ``best.pt``), its
    directory."""
    p = Path(path)
    return str((p.parent if p.suffix == ".pt" else p).resolve())


def _teacher_cost(recorded: pd.DataFrame, runs: pd.DataFrame, run_dirs: pd.Series) -> dict:
    """Hours of the runs that trained the teachers named by ``recorded`` (AI-KD's ce runs), matched by run
    directory; ``run_dirs``: :func:`_run_dir` of every run's path."""
    teachers = {_run_dir(t) for t in recorded.teacher if isinstance(t, str) and t}
    used = runs[run_dirs.isin(teachers)] if teachers else runs.iloc[:0]
    return {"teacher_hours": float(used.hours.sum()), "teacher_gpu_hours": float(used.gpu_hours.sum())}


def _cost(group: pd.DataFrame, done: pd.DataFrame, runs: pd.DataFrame, run_dirs: pd.Series) -> dict:
    """A cell's cost: throughput over its complete runs (total images ÷ total training time, so a slow epoch weighs
    by its time), and the hours and attempts of every run with a record, whatever became of it: work lost to a
    failure or a requeue was spent all the same."""
    recorded = group[group.status != "missing"]
    images, seconds = float(done.train_images.sum()), float(done.train_time_s.sum())
    return {"train_images": images, "train_time_s": seconds,
            "images_per_s": images / seconds if seconds > 0 else math.nan,
            "hours": float(recorded.hours.sum()), "gpu_hours": float(recorded.gpu_hours.sum()),
            "attempts": int(recorded.attempts.sum()), **_teacher_cost(recorded, runs, run_dirs),
            "devices": ",".join(sorted(set(done.device_name.dropna())))}


def _cell(row: dict, group: pd.DataFrame, runs: pd.DataFrame, run_dirs: pd.Series) -> dict:
    """One cell: ``row`` (its keys) with counts, mean and std over the complete runs of ``group``, and cost."""
    done = group[group.status == "complete"]
    counts = group.status.value_counts()
    row.update(method=group.method.iloc[0], n=len(done), diverged=int(counts.get("diverged", 0)),
               not_final=int(len(group) - len(done) - counts.get("diverged", 0)),
               left_out=", ".join(f"{counts[s]} {s}" for s in LEFT_OUT if s in counts),
               setting_key=done.setting_key.iloc[0] if len(done) else math.nan)
    for m in (*METRICS, "best_top1", "val_top1", *(["val_clean_top1"] if "val_clean_top1" in group else []),
              "compute_ce_epochs"):
        values = done[m].astype(float) if m in done else pd.Series(dtype=float)
        row[f"{m}_mean"] = values.mean() if len(values) else math.nan
        row[f"{m}_std"] = values.std(ddof=1) if len(values) > 1 else math.nan
    for m in refinement_columns(group):
        values = done[m].astype(float).dropna()
        row[m] = values.mean() if len(values) else math.nan
    row["best_by"] = ",".join(sorted(set(done.best_by.dropna()) - {""}))
    row.setdefault("epochs", ",".join(str(int(e)) for e in sorted(set(done.epochs.dropna()))))
    row["fid_features"] = ",".join(sorted({_fid_kind(v) for v in done.fid_features.dropna()}))
    row["baseline"], row["delta_of"] = BASELINE[kind_of(row["model"])]
    return {**row, **_cost(group, done, runs, run_dirs)}


def _fid_kind(features: str) -> str:
    """A record's ``fid_features`` as the kind of FID it makes: ``inception`` or ``classifier``."""
    return "inception" if str(features).startswith("inception") else "classifier"


def refinement_columns(frame: pd.DataFrame) -> list[str]:
    """The refinement diagnostics among ``frame``'s columns (as :func:`icp.results.frames.run_row` reads them from
    a record): input shift, then each tap."""
    taps = sorted(c for c in frame.columns if c.startswith("feature_mse."))
    return (["input_shift"] if "input_shift" in frame.columns else []) + taps


def resolution(runs: pd.DataFrame, metric: str) -> Optional[float]:
    """The smallest step of ``metric`` over ``runs``: top-1 counts test images, so 1 / the test split's size
    (None where the runs' test splits differ in size, or for a continuous metric)."""
    sizes = set(runs.test_size.dropna().astype(int)) if metric == "top1" and "test_size" in runs else set()
    return 1.0 / sizes.pop() if len(sizes) == 1 else None


def paired(variant: pd.DataFrame, base: pd.DataFrame, metric: str) -> stats.Paired:
    """:func:`icp.stats.paired` of ``metric`` over the seeds both have complete, at the metric's resolution."""
    pairs = variant.set_index("seed")[metric].to_frame("v").join(base.set_index("seed")[metric].to_frame("b"),
                                                                 how="inner").dropna()
    return stats.paired(pairs.v.astype(float), pairs.b.astype(float),
                        resolution=resolution(pd.concat([variant, base]), metric))


def with_holm(table: pd.DataFrame, family: Sequence[str]) -> pd.DataFrame:
    """``p_holm``: Holm's correction over each family of comparisons, the cells that share ``family``'s columns
    (a study table: one condition of that study; ``icp report``: one condition and setting)."""
    table = table.assign(p_holm=math.nan)
    compared = table[table.p_value.notna() & (table.variant != table.baseline)]
    for _, idx in compared.groupby(list(family), sort=False, dropna=False).groups.items():
        table.loc[idx, "p_holm"] = stats.holm(table.loc[idx, "p_value"].tolist())
    return table


def family_rows(study_cells: pd.DataFrame, runs: pd.DataFrame, comparisons: Sequence) -> pd.DataFrame:
    """The study's primary family (:func:`icp.power.family`) compared in each condition: per declared ``A vs B``
    whose cells share a setting, A minus B paired by seed over their complete runs (:data:`COMPARISON`'s columns
    and the condition's, ``comparison``, ``variant``, ``against``, ``delta_of``), and ``p_holm``: Holm's
    correction over the family within the condition."""
    rows = []
    done = runs[runs.status == "complete"]
    for cond, group in study_cells[study_cells.n > 0].groupby(list(CONDITION), sort=False):
        for c in comparisons:
            a, b = group[group.variant == c.variant], group[group.variant == c.against]
            pairs = [(i, j) for i in a.index for j in b.index if a.at[i, "setting_key"] == b.at[j, "setting_key"]]
            if not pairs:
                continue
            i, j = pairs[0]
            pick = lambda r: done[(done[list(CONDITION)] == list(cond)).all(axis=1)  # noqa: E731
                                  & (done.variant == r["variant"]) & (done.config_key == r["config_key"])]
            result = paired(pick(a.loc[i]), pick(b.loc[j]), a.at[i, "delta_of"])
            rows.append({**dict(zip(CONDITION, cond)), "comparison": str(c), "variant": c.variant,
                         "against": c.against, "baseline": a.at[i, "baseline"], "delta_of": a.at[i, "delta_of"],
                         **{k: getattr(result, k) for k in ("delta", "ci_low", "ci_high", "t_stat", "p_value",
                                                            "pairs", "test", "constant")}})
    table = pd.DataFrame(rows, columns=[*CONDITION, "comparison", "variant", "against", "baseline", "delta_of",
                                        "delta", "ci_low", "ci_high", "t_stat", "p_value", "pairs", "test",
                                        "constant"])
    table = table.assign(p_holm=math.nan)
    for _, idx in table[table.p_value.notna()].groupby(list(CONDITION), sort=False).groups.items():
        table.loc[idx, "p_holm"] = stats.holm(table.loc[idx, "p_value"].tolist())
    return table


def with_family(study_cells: pd.DataFrame, family: pd.DataFrame) -> pd.DataFrame:
    """``study_cells`` with ``primary`` (its difference to the baseline is in the family) and ``p_holm`` taken
    from the family's Holm correction; every other difference keeps its raw p, exploratory, and is never bold."""
    vs_base = family[family.against == family.baseline].set_index([*CONDITION, "variant"]).p_holm
    keys = pd.MultiIndex.from_frame(study_cells[[*CONDITION, "variant"]])
    primary = keys.isin(vs_base.index) & (study_cells.variant != study_cells.baseline).to_numpy()
    p_holm = [vs_base.get(k, math.nan) if is_primary else math.nan for k, is_primary in zip(keys, primary)]
    return study_cells.assign(primary=primary, p_holm=p_holm)


def _compare(table: pd.DataFrame, done: list[pd.DataFrame], condition: list[str]) -> pd.DataFrame:
    """Fill :data:`COMPARISON`: every cell against the baseline cell of its condition trained in the same setting
    (the same config but for the method: :func:`icp.config.cell_digest` without ``method``), its metric paired by
    seed, Holm's correction across the variants compared with that baseline (a study's tables redo it over their
    own family, :func:`with_holm`); ``done[i]``: cell i's complete runs."""
    table = table.assign(**{**{k: math.nan for k in COMPARISON}, "pairs": 0, "test": "", "constant": False})
    for _, idx in table[table.n > 0].groupby([*condition, "setting_key"], sort=False).groups.items():
        base = [i for i in idx if table.at[i, "variant"] == table.at[i, "baseline"]]
        if not base:
            continue
        table.at[base[0], "speed_vs_baseline"] = 1.0
        others = [i for i in idx if i != base[0]]
        for i in others:
            result = paired(done[i], done[base[0]], table.at[i, "delta_of"])
            for k in ("delta", "ci_low", "ci_high", "t_stat", "p_value", "pairs", "test", "constant"):
                table.at[i, k] = getattr(result, k)
            table.at[i, "speed_vs_baseline"] = table.at[i, "images_per_s"] / table.at[base[0], "images_per_s"]
    return with_holm(table, [*condition, "setting_key"])


def cells(runs: pd.DataFrame, extra_keys: Sequence[str] = ()) -> pd.DataFrame:
    """Per condition, variant and config (:func:`icp.config.cell_digest`: runs that differ by seed alone): n, mean
    and std over seeds of the complete runs, what was left out, cost, and the paired comparison with the baseline
    under the same condition. ``extra_keys`` (``epochs`` for records that do not come from one grid) split
    conditions further."""
    condition = [*CONDITION, *extra_keys]
    runs = _with_config_keys(runs, [*condition, "variant"])
    keys = [*condition, "variant", "config_key"]
    run_dirs = runs.path.map(_run_dir) if runs.teacher.notna().any() else pd.Series(index=runs.index, dtype=str)
    groups = [g for _, g in runs.groupby(keys, sort=False, dropna=False)]
    table = pd.DataFrame([_cell(dict(zip(keys, g[keys].iloc[0])), g, runs, run_dirs) for g in groups])
    return _compare(table, [g[g.status == "complete"] for g in groups], condition)


def significant(row) -> bool:
    """A variant whose Holm-adjusted difference to its baseline is significant at :data:`ALPHA` and better."""
    return (row["variant"] != row["baseline"] and row.get("p_holm") == row.get("p_holm")
            and row["p_holm"] < ALPHA and row["delta"] > 0)
