"""Figure ``input_shift``: how far ICP moves the input per epoch, from its runs of studies main, ablations and
steps (it draws whichever recorded a shift, and says itself when none did)."""
from __future__ import annotations

import pandas as pd

from icp.figures import common, plot

NAME = "input_shift"
STUDY = "main"
CAPTION = ("How far ICP moves the input: mean ``|x_K − x|`` per epoch, per variant; one panel per condition.")
EMPTY = None  # it draws the ICP runs of three studies: main's may not be complete yet


def title(shown: list[str]) -> str:
    return ("How far ICP moves the input: mean |x_K − x| per epoch (normalised units, mean ± sd over seeds; "
            f"stud{'y' if len(shown) == 1 else 'ies'} {', '.join(shown or ['main'])})")


TITLE = title([])


def draw(runs, epochs, ctx):
    frames = {s: common.icp_epochs(runs, epochs, s) for s in ("main", "ablations", "steps")}
    shown = [s for s, f in frames.items() if not f.empty and (f.get("diag.input_shift", pd.Series()) > 0).any()]
    ep = pd.concat([frames[s] for s in shown]).drop_duplicates(["run_id", "epoch"]) if shown else pd.DataFrame()
    if ep.empty:
        return plot.empty(title(shown), "no complete ICP run with refinement yet")
    ep = ep[ep["diag.input_shift"] > 0].copy()  # K = 0 moves nothing: no point on a log axis
    # a log axis only where the shifts span more than a factor of ten; a narrow range reads better on a linear one
    log = ep["diag.input_shift"].max() / ep["diag.input_shift"].min() > 10
    return plot.curves(ep, "diag.input_shift", title(shown), log=log,
                       ylabel=f"mean |x_K − x| (normalised units{', log' if log else ''})")
