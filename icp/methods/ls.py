"""Label smoothing (``ls``): Szegedy et al., "Rethinking the Inception Architecture", CVPR 2016, Sec. 7.

The one-hot target is replaced by q' = (1 − ε)·onehot(y) + ε/K (the smoothing mass is spread uniformly over all
K classes, the true one included), and the loss is the cross-entropy H(q', softmax(z)). This is exactly
``torch.nn.functional.cross_entropy(z, y, label_smoothing=ε)``.
"""
from __future__ import annotations

import torch.nn.functional as F

from icp.methods import register
from icp.methods.base import Batch, Method, TrainOutput
from icp.methods.options import LSOptions


@register
class LabelSmoothing(Method):
    name = "ls"
    Options = LSOptions

    def forward_train(self, batch: Batch, epoch: int) -> TrainOutput:
        logits = self.model(batch.x)
        return TrainOutput(logits, {"ls": F.cross_entropy(logits, batch.y, label_smoothing=self.options.epsilon)})
