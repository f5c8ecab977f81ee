"""Plain VAE training (``vae``): the generative study's baseline (Kingma & Welling, ICLR 2014).

L = mean over the batch of recon + β·KL, the model's own objective (:meth:`icp.models.vae.ConvVAE.objective`: a
unit-variance Gaussian decoder on the normalised input, so recon = ½‖x̂ − x‖²; β is the model option ``beta``).
The reparameterised sample z = μ + σ·ε is drawn in the model's forward (train mode). ICP on the same model
(``icp``, ``icp-sgd``, ``icp-adam``, ``icp-ademamix``) uses this objective as its task loss.
"""
from __future__ import annotations

from icp.methods.options import NoOptions, declare

declare({"vae": NoOptions})  # the torch-free registry (icp grid, the Snakefile) reads this file up to here


from icp.methods import register
from icp.methods.base import Batch, Method, TrainOutput


@register
class VAE(Method):
    """recon + β·KL of a generative model (``model.name: vae``)."""

    name = "vae"
    supports = ("generative",)

    def forward_train(self, batch: Batch, epoch: int) -> TrainOutput:
        out = self.model(batch.x)
        recon, kl = self.model.terms(out, batch.x)
        return TrainOutput(None, {"recon": recon.mean(), "kl": self.model.beta * kl.mean()})
