"""Mixup (``mixup``), the control for the mixup-based methods: Zhang, Cisse, Dauphin & Lopez-Paz, "mixup: Beyond
Empirical Risk Minimization", ICLR 2018, Eq. 1 (x̃ = λ·x_i + (1 − λ)·x_j, ỹ = λ·y_i + (1 − λ)·y_j, λ ~ Beta(α, α)).
Official code: https://github.com/facebookresearch/mixup-cifar10 (``train.py``: ``mixup_data``,
``mixup_criterion``).

Each step draws one λ ~ Beta(α, α) and one random permutation π of the batch, trains on the B mixed images
x̃ = λ·x + (1 − λ)·x[π] alone (the clean images are not fed), and minimises

    L = λ·CE(z̃, y) + (1 − λ)·CE(z̃, y[π])

(the official ``mixup_criterion``; equal to the cross-entropy with the mixed one-hot target ỹ of Eq. 1). One
forward and one backward of B images: a ``ce`` step.

α = 0.4: MixSKD's mixup α in this project (``icp/methods/mixskd.py``, ``mixup_alpha`` 0.4, the official MixSKD
CIFAR script's ``--mixup-alpha``), so that ``mixup`` is the control for MixSKD's augmentation: the same mixup
images, without MixSKD's branches, self-teacher and distillation. (The mixup paper's CIFAR runs use α = 1, the
official script's ``--alpha`` default.)

Randomness: λ and π are drawn from torch's CPU generator, as MixSKD draws them (not ``np.random``, as the official
code does); the engine seeds it at every epoch, so a resumed run draws the same λ and π as an uninterrupted one.
α must be > 0 (the official code sets λ = 1, plain ERM, at α = 0: that is ``ce``).

Bookkeeping: the returned logits are the mixed images', scored against y: training accuracy is that of the mixed
images against y, not the official λ-weighted count of matches with y and y[π]; loss averages and images/s count
the B images of the step, as ``ce``'s.
"""
from __future__ import annotations

from dataclasses import dataclass

from icp.schema import ConfigError
from icp.methods.options import Cost, declare


@dataclass
class MixupOptions(Cost):
    alpha: float = 0.4  # α of λ ~ Beta(α, α), one λ per step (MixSKD's mixup_alpha here; the mixup paper's CIFAR: 1)

    def __post_init__(self):
        if not (isinstance(self.alpha, (int, float)) and self.alpha > 0):
            raise ConfigError(f"method.options.alpha: expected a number > 0, got {self.alpha!r}")


declare({"mixup": MixupOptions})  # the torch-free registry (icp grid, the Snakefile) reads this file up to here


import torch
import torch.nn.functional as F

from icp.methods import register
from icp.methods.base import Batch, Method, TrainOutput


def mixup_loss(logits: torch.Tensor, y: torch.Tensor, lam: float, perm: torch.Tensor) -> torch.Tensor:
    """λ·CE(z̃, y) + (1 − λ)·CE(z̃, y[π]), the official ``mixup_criterion``."""
    logits = logits.float()
    return lam * F.cross_entropy(logits, y) + (1 - lam) * F.cross_entropy(logits, y[perm])


def draw(alpha: float, batch_size: int) -> tuple[float, torch.Tensor]:
    """One λ ~ Beta(α, α) and one permutation of the batch, from torch's (engine-seeded) CPU generator."""
    a = torch.tensor(float(alpha))
    lam = float(torch.distributions.Beta(a, a).sample())  # CPU generator: no device sync
    return lam, torch.randperm(batch_size)


@register
class Mixup(Method):
    """Mixup (Zhang et al., ICLR 2018): train on convex combinations of pairs of images and of their labels."""

    name = "mixup"
    Options = MixupOptions

    def forward_train(self, batch: Batch, epoch: int) -> TrainOutput:
        x, y = batch.x, batch.y
        lam, perm = draw(self.options.alpha, len(y))
        perm = perm.to(x.device)
        logits = self.model(lam * x + (1 - lam) * x[perm])
        return TrainOutput(logits, {"mixup": mixup_loss(logits, y, lam, perm)})
