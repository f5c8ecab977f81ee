"""Figure ``feature_distance``: per-layer distance between the features of clean and ICP-refined inputs, from
ICP's runs of study main."""
from __future__ import annotations

from icp.figures import common, plot

NAME = "feature_distance"
STUDY = "main"
CAPTION = ("Per-layer MSE between the features of the clean and of the refined input, per epoch; one panel per "
           "condition and variant, its model's taps as lines.")
TITLE = "Study main: feature distance per layer, clean vs ICP-refined input (mean ± sd over seeds)"
EMPTY = "no complete ICP run with refinement yet"


def draw(runs, epochs, ctx):
    ep = common.icp_epochs(runs, epochs, STUDY)
    cols = [c for c in ep.columns if c.startswith("diag.feature_mse.")]
    if ep.empty or not cols or ep[cols].notna().sum().sum() == 0:
        return plot.empty(TITLE, EMPTY)
    long = ep.melt(id_vars=["run_id", "variant", "seed", "epoch", *common.CONDITION], value_vars=cols, var_name="tap",
                   value_name="MSE").dropna(subset=["MSE"])  # a model's panel keeps the taps it has
    long["tap"] = long.tap.str.removeprefix("diag.feature_mse.")
    colours = plot.colours(long.tap)

    def panel(part):
        def on(ax):
            plot.lines(ax, part, "epoch", "MSE", colours, hue="tap", legend="tap")
            ax.set_yscale("log")
            ax.set(xlabel="epoch", ylabel="MSE(f_l(x), f_l(x_K)) (log)")
        return on

    return plot.panel_grid([(f"{common.condition_name(key)}\nvariant {key['variant']}", panel(part))
                            for key, part in common.split_by(long, [*common.CONDITION, "variant"])], TITLE)
