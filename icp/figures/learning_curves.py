"""Figure ``learning_curves``: test top-1 against training progress, the runs of study main."""
from __future__ import annotations

from icp.figures import common, plot

NAME = "learning_curves"
STUDY = "main"
CAPTION = ("Test top-1 vs training progress (epoch ÷ the run's epochs, %), mean ± sd over seeds as error bars, a line "
           "per variant and training length (its length and n seeds in the legend; lines nudged apart along x by "
           "at most 1.5 % so that points at one epoch do not hide each other); one panel per dataset, model and scenario, so that the compute-matched "
           "ce (``ce+budget=...``, trained for more epochs) and the α-only control (``icp+steps=0``) sit beside the "
           "ICP run they judge. Progress rather than epochs puts runs of different lengths on one axis; the "
           "``compute`` figure draws the same runs against their training compute.")
TITLE = "Study main: test top-1 vs training progress (mean ± sd over seeds)"


def draw(runs, epochs, ctx):
    done = common.complete(runs, STUDY)
    ep = common.with_epochs(epochs[epochs.run_id.isin(done.run_id)].copy(), done)
    x = "training progress (% of the run's epochs)"
    ep[x] = 100 * ep.epoch / ep.epochs
    return plot.top1_panels(ep, x, TITLE, dict(left=0, right=102), dodge=3.0)  # ±1.5 % of training
