"""``vae``: a convolutional VAE (:class:`ConvVAE`, Kingma & Welling, ICLR 2014) for the ICP paper's generative
experiment (docs/generative.md): encoder stages tapped like the classifiers' stages, options ``image_size`` (the
data's, filled in from it), ``latent``, ``width`` and ``beta``. A generative model: no classifier head, trained
with its own objective.
"""
from __future__ import annotations

import numbers

from icp.models import declare, register


def options(image_size: int = 28, latent: int = 32, width: int = 32, beta: float = 1.0) -> None:
    if not all(isinstance(v, numbers.Integral) for v in (image_size, latent, width)):
        raise ValueError(f"image_size, latent and width must be integers, got {image_size!r}, {latent!r}, {width!r}")
    if image_size % 4 or image_size < 8:
        raise ValueError(f"image_size must be a multiple of 4 and >= 8, got {image_size}")
    if latent < 1 or width < 1 or not beta >= 0:
        raise ValueError(f"latent and width must be >= 1 and beta >= 0, got {latent}, {width}, {beta}")


declare({"vae": options}, generative=True)  # the torch-free registry (icp grid, the Snakefile) reads up to here

import torch  # noqa: E402  (after declare: the grid reads the options without torch)
import torch.nn as nn  # noqa: E402
import torch.nn.functional as F  # noqa: E402

from icp.models.base import check_in_channels  # noqa: E402


class VAEOutput(tuple):
    """``(recon, mu, logvar)``: the reconstruction in the normalised input space and the posterior q(z|x)."""

    __slots__ = ()

    def __new__(cls, recon, mu, logvar):
        return super().__new__(cls, (recon, mu, logvar))

    recon = property(lambda self: self[0])
    mu = property(lambda self: self[1])
    logvar = property(lambda self: self[2])


def _down(cin: int, cout: int, stride: int) -> nn.Module:
    k = 4 if stride == 2 else 3
    return nn.Sequential(nn.Conv2d(cin, cout, k, stride, 1, bias=False), nn.BatchNorm2d(cout), nn.ReLU(inplace=True))


def _up(cin: int, cout: int) -> nn.Module:
    return nn.Sequential(nn.ConvTranspose2d(cin, cout, 4, 2, 1, bias=False), nn.BatchNorm2d(cout),
                         nn.ReLU(inplace=True))


class ConvVAE(nn.Module):
    """A convolutional VAE (Kingma & Welling, ICLR 2014) for the ICP paper's generative experiment.

    Encoder: three tapped stages ``stage1`` (stride 2, ``width`` channels), ``stage2`` (stride 2, 2·width),
    ``stage3`` (stride 1, 4·width), then linear maps to μ and log σ² of a ``latent``-dimensional diagonal
    Gaussian q(z|x) (the log σ² layer starts at zero and is clamped to [−10, 10]). Decoder: linear to
    4·width × (H/4)², two stride-2 transposed convolutions, a 3×3 conv to the input channels, no output
    activation: it reconstructs the *normalised* input (the space ICP refines in).
    H and W must be multiples of 4 (28×28 Fashion-MNIST, 64×64 CUB). Taps are ``feature_names`` as in the
    classifiers; ``feats["pool"]`` is μ.

    ``forward`` samples z = μ + σ·ε in train mode and takes z = μ in eval mode (so the refinement, run in eval
    mode, is deterministic). :meth:`objective` is the negative ELBO with a unit-variance Gaussian decoder:
    recon = ½‖x̂ − x‖² summed over pixels (constants dropped), KL = KL(q(z|x) ‖ N(0, I)), loss = recon + β·KL
    per sample (``beta`` option; β = 1 is the ELBO, Higgins et al. 2017 for β ≠ 1).
    """

    generative = True

    def __init__(self, num_classes: int = 0, in_channels: int = 1, image_size: int = 28, latent: int = 32,
                 width: int = 32, beta: float = 1.0):
        super().__init__()
        check_in_channels(in_channels)
        options(image_size, latent, width, beta)
        self.in_channels, self.image_size, self.latent, self.beta = in_channels, image_size, latent, float(beta)
        self.num_classes = int(num_classes)
        widths = (width, 2 * width, 4 * width)
        self.feature_names = ("stage1", "stage2", "stage3")
        self.feature_channels = dict(zip(self.feature_names, widths))
        self.stages = nn.ModuleList([_down(in_channels, widths[0], 2), _down(widths[0], widths[1], 2),
                                     _down(widths[1], widths[2], 1)])
        self.side = image_size // 4
        flat = widths[2] * self.side * self.side
        self.to_mu, self.to_logvar = nn.Linear(flat, latent), nn.Linear(flat, latent)
        nn.init.zeros_(self.to_logvar.weight)  # start from σ = 1 (log σ² = bias ≈ 0)
        nn.init.zeros_(self.to_logvar.bias)
        self.from_z = nn.Linear(latent, flat)
        self.decoder = nn.Sequential(_up(widths[2], widths[1]), _up(widths[1], widths[0]),
                                     nn.Conv2d(widths[0], in_channels, 3, 1, 1))
        self.width = width

    def encode(self, x: torch.Tensor):
        taps, out = [], x
        for stage in self.stages:
            out = stage(out)
            taps.append(out)
        flat = torch.flatten(out, 1)
        # log σ² kept in [-10, 10]: exp() of an untrained layer's output would overflow the KL term
        return self.to_mu(flat), self.to_logvar(flat).clamp(-10.0, 10.0), taps

    def decode(self, z: torch.Tensor) -> torch.Tensor:
        h = self.from_z(z).view(-1, 4 * self.width, self.side, self.side)
        return self.decoder(F.relu(h))

    def forward(self, x: torch.Tensor, features: bool = False):
        mu, logvar, taps = self.encode(x)
        z = mu + torch.randn_like(mu) * (0.5 * logvar).exp() if self.training else mu
        out = VAEOutput(self.decode(z), mu, logvar)
        if not features:
            return out
        feats = dict(zip(self.feature_names, taps))
        feats["pool"] = mu
        return out, feats

    @staticmethod
    def terms(out: VAEOutput, target: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Per-sample (recon, KL): ½ Σ (x̂ − x)² over pixels, and KL(N(μ, σ²) ‖ N(0, I)) over latents."""
        recon = 0.5 * (out.recon.float() - target.float()).pow(2).flatten(1).sum(1)
        kl = -0.5 * (1 + out.logvar.float() - out.mu.float().pow(2) - out.logvar.float().exp()).sum(1)
        return recon, kl

    def objective(self, out: VAEOutput, target: torch.Tensor, reduction: str = "mean") -> torch.Tensor:
        """recon + β·KL per sample, averaged (``mean``) or summed (``sum``) over the batch."""
        recon, kl = self.terms(out, target)
        loss = recon + self.beta * kl
        return loss.sum() if reduction == "sum" else loss.mean()

    @torch.no_grad()
    def sample(self, n: int, generator: torch.Generator | None = None) -> torch.Tensor:
        """n decoded prior samples z ~ N(0, I) (normalised input space)."""
        device = self.to_mu.weight.device
        z = torch.randn(n, self.latent, generator=generator).to(device)
        return self.decode(z)


@register("vae")
def vae(num_classes: int = 0, in_channels: int = 1, image_size: int = 28, latent: int = 32, width: int = 32,
        beta: float = 1.0) -> ConvVAE:
    return ConvVAE(num_classes, in_channels, image_size, latent, width, beta)
