"""Evaluation metrics, computed with torchmetrics on the device and reset before every evaluation.

=========  ==========================================================================================
top1       micro-averaged accuracy (fraction correct)
macro_f1   F1 per class, averaged over classes
precision  macro-averaged precision
recall     macro-averaged recall
nll        mean negative log-likelihood of the true label (cross-entropy, nats)
ece        expected calibration error, 10 equal-width confidence bins, L1 (Guo et al. 2017)
=========  ==========================================================================================

All values are fractions in [0, 1] except ``nll``. Whether larger is better: :data:`HIGHER_IS_BETTER`.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torchmetrics import MeanMetric, MetricCollection
from torchmetrics.classification import (MulticlassAccuracy, MulticlassCalibrationError, MulticlassF1Score,
                                         MulticlassPrecision, MulticlassRecall)

HIGHER_IS_BETTER = {"top1": True, "macro_f1": True, "precision": True, "recall": True, "nll": False, "ece": False}


class EvalMetrics:
    """Accumulates logits/labels over an evaluation pass; ``compute()`` returns plain floats and resets."""

    def __init__(self, num_classes: int, device: torch.device | str = "cpu"):
        k = num_classes
        self.collection = MetricCollection({
            "top1": MulticlassAccuracy(k, average="micro"),
            "macro_f1": MulticlassF1Score(k, average="macro"),
            "precision": MulticlassPrecision(k, average="macro"),
            "recall": MulticlassRecall(k, average="macro"),
            "ece": MulticlassCalibrationError(k, n_bins=10, norm="l1"),
        }).to(device)
        self.nll = MeanMetric().to(device)

    @torch.no_grad()
    def update(self, logits: torch.Tensor, target: torch.Tensor) -> None:
        logits = logits.float()
        self.collection.update(logits.softmax(dim=1), target)
        self.nll.update(F.cross_entropy(logits, target, reduction="none"))

    def compute(self) -> dict[str, float]:
        out = {name: float(value) for name, value in self.collection.compute().items()}
        out["nll"] = float(self.nll.compute())
        self.reset()
        return {k: out[k] for k in HIGHER_IS_BETTER}

    def reset(self) -> None:
        self.collection.reset()
        self.nll.reset()
