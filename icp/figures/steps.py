"""Figure ``steps``: test top-1 and training throughput against ICP's refinement steps K, the runs of study
steps."""
from __future__ import annotations

import json

import pandas as pd

from icp.figures import common, plot

NAME = "steps"
STUDY = "steps"
CAPTION = ("Test top-1 and training images/s vs the number of ICP refinement steps K; an accuracy and a cost panel "
           "per condition; n = seeds per K; K = 0 is the α-only control, one run shared by every line.")
TITLE = "Study steps: test top-1 and cost vs ICP refinement steps K (mean ± sd over seeds)"


def _option(runs: pd.DataFrame, name: str, default=None) -> pd.Series:
    return runs.method_options.map(lambda s: json.loads(s).get(name, default) if isinstance(s, str) else default)


def draw(runs, epochs, ctx):
    from icp.results.frames import variant_of
    from icp.naming import variant_label

    st = common.complete(runs, STUDY).copy()
    st["K (refinement steps)"] = _option(st, "steps")
    st["test top-1 (%)"] = st.top1.astype(float) * 100
    st["training images/s"] = st.images_per_s.astype(float)
    # the line: the method with its options other than K (K is the x-axis)
    st["method"] = [variant_label(variant_of(m, {k: v for k, v in json.loads(o or "{}").items() if k != "steps"}))
                    for m, o in zip(st.method, st.method_options)]
    # K = 0 is one run whatever the input optimizer (the α-only control, icp+steps=0): the first point of every line
    zero = (st["K (refinement steps)"] == 0) & (st.method.str.split(" ").str[0] == "icp")
    lines = st[~zero].method.unique()
    st = pd.concat([st[~zero], *(st[zero].assign(method=line) for line in lines)], ignore_index=True)
    colours = plot.colours(st.method)

    def panel(part, y, ylabel):
        def on(ax):
            from matplotlib.ticker import MaxNLocator

            plot.lines(ax, part, "K (refinement steps)", y, colours, hue="method", legend="method",
                       at="K (refinement steps)")
            ax.set_ylabel(ylabel)
            ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        return on

    panels = []
    for key, part in common.split_by(st, common.CONDITION):
        panels += [(f"{common.condition_name(key)}: accuracy", panel(part, "test top-1 (%)", "test top-1 (%)")),
                   (f"{common.condition_name(key)}: cost",
                    panel(part, "training images/s", "training images/s\n(all images trained ÷ training time)"))]
    return plot.panel_grid(panels, TITLE, ncols=2, size=(5.2, 3.4))
