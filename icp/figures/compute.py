"""Figure ``compute``: test top-1 against training compute, the runs of study main; :func:`compute_curves` draws it
for any study."""
from __future__ import annotations

from typing import Optional, Sequence

import pandas as pd

from icp.figures import common, plot

NAME = "compute"
STUDY = "main"
CAPTION = ("Test top-1 vs training compute through each epoch, in ce epochs (each epoch's step cost in ce steps, "
           "summed: 1 for ce and in ICP's warm-up, (2K + 4)/3 after; ``icp.methods.options.epoch_costs``), mean ± "
           "sd over seeds: the ICP variants, the α-only control (``icp+steps=0``), ce and the FLOP-matched ce "
           "(``ce+budget=...``) in one panel per dataset, model and scenario, a line per variant and training "
           "length; every other method a labelled point (last-epoch top-1, mean ± sd) at its whole training compute "
           "(its FLOPs, counted where results/reference/flops.csv differs from the declaration), so each sits beside "
           "ce's accuracy against compute, which ce and its FLOP-matched controls trace. At equal compute, a method "
           "is judged against that curve.")


def title(study: str) -> str:
    return (f"Study {study}: test top-1 vs training compute (ce epochs: each epoch's step cost in ce steps, "
            "summed; mean ± sd over seeds; n = seeds per line in each panel)")


def nothing(study: str) -> str:
    return f"no complete ICP or ce run of study {study} yet"


TITLE = title(STUDY)
EMPTY = nothing(STUDY)


def end_points(done: pd.DataFrame, epochs: pd.DataFrame) -> pd.DataFrame:
    """Per panel and variant of ``done`` (complete runs): last-epoch test top-1 (%, mean and sd over seeds) at
    the run's whole training compute in ce epochs (:func:`icp.figures.common.with_compute`)."""
    panel = list(common.PANEL)
    ep = epochs[epochs.run_id.isin(done.run_id)]
    if ep.empty:
        return pd.DataFrame(columns=[*panel, "label", "x", "y", "sd"])
    last = ep.loc[ep.groupby("run_id").epoch.idxmax()]
    last = common.with_compute(last, done)
    last = last.assign(y=last.test_top1.astype(float) * 100)
    return (last.groupby([*panel, "variant"], sort=True)
            .agg(x=("compute", "mean"), y=("y", "mean"), sd=("y", "std")).reset_index()
            .rename(columns={"variant": "label"}))


def compute_curves(runs, epochs, study: str, methods: Optional[Sequence[str]] = (*common.ICP_METHODS, "ce")):
    """Test top-1 of the complete runs of ``study`` (of ``methods``; None: all) against their training compute
    through each epoch (:func:`icp.figures.common.with_compute`): one panel per dataset, model and scenario, a
    line per variant and training length (mean ± sd over seeds)."""
    done = common.complete(runs, study)
    if methods is not None:
        done = done[done.method.isin(methods)]
    ep = epochs[epochs.run_id.isin(done.run_id)].copy()
    if ep.empty:
        return plot.empty(title(study), nothing(study))
    ep = common.with_compute(common.with_epochs(ep, done), done)
    x = "training compute (ce epochs)"
    ep[x] = ep.compute
    others = common.complete(runs, study)
    others = others[~others.run_id.isin(done.run_id)]  # every other method: a point at its training compute
    return plot.top1_panels(ep, x, title(study), dict(left=0), end_points(others, epochs) if len(others) else None)


def draw(runs, epochs, ctx):
    return compute_curves(runs, epochs, STUDY)
