"""Figure ``schedule``: ICP's loss weights as its runs of study main recorded them (α_e per epoch) and its layer
weights per model."""
from __future__ import annotations

import json
import re

import numpy as np
import pandas as pd

from icp.figures import common, plot
from icp.naming import variant_label

NAME = "schedule"
STUDY = "main"
CAPTION = ("α_e, the task-loss weight (1 in warm-up, then cos(π(e−W)/(2(E−W)))), per epoch as recorded (mean over "
           "seeds), one panel per condition; variants whose α_e coincide share one line, named together; the "
           "layer weights w_l per model over that model's own taps, for the ``layer_weights`` its runs used.")
TITLE = "Study main: ICP's loss weights as its runs recorded them"
EMPTY = "no complete ICP run of study main yet"


def _taps(ep: pd.DataFrame) -> list[str]:
    """The feature taps recorded (a non-null ``diag.feature_mse.<tap>``) in ``ep``, shallow to deep."""
    cols = [c for c in ep.columns if c.startswith("diag.feature_mse.") and ep[c].notna().any()]
    natural = lambda s: [int(t) if t.isdigit() else t for t in re.split(r"(\d+)", s)]  # noqa: E731
    return sorted((c.removeprefix("diag.feature_mse.") for c in cols), key=natural)


def coinciding(part: pd.DataFrame) -> tuple[pd.DataFrame, dict[str, str]]:
    """``part`` with each variant whose mean α_e per epoch equals another's (to float precision: an α-only control
    and the ICP run it controls share the schedule by design) drawn as that other's line, and the legend names
    ``{line: "a = b"}`` of the lines that stand for several variants."""
    means = part.groupby(["variant", "epoch"]).mean(numeric_only=True)["diag.alpha"].unstack("epoch")
    line: dict[str, str] = {}
    for variant, row in means.iterrows():
        line[variant] = next((first for first in dict.fromkeys(line.values())
                              if np.allclose(means.loc[first], row, rtol=1e-6, atol=1e-9, equal_nan=True)), variant)
    groups: dict[str, list[str]] = {}
    for variant, first in line.items():
        groups.setdefault(first, []).append(variant)
    names = {first: " = ".join(variant_label(v) for v in members) for first, members in groups.items()
             if len(members) > 1}
    return part.assign(variant=part.variant.map(line)), names


def draw(runs, epochs, ctx):
    from icp.methods.options import layer_weights

    ep = common.icp_epochs(runs, epochs, STUDY)
    if ep.empty or "diag.alpha" not in ep:
        return plot.empty(TITLE, EMPTY)
    colours = plot.colours(ep.variant)
    used = {(r.model, json.loads(r.method_options or "{}").get("layer_weights", "cosine"))
            for r in runs[runs.run_id.isin(ep.run_id)].itertuples()}

    def alpha(part):
        def on(ax):
            lines, names = coinciding(part)
            plot.lines(ax, lines, "epoch", "diag.alpha", colours, errorbar=None,
                       names={v: names.get(v) or variant_label(v) for v in lines.variant.unique()})
            ax.set(xlabel="epoch", ylabel="α_e (weight of the task loss)", ylim=(-0.05, 1.05))
        return on

    def weights(taps, kinds):
        def on(ax):
            x = np.arange(len(taps))
            width = 0.8 / len(kinds)
            for i, kind in enumerate(kinds):
                ax.bar(x + (i - (len(kinds) - 1) / 2) * width, layer_weights(kind, len(taps)), width=width,
                       label=kind)
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
            kinds = sorted(kind for m, kind in used if m == model)
            panels.append((f"{model}: layer weights over its {len(taps)} taps", weights(taps, kinds)))
    return plot.panel_grid(panels, TITLE, ncols=ncols)
