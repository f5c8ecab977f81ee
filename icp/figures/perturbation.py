"""Figure ``perturbation`` (the paper's Fig. 1): constructive (ICP) and destructive (i-FGSM) perturbations of test
images, from the arrays that a trained ICP run of study main wrote (:mod:`icp.figure_data`)."""
from __future__ import annotations

import json
from typing import Optional

import numpy as np
import pandas as pd

from icp.figure_data import refines  # a constructive ICP run that refines its input
from icp.figures import common, plot

NAME = "perturbation"
STUDY = "main"
CAPTION = ("Original, ICP-refined and i-FGSM images and their amplified differences (the paper's Fig. 1), from a "
           "trained ICP checkpoint; refined as one training-size batch, so each image's step equals training's. "
           "The colour scale ends at the largest difference, so nothing is clipped; the maps look speckled because "
           "Adam's and i-FGSM's steps have about the same size for every pixel, only their signs vary.")
TITLE = "Constructive (ICP) vs destructive (i-FGSM) perturbations of test images"
EMPTY = "no complete ICP run of study main on clean data yet"


def perturbation_run(runs: pd.DataFrame) -> Optional[pd.Series]:
    """The run whose checkpoint the perturbation figure uses: the first complete ICP run of study main on clean
    data (seed 0 where there is one)."""
    done = common.complete(runs, STUDY)
    refined = [refines(m, json.loads(o or "{}")) for m, o in zip(done.method, done.method_options)]
    done = done[pd.Series(refined, index=done.index, dtype=bool) & (done.scenario == "clean")]
    return None if done.empty else done.sort_values(["seed"], kind="stable").iloc[0]


def checkpoints(grid) -> list:
    """The grid run whose trained model it reads: the first ICP run of study main on clean data."""
    for run in grid.select(STUDY) if STUDY in grid.studies else []:
        if refines(run.method, dict(run.options)) and run.scenario == "clean":
            return [run]
    return []


def draw(runs, epochs, ctx, n_images: int = 6):
    plt, _ = plot.libs()
    from icp import figure_data

    run = perturbation_run(runs)
    if run is None:
        return plot.empty(TITLE, EMPTY)
    got = figure_data.get_arrays(run.path, "perturbation")  # written by the run's job (icp.figure_data)
    batch, refined = int(got["batch"]), int(got["refined"])
    n_images = min(n_images, len(got["original"]))
    conf = {k: got[f"p.{k}"] for k in ("original", "ICP", "i-FGSM")}
    base = got["original"]
    diffs = {"ICP": got["ICP"] - base, "i-FGSM": got["i-FGSM"] - base}
    scale = max(float(np.abs(d).max()) for d in diffs.values()) or 1.0  # one colour scale for both rows
    rows = [("original", base, "original"), ("ICP-refined", got["ICP"], "ICP"),
            ("ICP − original", diffs["ICP"], None), ("i-FGSM", got["i-FGSM"], "i-FGSM"),
            ("i-FGSM − original", diffs["i-FGSM"], None)]
    fig, axes = plt.subplots(len(rows), n_images, figsize=(1.8 * n_images, 2.0 * len(rows) + 0.9), squeeze=False,
                             layout="constrained")
    for i, (label, imgs, key) in enumerate(rows):
        for j in range(n_images):
            ax = axes[i, j]
            if key is None:  # a difference: signed, averaged over channels, amplified to the colour range
                shown = ax.imshow(imgs[j].mean(-1), cmap="coolwarm", vmin=-scale, vmax=scale)
            else:
                im = np.clip(imgs[j], 0, 1)
                ax.imshow(im[..., 0] if im.shape[-1] == 1 else im, cmap="gray" if im.shape[-1] == 1 else None,
                          vmin=0, vmax=1)
                ax.set_xlabel(f"p(y)={conf[key][j]:.2f}", fontsize=8)
            ax.set_xticks([])
            ax.set_yticks([])
            if j == 0:
                ax.set_ylabel(label, fontsize=8)
    fig.colorbar(shown, ax=axes[-1, :].tolist(), orientation="horizontal", shrink=0.6, aspect=40,
                 label=f"refined − original, pixel intensity (0–1 scale), mean over channels; full colour = ±{scale:.2g}, "
                       "the largest |difference| (nothing clipped)\nspeckled by nature: Adam and sign ascent move "
                       "each pixel about ±η a step, whatever the size of its gradient; grey: no change within the shown 0–1 range")
    if refined == batch:
        as_training = (f"refined as one training batch of B={batch} test images, so each image's step equals "
                       "training's")
    else:  # a test split smaller than the training batch
        as_training = f"refined as one batch of all {refined} test images, fewer than training's B={batch}"
        if got["optimizer"] == "sgd" and got["reduction"] == "mean":
            as_training += f", so each image's step is {batch / refined:.2g}× training's"
    fig.suptitle(f"{TITLE}\n{run.run_id}: K={got['steps']}, η={got['step_size']:g} ({got['optimizer']}, loss reduced "
                 f"by {got['reduction']}); i-FGSM: same K and η, sign ascent\n{as_training}; the first {n_images} shown; "
                 f"p(y) = softmax probability of the true class", fontsize=9)
    return fig
