"""A verdict across settings: which method wins overall, from the studies ``main``, ``noisy``, ``fewshot`` and (when
the grid has it) ``tuned``, read from ``summary.csv`` like every table (torch-free; scipy and scikit-posthocs are
imported on use).

A *setting* is one condition (dataset, model, scenario) of one of those studies: ``noisy: fashion-mnist/resnet20/
sym0.4``. In ``tuned`` a method's setting holds its tuned finals (``<method>+tuned=<i>``: the trial chosen on
validation, trained at the block's seeds), named by the method, against tuned ``ce``; its default-setting runs are
``main``'s and count there. Tuning trials, the generative study and anything but a classifier are left out. The
metric is the tables' headline, last-epoch test top-1, in percentage points.

* A method's per-setting **difference to ce** is paired by seed (the seeds both have). Its **IQM** is the
  interquartile mean of all its paired differences pooled over the settings (``scipy.stats.trim_mean(x, 0.25)``, as
  rliable computes it: a quarter of the values cut at each end, rounded down), with a **stratified bootstrap** 95 %
  percentile interval (:func:`stratified_bootstrap`: the settings are strata, each resamples its own seeds with
  replacement; :data:`BOOTSTRAP_REPS` replicates from :data:`BOOTSTRAP_SEED`, so every machine prints the same).
* The **probability of improvement** P(X > Y) of method X over Y (Agarwal et al. 2021, "Deep RL at the edge of the
  statistical precipice", rliable): in each setting both have, the Mann–Whitney share of (x seed, y seed) pairs
  where x's top-1 is higher, ties counting 0.5; averaged over those settings. Given over ``ce`` and over the best
  other method (the other non-control method with the highest IQM difference to ``ce``; ``ce`` itself counts, at 0).
* The **average rank** (1 = best, ties averaged) of a method's mean top-1 over seeds in each setting, over the
  settings that hold every ranked method: ranks and Friedman's test need complete blocks, so :func:`complete_block`
  keeps the largest block (methods × settings) among those made by all settings or by the settings of one method,
  with at least two of each where any such block exists. The **critical-difference diagram** (Demšar 2006; the
  ``critical_difference`` figure, drawn by scikit-posthocs) joins the methods that the Nemenyi test after
  Friedman's cannot tell apart; :func:`critical_difference` is its CD in ranks.
* A **diverged** run is a loss, never missing: a method with a diverged run in a setting takes the worst possible
  top-1 (:data:`WORST`, 0 %) at every seed it ran there, so it loses that setting to every method that did not
  diverge (its differences to ce there are −ce's top-1, it ranks last, its P(improvement) there is 0). A run that
  is missing, failed or in flight is missing: the setting then averages the method's complete seeds.
* The **controls** (``icp+steps=0``, the α-only control; ``ce+budget=...``, FLOP-matched ce) are shown with their
  differences to ce and P(improvement), but are neither ranked nor anyone's "best other method": they answer what
  the main table asks of ICP, not which method wins.

:func:`write` makes ``<results_dir>/tables/verdict.csv`` (every number) and ``verdict.md`` (``icp tables``).
"""
from __future__ import annotations

import math
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Optional, Sequence

import numpy as np
import pandas as pd

STUDIES = ("main", "noisy", "fewshot", "tuned")
BASELINE = "ce"
METRIC = "top1"
WORST = 0.0  # top-1 of a method in a setting where it diverged: the worst possible
BOOTSTRAP_REPS = 10_000
BOOTSTRAP_SEED = 0
CONFIDENCE = 0.95
ALPHA = 0.05  # Friedman's and the Nemenyi test's level (the CD diagram's bars)
RESOLUTION = 1e-6  # top-1 is stored as float32: values are compared at this step (icp.stats.FLOAT32_RESOLUTION)
TUNED = re.compile(r"\+tuned=\d+$")
TRIAL = re.compile(r"\+trial=\d+")


def applies(studies: Sequence[str]) -> bool:
    """Whether a grid with these studies has a verdict (one of :data:`STUDIES` but ``tuned`` alone)."""
    return any(s in studies for s in STUDIES if s != "tuned")


def is_control(variant: str) -> bool:
    """A control variant: the α-only control (``icp+steps=0`` and kin) or a FLOP-matched ce (``+budget=``)."""
    from icp.grid import variant_label

    return "+budget=" in variant or "control" in variant_label(variant)


