"""Figure ``generative_curves``: the VAE runs' test SSIM, ELBO and FID per epoch, study generative."""
from __future__ import annotations

from icp.figures import common, plot

NAME = "generative_curves"
STUDY = "generative"
CAPTION = "Test SSIM, ELBO and FID of reconstructions vs epoch per variant; a row of panels per condition; mean ± sd over seeds, n seeds per variant in each panel's legend."
TITLE = "Study generative: test metrics vs epoch (mean ± sd over seeds)"
EMPTY = "no complete VAE run of study generative yet"


def draw(runs, epochs, ctx):
    done = common.complete_vaes(runs)
    ep = epochs[epochs.run_id.isin(done.run_id)].copy()
    if ep.empty:
        return plot.empty(TITLE, EMPTY)
    ep = common.with_epochs(ep, done)
    ep["SSIM (%)"] = ep.test_ssim * 100
    names = {"SSIM (%)": "SSIM (%) ↑", "test_elbo": "ELBO (nats) ↑", "test_fid_recon": "FID of reconstructions ↓"}
    colours = plot.colours(ep.variant)

    def panel(part, y):
        def on(ax):
            plot.lines(ax, part, "epoch", y, colours)
            ax.set(xlabel="epoch", ylabel=names[y])
        return on

    panels = []
    for key, part in common.split_by(ep, common.CONDITION):
        for y, name in names.items():
            # FIDs are null on epochs that train.fid_every skips, or without features
            part_y = part.dropna(subset=[y])
            if part_y.empty:
                panels.append(None)
            else:
                panels.append((f"{common.condition_name(key)}: {name}", panel(part_y, y)))
    return plot.panel_grid(panels, TITLE, ncols=len(names), size=(4.4, 3.2))
