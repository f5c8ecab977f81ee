"""Progressive Self-Knowledge Distillation (``pskd``): Kim, Ji, Yoon & Hwang, "Self-Knowledge Distillation with
Progressive Refinement of Targets", ICCV 2021. Official code: https://github.com/lgcnsai/PS-KD-Pytorch
(``main.py``, ``loss/pskd_loss.py``).

Equation (paper Eq. 4-5, official ``train``): for sample i at 0-based epoch t,

    ỹ_i(t) = (1 − α_t)·onehot(y_i) + α_t·p̂_i(t−1),    α_t = α_T·(t + 1)/T,
    L = −(1/B) Σ_i Σ_k ỹ_ik(t)·log softmax(z_i)_k          (soft-target cross-entropy, no temperature)

where T is the number of training epochs (``train.epochs``) and p̂_i(t−1) is sample i's softmax from the
previous epoch. As in the official code:

* p̂ is the *train-mode* softmax of the augmented view seen in the previous epoch, written after the optimizer
  step from the logits of the forward pass that produced the loss (the engine hands ``after_step`` those
  pre-step logits; nothing is recomputed). The write is per sample, so a sample's row always holds its most
  recent prediction.
* Epoch 0 trains on the one-hot label: the official code writes onehot(y_i) into the memory before mixing at
  epoch 0; we initialise the memory with the one-hot training labels, which gives the same targets
  (and keeps a defined row for a sample that ``data.drop_last`` skips in some epoch).
* α_T = 0.8 is the paper's CIFAR-100 value; ``alpha_T`` sweeps it.

Our choices:

* The memory (N × K float32, N = training-split size) is a registered buffer on the training device, so it is
  in ``method.state_dict()`` and hence in every checkpoint; a resumed run continues from the exact memory
  (the official code also checkpoints it, as ``prev_predictions``).
* Labels are the training labels as trained on (noisy in a noise scenario), as the official code's ``targets``.
* Official recipe (CIFAR-100, PreAct ResNet-18, SGD 0.1 Nesterov, wd 5e-4, ×0.1 at 150/225 of 300 epochs,
  batch 128): ``config/pskd-cifar100.yaml``.

:class:`ProgressiveTargets` holds the memory and the target rule in one place; AI-KD (``aikd.py``) reuses it.
"""
from __future__ import annotations

from dataclasses import dataclass

from icp.methods.options import ProgressiveOptions, declare


@dataclass
class PSKDOptions(ProgressiveOptions):
    """PS-KD's one option, α_T (:class:`icp.methods.options.ProgressiveOptions`, which AI-KD extends)."""


declare({"pskd": PSKDOptions})  # the torch-free registry (icp grid, the Snakefile) reads this file up to here


import torch
import torch.nn.functional as F
from torch import nn

from icp.methods import register
from icp.methods.base import Batch, Method, MethodContext, TrainOutput


def soft_cross_entropy(logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """−(1/B) Σ_i Σ_k target_ik·log softmax(logits_i)_k (the official ``Custom_CrossEntropy_PSKD``)."""
    return F.cross_entropy(logits.float(), target)


class ProgressiveTargets(nn.Module):
    """PS-KD's per-sample memory of past softmax predictions and its progressive soft-target rule."""

    def __init__(self, train_labels: torch.Tensor, num_classes: int, epochs: int, alpha_T: float):
        super().__init__()
        self.num_classes, self.epochs, self.alpha_T = num_classes, epochs, alpha_T
        # Epoch 0 reads the one-hot label (official: onehot written into the memory at epoch 0).
        self.register_buffer("memory", F.one_hot(train_labels.long(), num_classes).float())

    def alpha(self, epoch: int) -> float:
        """α_t = α_T·(t + 1)/T for the 0-based epoch t."""
        return self.alpha_T * (epoch + 1) / self.epochs

    def previous(self, index: torch.Tensor) -> torch.Tensor:
        """p̂(t−1): the stored rows of the given samples (one-hot before the first write)."""
        return self.memory[index]

    def target(self, y: torch.Tensor, knowledge: torch.Tensor, epoch: int) -> torch.Tensor:
        """(1 − α_t)·onehot(y) + α_t·knowledge."""
        a = self.alpha(epoch)
        return (1 - a) * F.one_hot(y, self.num_classes).to(knowledge.dtype) + a * knowledge

    @torch.no_grad()
    def record(self, index: torch.Tensor, logits: torch.Tensor) -> None:
        """Store softmax(logits) as the samples' latest prediction."""
        self.memory[index] = logits.detach().float().softmax(1)


@register
class ProgressiveSelfKD(Method):
    """PS-KD (Kim et al., ICCV 2021): soft targets mixing the label with last epoch's own predictions."""

    name = "pskd"
    Options = PSKDOptions

    def __init__(self, model: nn.Module, options: PSKDOptions, ctx: MethodContext):
        super().__init__(model, options, ctx)
        self.progress = ProgressiveTargets(ctx.train_labels, ctx.num_classes, ctx.epochs, options.alpha_T)

    def forward_train(self, batch: Batch, epoch: int) -> TrainOutput:
        logits = self.model(batch.x)
        target = self.progress.target(batch.y, self.progress.previous(batch.index), epoch)
        return TrainOutput(logits, {"pskd": soft_cross_entropy(logits, target)})

    def after_step(self, batch: Batch, out: TrainOutput, epoch: int) -> None:
        self.progress.record(batch.index, out.logits)