# ------------------------------------------------------------------------------------------ statistics
def iqm(values, axis=None) -> float | np.ndarray:
    """The interquartile mean: the mean of the values left when a quarter (rounded down) is cut at each end
    (``scipy.stats.trim_mean(values, 0.25)``, rliable's IQM)."""
    from scipy import stats

    return stats.trim_mean(np.asarray(values, dtype=float), 0.25, axis=axis)


def stratified_bootstrap(strata: Sequence[Sequence[float]], statistic: Callable = iqm, reps: int = BOOTSTRAP_REPS,
                         seed: int = BOOTSTRAP_SEED, confidence: float = CONFIDENCE) -> tuple[float, float]:
    """The percentile interval of ``statistic`` of the pooled values of ``strata`` when each stratum (a setting)
    resamples its own values (seeds) with replacement, as many as it has: ``reps`` replicates drawn by
    ``numpy.random.default_rng(seed)``, so the same strata give the same interval on every machine.
    ``statistic(array, axis=1)`` is applied to the (reps, n) array of replicates at once."""
    strata = [np.asarray(s, dtype=float) for s in strata if len(s)]
    if not strata:
        return math.nan, math.nan
    rng = np.random.default_rng(seed)
    samples = np.concatenate([s[rng.integers(0, len(s), size=(reps, len(s)))] for s in strata], axis=1)
    replicates = statistic(samples, axis=1)
    tail = 100 * (1 - confidence) / 2
    low, high = np.percentile(replicates, [tail, 100 - tail])
    return float(low), float(high)


def prob_greater(x: Sequence[float], y: Sequence[float]) -> float:
    """P(X > Y) from samples: the share of (x, y) pairs with x > y, a tie (within :data:`RESOLUTION`) counting
    0.5 (the Mann–Whitney U over n·m)."""
    x, y = np.asarray(x, dtype=float)[:, None], np.asarray(y, dtype=float)[None, :]
    if not x.size or not y.size:
        return math.nan
    tie = np.abs(x - y) < RESOLUTION / 2
    return float(np.mean(np.where(tie, 0.5, (x > y).astype(float))))


def probability_of_improvement(x_cells: Sequence[Sequence[float]], y_cells: Sequence[Sequence[float]]) -> float:
    """rliable's probability of improvement: :func:`prob_greater` in each setting (``x_cells[i]``, ``y_cells[i]``:
    the two methods' values in setting i), averaged over the settings."""
    per = [prob_greater(x, y) for x, y in zip(x_cells, y_cells) if len(x) and len(y)]
    return float(np.mean(per)) if per else math.nan


def average_ranks(values: pd.DataFrame, higher_is_better: bool = True) -> pd.Series:
    """Per column (method) its rank in each row (setting), 1 the best and ties averaged, averaged over the rows.
    ``values`` must be complete (no NaN): rank only a :func:`complete_block`."""
    from scipy import stats

    if values.isna().any().any():
        raise ValueError("average_ranks needs a value for every method in every setting (a complete block)")
    shown = np.round(values.to_numpy(dtype=float) / RESOLUTION) * RESOLUTION
    ranks = stats.rankdata(-shown if higher_is_better else shown, axis=1, method="average")
    return pd.Series(ranks.mean(axis=0), index=values.columns)


def critical_difference(k: int, n: int, alpha: float = ALPHA) -> float:
    """The Nemenyi test's critical difference in average ranks for ``k`` methods over ``n`` settings (Demšar 2006):
    q_α √(k(k+1) / 6n), q_α the studentized range's 1−α quantile for k groups (infinite degrees of freedom) / √2."""
    from scipy import stats

    if k < 2 or n < 1:
        return math.nan
    q = stats.studentized_range.ppf(1 - alpha, k, np.inf) / math.sqrt(2)
    return float(q * math.sqrt(k * (k + 1) / (6 * n)))


