"""Figure ``reconstructions``: test images and each method's VAE reconstructions, from the arrays that the VAE
runs of study generative wrote (:mod:`icp.figure_data`)."""
from __future__ import annotations

from icp.figures import common, plot

NAME = "reconstructions"
STUDY = "generative"
CAPTION = "Test images and each method's VAE reconstructions (the lowest seed)."
TITLE = ("Study generative: test images and their reconstructions (z = μ) per method; "
         "SSIM: the run's last-epoch test mean")
EMPTY = "no complete VAE run of study generative yet"
checkpoints = common.vae_checkpoints  # the VAE run of the lowest seed per dataset and variant


def draw(runs, epochs, ctx, n_images: int = 8):
    def row(dataset, run, got):
        return f"{run.variant} (s{run.seed})\nSSIM {100 * float(run.ssim):.1f}%", got["recon"][:n_images]

    return plot.vae_grid(runs, TITLE, row, n_images, show_inputs=True, why=EMPTY)
