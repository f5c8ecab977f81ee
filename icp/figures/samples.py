"""Figure ``samples``: prior samples of each method's VAE, from the arrays that the VAE runs of study generative
wrote (:mod:`icp.figure_data`)."""
from __future__ import annotations

from icp.figures import common, plot

NAME = "samples"
STUDY = "generative"
CAPTION = "Prior samples of each method's VAE, the same z for all."
TITLE = "Study generative: samples from the prior z ~ N(0, I), the same z for every method"
EMPTY = "no complete VAE run of study generative yet"
checkpoints = common.vae_checkpoints  # the VAE run of the lowest seed per dataset and variant


def draw(runs, epochs, ctx, n_images: int = 8):
    def row(dataset, run, got):
        fid = "–" if run.fid_prior != run.fid_prior else f"{float(run.fid_prior):.1f}"
        return f"{dataset}: {run.variant} (s{run.seed})\nFID(prior) {fid}", got["samples"][:n_images]

    return plot.vae_grid(runs, TITLE, row, n_images, why=EMPTY)