def complete_block(present: pd.DataFrame, methods: Optional[Sequence[str]] = None) -> tuple[list, list]:
    """(settings, methods): the largest complete block of ``present`` (settings × methods, True where the method has
    a value) among those made by every setting or by the settings of one method, each keeping the ``methods``
    (default all columns) present in all of its settings. Largest: at least two settings and two methods where any
    block has them, then the most cells, settings, the earliest settings; orders as in ``present``."""
    cols = [m for m in (methods if methods is not None else present.columns) if m in present.columns]
    present = present[cols].fillna(False).astype(bool)
    candidates = [list(present.index)] + [list(present.index[present[m]]) for m in cols]
    best, best_key = ([], []), None
    for settings in candidates:
        if not settings:
            continue
        kept = [m for m in cols if present.loc[settings, m].all()]
        order = [list(present.index).index(s) for s in settings]
        key = (len(settings) >= 2 and len(kept) >= 2, len(settings) * len(kept), len(settings),
               [-i for i in order])
        if best_key is None or key > best_key:
            best, best_key = (settings, kept), key
    return best


# ------------------------------------------------------------------------------------------ data
def setting_values(runs: pd.DataFrame, studies: Sequence[str] = STUDIES) -> pd.DataFrame:
    """One row per (setting, method, seed) of the verdict: ``setting`` (``study: dataset/model/scenario``), its
    factors, ``method`` (the variant; a tuned final by its method), ``seed``, ``value`` (last-epoch test top-1, or
    :data:`WORST` at every seed of a setting where the method diverged) and ``diverged`` (that setting's method
    diverged there). Runs neither complete nor diverged are left out."""
    from icp.aggregate import CONDITION, kind_of, study_runs

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
            "study": study, **{k: rows[k].astype(str).to_numpy() for k in CONDITION},
            "method": rows.variant.str.replace(TUNED, "", regex=True).to_numpy(),
            "seed": rows.seed.astype(int).to_numpy(), "status": rows.status.to_numpy(),
            "value": pd.to_numeric(rows[METRIC], errors="coerce").to_numpy()}))
    columns = ["setting", "study", *CONDITION, "method", "seed", "value", "diverged"]
    if not frames:
        return pd.DataFrame(columns=columns)
    out = pd.concat(frames, ignore_index=True)
    out["diverged"] = out.groupby(["setting", "method"]).status.transform(lambda s: (s == "diverged").any())
    out.loc[out.diverged, "value"] = WORST
    out = out.dropna(subset=["value"]).drop_duplicates(["setting", "method", "seed"])
    return out[columns].reset_index(drop=True)


# ------------------------------------------------------------------------------------------ the verdict
@dataclass
class Verdict:
    """The verdict: ``table`` (one row per method), the settings, the ranked block and its CD and Friedman p."""

    table: pd.DataFrame
    settings: list = field(default_factory=list)
    ranked_settings: list = field(default_factory=list)
    ranked_methods: list = field(default_factory=list)
    cell_means: pd.DataFrame = field(default_factory=pd.DataFrame)  # settings × methods, mean top-1 over seeds
    cd: float = math.nan
    friedman_p: float = math.nan
    diverged: list = field(default_factory=list)  # (setting, method) pairs counted as losses


def _by_cell(values: pd.DataFrame) -> dict:
    return {key: part.set_index("seed").value for key, part in values.groupby(["setting", "method"], sort=False)}


def _paired_differences(cells: dict, setting: str, method: str) -> np.ndarray:
    x, b = cells.get((setting, method)), cells.get((setting, BASELINE))
    if x is None or b is None:
        return np.array([])
    both = x.index.intersection(b.index)
    diff = (x[both] - b[both]).to_numpy(dtype=float)
    return np.round(diff / RESOLUTION) * RESOLUTION  # float32 storage noise is no difference


