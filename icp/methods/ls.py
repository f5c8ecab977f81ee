"""Label smoothing (``ls``): Szegedy et al., "Rethinking the Inception Architecture", CVPR 2016, Sec. 7.

The one-hot target is replaced by q' = (1 − ε)·onehot(y) + ε/K (the smoothing mass is spread uniformly over all
K classes, the true one included), and the loss is the cross-entropy H(q', softmax(z)). This is exactly
``torch.nn.functional.cross_entropy(z, y, label_smoothing=ε)``.
"""
from __future__ import annotations

from dataclasses import dataclass

from icp.schema import ConfigError
from icp.methods.options import Cost, declare


@dataclass
class LSOptions(Cost):
    epsilon: float = 0.1  # smoothing mass ε (the paper's 0.1)

    def __post_init__(self):
        if not 0.0 <= self.epsilon < 1.0:
            raise ConfigError(f"method.options.epsilon: expected a number in [0, 1), got {self.epsilon!r}")


declare({"ls": LSOptions})  # the torch-free registry (icp grid, the Snakefile) reads this file up to here


import torch.nn.functional as F

from icp.methods import register
from icp.methods.base import Batch, Method, TrainOutput


@register
class LabelSmoothing(Method):
    name = "ls"
    Options = LSOptions

    def forward_train(self, batch: Batch, epoch: int) -> TrainOutput:
        logits = self.model(batch.x)
        return TrainOutput(logits, {"ls": F.cross_entropy(logits, batch.y, label_smoothing=self.options.epsilon)})
