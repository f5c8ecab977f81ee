"""Plain cross-entropy training: the baseline every method is compared with (``ce``)."""
from __future__ import annotations

from icp.methods.options import NoOptions, declare

declare({"ce": NoOptions})  # the torch-free registry (icp grid, the Snakefile) reads this file up to here


import torch.nn.functional as F

from icp.methods import register
from icp.methods.base import Batch, Method, TrainOutput


@register
class CrossEntropy(Method):
    """L = CE(f(x), y), the mean negative log-likelihood of the (possibly noisy) training label."""

    name = "ce"

    def forward_train(self, batch: Batch, epoch: int) -> TrainOutput:
        logits = self.model(batch.x)
        return TrainOutput(logits, {"ce": F.cross_entropy(logits, batch.y)})
