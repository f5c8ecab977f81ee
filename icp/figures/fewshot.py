"""Figure ``fewshot``: last-epoch test top-1 against training images per class, the runs of study fewshot."""
from __future__ import annotations

from icp.figures import common, plot

NAME = "fewshot"
STUDY = "fewshot"
CAPTION = ("Last-epoch test top-1 vs training images per class (log axis), a line per variant over the shot "
           "counts (mean ± sd over seeds); one panel per dataset and model. Under the fixed budget of optimizer "
           "steps each shot count trains its own number of epochs, given under its tick (a range where a control "
           "trains longer).")
TITLE = "Study fewshot: last-epoch test top-1 vs training images per class (mean ± sd over seeds)"


def draw(runs, epochs, ctx):
    few = common.complete(runs, STUDY).copy()
    x = "images per class"
    few[x] = few.scenario.str.extract(r"^(\d+)shot$")[0].astype(float)
    few["test top-1 (%)"] = few.top1.astype(float) * 100
    keys = ["dataset", "model"]  # the scenario is the x-axis here; its step budget sets the epochs
    few = common.line_per_length(few, keys, at=x, epochs_in_name=False)
    colours = plot.colours(few.line)

    def panel(part):
        def on(ax):
            plot.lines(ax, part, x, "test top-1 (%)", colours, hue="line", at=x)
            ax.set_xscale("log")
            shots = sorted(part[x].dropna().unique())
            lengths = part.groupby(x).epochs  # one per shot count; a range where a control trains longer
            ticks = [f"{v:g}\n{int(lengths.min()[v])} ep" if lengths.nunique()[v] == 1
                     else f"{v:g}\n{int(lengths.min()[v])}–{int(lengths.max()[v])} ep" for v in shots]
            ax.set_xticks(shots, ticks)  # the shot counts run, not powers of ten, and their epochs
            ax.set_xticks([], minor=True)
            ax.set_xlabel(f"{x} (log; under each: its epochs)")
        return on

    return plot.panel_grid([(common.condition_name(key), panel(part)) for key, part in common.split_by(few, keys)],
                           TITLE)