def compute(runs: pd.DataFrame, studies: Sequence[str] = STUDIES, reps: int = BOOTSTRAP_REPS,
            seed: int = BOOTSTRAP_SEED) -> Verdict:
    """The :class:`Verdict` of the runs (rows of ``summary.csv``)."""
    values = setting_values(runs, studies)
    settings = list(dict.fromkeys(values.setting))
    methods = list(dict.fromkeys(values.method))
    if BASELINE in methods:  # the baseline first, the rest in the grid's order
        methods = [BASELINE, *(m for m in methods if m != BASELINE)]
    cells = _by_cell(values)
    means = (values.groupby(["setting", "method"], sort=False).value.mean().unstack("method")
             .reindex(index=settings, columns=methods))
    rows = []
    for m in methods:
        diffs = {s: _paired_differences(cells, s, m) for s in settings}
        diffs = {s: d for s, d in diffs.items() if len(d)}
        pooled = np.concatenate(list(diffs.values())) if diffs else np.array([])
        low, high = stratified_bootstrap(list(diffs.values()), reps=reps, seed=seed) if m != BASELINE and diffs \
            else (math.nan, math.nan)
        shared = [s for s in settings if (s, m) in cells and (s, BASELINE) in cells]
        rows.append({"method": m, "control": is_control(m), "settings": int(means[m].notna().sum()),
                     "settings_vs_ce": len(diffs), "pairs": int(len(pooled)),
                     "iqm_delta": float(iqm(pooled)) * 100 if len(pooled) else math.nan,
                     "ci_low": low * 100, "ci_high": high * 100,
                     "p_improve_ce": math.nan if m == BASELINE else probability_of_improvement(
                         [cells[s, m] for s in shared], [cells[s, BASELINE] for s in shared]),
                     "diverged_settings": int(values[(values.method == m) & values.diverged].setting.nunique())})
    table = pd.DataFrame(rows, columns=["method", "control", "settings", "settings_vs_ce", "pairs", "iqm_delta",
                                        "ci_low", "ci_high", "p_improve_ce", "diverged_settings"])
    if len(table):
        table.loc[table.method == BASELINE, "iqm_delta"] = 0.0  # by definition: ce against itself
    # the best other method: the non-control one with the highest IQM difference to ce (ce's own is 0)
    contenders = table[~table.control & table.iqm_delta.notna()].sort_values(
        "iqm_delta", ascending=False, kind="stable").method.tolist()
    best_other, p_best = [], []
    for m in table.method:
        other = next((o for o in contenders if o != m), None)
        shared = [s for s in settings if (s, m) in cells and (s, other) in cells] if other else []
        best_other.append(other if shared else "")
        p_best.append(probability_of_improvement([cells[s, m] for s in shared], [cells[s, other] for s in shared])
                      if shared else math.nan)
    table["best_other"], table["p_improve_best"] = best_other, p_best
    # ranks over the largest complete block of the methods proper
    ranked_settings, ranked = complete_block(means.notna(), [m for m in methods if not is_control(m)])
    ranks = pd.Series(dtype=float)
    cd = friedman = math.nan
    if ranked_settings and len(ranked) >= 2:
        block = means.loc[ranked_settings, ranked]
        ranks = average_ranks(block)
        cd = critical_difference(len(ranked), len(ranked_settings))
        if len(ranked) >= 3 and len(ranked_settings) >= 2:
            from scipy import stats

            shown = np.round(block.to_numpy(dtype=float) / RESOLUTION) * RESOLUTION
            with np.errstate(all="ignore"):
                friedman = float(stats.friedmanchisquare(*shown.T).pvalue)
    table["avg_rank"] = table.method.map(ranks).astype(float)
    # the methods by IQM, best first, then the controls
    table = table.sort_values(["control", "iqm_delta", "method"], ascending=[True, False, True], kind="stable",
                              na_position="last")
    diverged = sorted({(s, m) for s, m in zip(values.setting[values.diverged], values.method[values.diverged])})
    return Verdict(table.reset_index(drop=True), settings, list(ranked_settings) if len(ranked) >= 2 else [],
                   ranked if len(ranked) >= 2 else [], means, cd, friedman, diverged)


def nemenyi(verdict: Verdict) -> pd.DataFrame:
    """The Nemenyi p-values (after Friedman's) between the ranked methods over the ranked settings
    (``scikit_posthocs.posthoc_nemenyi_friedman``)."""
    import scikit_posthocs as sp

    block = verdict.cell_means.loc[verdict.ranked_settings, verdict.ranked_methods]
    block = pd.DataFrame(-np.round(block.to_numpy(dtype=float) / RESOLUTION) * RESOLUTION, columns=block.columns)
    return sp.posthoc_nemenyi_friedman(block)


# ------------------------------------------------------------------------------------------ writing
def _num(v: float, fmt: str) -> str:
    return "–" if v != v else format(v, fmt)


def p_text(p: float) -> str:
    """``p = 0.035``; below a thousandth ``p < 0.001``."""
    return "p < 0.001" if p < 0.001 else f"p = {p:.3f}"


