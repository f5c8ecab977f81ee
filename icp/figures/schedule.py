"""Figure ``schedule``: ICP's loss weights as its runs of study main recorded them (α_e per epoch) and its layer
weights per model."""
from __future__ import annotations

import re

import numpy as np
import pandas as pd

from icp.figures import common, plot

NAME = "schedule"
STUDY = "main"
CAPTION = ("α_e, the task-loss weight, per epoch as recorded, one panel per condition; the layer weights w_l per "
           "model over that model's own taps.")
TITLE = ("ICP's loss weights, as recorded by the runs of study main\n"
         "top: α_e = 1 in warm-up, then cos(π(e−W)/(2(E−W))), per condition (mean over seeds); "
         "bottom: layer weights w_l per model, over the feature taps its runs recorded")
EMPTY = "no complete ICP run of study main yet"


def _taps(ep: pd.DataFrame) -> list[str]:
    """The feature taps recorded (a non-null ``diag.feature_mse.<tap>``) in ``ep``, shallow to deep."""
    cols = [c for c in ep.columns if c.startswith("diag.feature_mse.") and ep[c].notna().any()]
    natural = lambda s: [int(t) if t.isdigit() else t for t in re.split(r"(\d+)", s)]  # noqa: E731
    return sorted((c.removeprefix("diag.feature_mse.") for c in cols), key=natural)


def draw(runs, epochs, ctx):
    from icp.methods.options import layer_weights

    ep = common.icp_epochs(runs, epochs, STUDY)
    if ep.empty or "diag.alpha" not in ep:
        return plot.empty(TITLE, EMPTY)
    colours = plot.colours(ep.variant)

    def alpha(part):
        def on(ax):
            plot.lines(ax, part, "epoch", "diag.alpha", colours, errorbar=None)
            ax.set(xlabel="epoch", ylabel="α_e (weight of the task loss)", ylim=(-0.05, 1.05))
        return on

    def weights(taps):
        def on(ax):
            x = np.arange(len(taps))
            for off, kind in ((-0.2, "cosine"), (0.2, "uniform")):
                ax.bar(x + off, layer_weights(kind, len(taps)), width=0.4, label=kind)
            ax.set_xticks(x, taps)
            ax.set(xlabel="feature tap (shallow → deep)", ylabel="layer weight w_l", ylim=(0, 1.15))
            ax.legend(title="layer_weights", fontsize=7, title_fontsize=7, loc="lower left", framealpha=0.8)
        return on

    panels = [(common.condition_name(key), alpha(part)) for key, part in common.split_by(ep, common.CONDITION)]
    ncols = min(3, max(len(panels), ep.model.nunique()))
    panels += [None] * (-len(panels) % ncols)  # the layer weights start a row of their own
    for model, part in ep.groupby("model", sort=True):
        taps = _taps(part)
        if taps:
            panels.append((f"{model}: layer weights over its {len(taps)} taps", weights(taps)))
    return plot.panel_grid(panels, TITLE, ncols=ncols)
