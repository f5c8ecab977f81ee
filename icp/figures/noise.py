"""Figure ``noise``: last-epoch test top-1 against the label-noise rate, the runs of study noisy."""
from __future__ import annotations

import re

import pandas as pd

from icp.figures import common, plot

NAME = "noise"
STUDY = "noisy"
CAPTION = ("Last-epoch test top-1 vs label-noise rate, a line per variant and training length (clean = 0, from the "
           "clean runs of the same variant and length), symmetric and asymmetric noise as line styles where a panel has both; one "
           "panel per dataset and model, controls beside the runs they judge; n = seeds per point, each line's "
           "training length in its legend.")
TITLE = "Study noisy: last-epoch test top-1 vs label-noise rate (mean ± sd over seeds)"


def _rate(tag: str) -> tuple[str, float]:
    m = re.match(r"^(sym|asy)([0-9.]+)$", tag)
    return (("symmetric" if m[1] == "sym" else "asymmetric"), float(m[2])) if m else ("clean", 0.0)


def draw(runs, epochs, ctx):
    noisy = common.complete(runs, STUDY)
    keys = ["dataset", "model"]  # the scenario is the x-axis here, the training length a line's
    same = [*keys, "variant", "epochs"]
    clean = common.complete(runs, None)
    clean = clean[clean.scenario == "clean"].merge(noisy[same].drop_duplicates(), on=same)  # the noisy runs' own
    df = pd.concat([noisy, clean]).drop_duplicates("run_id").copy()
    kinds = df.scenario.map(_rate)
    df["noise"], df["noise rate (%)"] = [k for k, _ in kinds], [100 * r for _, r in kinds]
    df["test top-1 (%)"] = df.top1.astype(float) * 100
    rows = []
    for kind in ("symmetric", "asymmetric"):  # the clean point starts both curves
        part = df[df.noise.isin(["clean", kind])].assign(noise=kind)
        if (part["noise rate (%)"] > 0).any():
            rows.append(part)
    df = pd.concat(rows) if rows else df
    at = ["noise", "noise rate (%)"]
    df = common.line_per_length(df, keys, at=at)
    colours = plot.colours(df.line)

    def panel(part):
        return lambda ax: plot.lines(ax, part, "noise rate (%)", "test top-1 (%)", colours, hue="line",
                                     style="noise", at=at)

    return plot.panel_grid([(common.condition_name(key), panel(part)) for key, part in common.split_by(df, keys)],
                           TITLE)