def _label(method: str) -> str:
    from icp.grid import variant_label

    return variant_label(method)


def markdown(v: Verdict) -> str:
    """The verdict as markdown: what it reads, the table, and the ranks' block with its critical difference."""
    if v.table.empty:
        return "# Verdict across settings\n\nNo complete classifier run of the studies main, noisy, fewshot or tuned.\n"
    n_ranked, k = len(v.ranked_settings), len(v.ranked_methods)
    rank_head = f"average rank (of {k}, over {n_ranked} settings)" if k else "average rank"
    head = ["method", "settings (seed pairs with ce)", "IQM Δ top-1 vs ce (pp) [95 % stratified bootstrap]",
            "P(improvement) over ce", "P(improvement) over the best other method", rank_head]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for _, r in v.table.iterrows():
        if r.method == BASELINE:
            delta = "0 (the baseline)"
        elif r.iqm_delta != r.iqm_delta:
            delta = "–"
        else:
            delta = f"{r.iqm_delta:+.2f} [{r.ci_low:+.2f}, {r.ci_high:+.2f}]"
        best = f"{_num(r.p_improve_best, '.2f')} (vs {r.best_other})" if r.best_other else "–"
        count = f"{r.settings} ({r.pairs})" + (f", diverged in {r.diverged_settings}" if r.diverged_settings else "")
        lines.append("| " + " | ".join([_label(r.method), count, delta, _num(r.p_improve_ce, ".2f"), best,
                                          _num(r.avg_rank, ".2f")]) + " |")
    intro = (f"Last-epoch test top-1 over {len(v.settings)} settings (a setting: one condition of one study; "
             f"{', '.join(f'`{s}`' for s in v.settings)}). IQM: the interquartile mean of a method's differences to "
             "ce, paired by seed in each setting and pooled over the settings; its interval: a stratified bootstrap "
             f"(settings as strata, seeds resampled within; {BOOTSTRAP_REPS:,} replicates, seed {BOOTSTRAP_SEED}). "
             "P(improvement): P(X > Y) over the seeds of each setting both have, ties 0.5, averaged over those "
             "settings (Agarwal et al. 2021); the best other method: the other non-control method with the highest "
             "IQM. A method with a diverged run in a setting takes 0 % top-1 at every seed there: that setting is a "
             "loss for it, not missing. The controls are not ranked.")
    if k:
        friedman = "" if v.friedman_p != v.friedman_p else f"; Friedman {p_text(v.friedman_p)}"
        ranks = (f"Ranks (1 = best) of the mean top-1 over seeds, over the {n_ranked} settings that hold all {k} "
                 f"ranked methods ({', '.join(f'`{s}`' for s in v.ranked_settings)}): critical difference "
                 f"(Nemenyi, α = {ALPHA:g}) {v.cd:.2f} ranks{friedman}. Two methods whose average ranks differ by "
                 "less are not told apart (figure `critical_difference`).")
    else:
        ranks = "No two methods share two settings: nothing is ranked."
    left = [m for m in v.table.method if m not in v.ranked_methods and not is_control(m)]
    if k and left:
        ranks += f" Not ranked (not in every one of those settings): {', '.join(f'`{m}`' for m in left)}."
    if v.diverged:
        ranks += " Counted as losses (diverged): " + "; ".join(f"`{m}` in `{s}`" for s, m in v.diverged) + "."
    return "\n".join(["# Verdict across settings", "", intro, "", *lines, "", ranks, ""])


def write(runs: pd.DataFrame, out_dir: str | Path, studies: Sequence[str] = STUDIES) -> list[Path]:
    """``verdict.csv`` (the table's numbers, top-1 differences in percentage points) and ``verdict.md`` under
    ``out_dir``."""
    from icp.aggregate import _atomic_text

    v = compute(runs, studies)
    out_dir = Path(out_dir)
    paths = [out_dir / "verdict.csv", out_dir / "verdict.md"]
    table = v.table.assign(ranked_settings=len(v.ranked_settings), critical_difference=v.cd,
                           friedman_p=v.friedman_p)
    _atomic_text(table.round(6).to_csv(index=False), paths[0])
    _atomic_text(markdown(v), paths[1])
    return paths
