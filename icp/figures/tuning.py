"""Figure ``tuning``: the expected best validation top-1 of k tuning trials against k, the trials of study tuned
(a failed or unfinished trial counts, as a loss: the figure says itself when there is none)."""
from __future__ import annotations

import pandas as pd

from icp.figures import common, plot

NAME = "tuning"
STUDY = "tuned"
CAPTION = ("Equal tuning: the expected best validation top-1 of k trials against k, for every method of each tuned "
           "condition (order statistics over its trials at the tuning seed, k drawn without replacement; a failed "
           "or diverged trial counts as 0 %), a dashed line at trial 0, the method's default setting, at the same seed: "
           "a line still rising at the last trial says the budget was not enough.")
TITLE = "Study tuned: expected best validation top-1 of k trials (dashed: trial 0, the default)"
EMPTY = None  # its trials count whether they completed or not


def draw(runs, epochs, ctx):
    from icp.stats import expected_best
    from icp.results.tuning import TRIAL, is_trial

    trials = runs[is_trial(runs.variant)].copy()
    trials = trials[trials.studies.fillna("").str.split(";").map(lambda s: "tuned" in s).astype(bool)]
    if trials.empty:
        return plot.empty(TITLE, "no tuning trial of study tuned yet")
    trials["method"] = trials.variant.str.replace(TRIAL, "", regex=True)
    value = trials.val_top1.astype(float).where(trials.status == "complete")
    trials["lost"] = value.isna()
    trials["value"] = value.fillna(0.0) * 100
    rows = []
    for key, part in common.split_by(trials, common.CONDITION):
        for method, m in part.groupby("method", sort=True):
            n = len(m)
            name = f"{method} ({n} trials, {int(m.lost.sum())} lost)"
            rows += [{**key, "method": method, "name": name, "k (trials)": k,
                      "expected best val top-1 (%)": expected_best(m.value, k)} for k in range(1, n + 1)]
    curves = pd.DataFrame(rows)
    colours = plot.colours(curves.method)
    # trial 0 is each method's default setting (icp.tuning), at the trials' seed: the line tuning must beat
    defaults = trials[trials.variant.str.endswith("+trial=0") & ~trials.lost].assign(variant=lambda t: t.method)

    def panel(part):
        def on(ax):
            from matplotlib.ticker import MaxNLocator

            for method, m in part.groupby("method", sort=True):
                ax.plot(m["k (trials)"], m["expected best val top-1 (%)"], marker="o", color=colours[method],
                        label=m.name.iloc[0])
                mine = defaults[defaults.variant == method]
                for k in common.CONDITION:
                    mine = mine[mine[k].astype(str) == str(m[k].iloc[0])]
                if len(mine):
                    ax.axhline(100 * float(mine.val_top1.iloc[0]), color=colours[method], linestyle="--",
                               linewidth=1, label=f"{method}: trial 0, its default setting (seed {int(mine.seed.iloc[0])})")
            ax.set(xlabel="k (trials)", ylabel="expected best val top-1 (%)")
            ax.xaxis.set_major_locator(MaxNLocator(integer=True))
            ax.legend(fontsize=7, title="method", title_fontsize=7, framealpha=0.8)
        return on

    return plot.panel_grid([(common.condition_name(key), panel(part))
                            for key, part in common.split_by(curves, common.CONDITION)], TITLE)
