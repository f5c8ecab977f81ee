"""Teacher-free KD with a manually designed teacher (``tfkd``, TF-KD-reg): Yuan, Tay, Li, Wang & Feng,
"Revisiting Knowledge Distillation via Label Smoothing Regularization", CVPR 2020, Sec. 4 (Tf-KD_reg).
Official code: https://github.com/yuanli2333/Teacher-free-Knowledge-Distillation, ``my_loss_function.py``
(``loss_kd_regularization``), hyper-parameters from ``experiments/base_experiments/base_resnet18/params.json``.

The hand-made teacher puts a on the true class and (1 − a)/(K − 1) on every other class (paper Eq. 9, a = 0.99),
and the official code then softens *these probabilities* with a softmax at temperature T:

    p^d_k = a if k = y else (1 − a)/(K − 1),      q = softmax(p^d / T)
    L = (1 − α)·CE(z, y) + α·m·KLmean(q ‖ softmax(z))

with α = ``reg_alpha`` = 0.1, T = ``reg_temperature`` = 20 and m = ``multiplier`` = 100 (ResNet-18, CIFAR-100).
We implement exactly the official behaviour, which differs from the paper's text in three ways:

* the softmax is applied to probabilities, not to logits, so q is nearly uniform: the true class gets
  e^{a/T} / (e^{a/T} + (K − 1)·e^{(1−a)/((K−1)T)}) ≈ 0.0105 for K = 100 (uniform: 0.0100) and ≈ 0.104 for
  K = 10 (uniform: 0.100);
* the student's log-softmax is taken at temperature 1, and there is no T² factor;
* ``nn.KLDivLoss()`` with its default ``reduction='mean'`` averages over all B·K elements, i.e. it is the
  per-sample KL divided by K as well as by B.

Numerically the regulariser is therefore (α·m/K)·KL(q ‖ p) with q ≈ uniform, i.e. label smoothing towards
(almost) the uniform distribution: the loss equals, up to a constant, the cross-entropy against the target
((1 − α)·onehot + (α·m/K)·q) / (1 − α + α·m/K). For CIFAR-100 (K = 100) the uniform weight α·m/K is 0.1,
close to label smoothing with ε ≈ 0.1 at an unchanged loss scale; for a 10-class set it is 1.0, i.e. ε ≈ 0.53
with the loss (and so the effective learning rate) scaled by 1.9 — the official setting regularises 10-class
data much harder. ``multiplier`` can be rescaled to compensate; the default keeps the official value.
"""
from __future__ import annotations

from dataclasses import dataclass

from icp.schema import ConfigError
from icp.methods.options import Cost, declare


@dataclass
class TFKDOptions(Cost):
    alpha: float = 0.1  # α, weight of the regulariser ((1 − α) on the CE), official reg_alpha for ResNet-18
    temperature: float = 20.0  # T applied to the teacher's probabilities, official reg_temperature for ResNet-18
    multiplier: float = 100.0  # m, official multiplier for ResNet-18
    correct_prob: float = 0.99  # a, the hand-made teacher's probability of the true class

    def __post_init__(self):
        checks = {"alpha": (0.0 <= self.alpha <= 1.0, "a number in [0, 1]"),
                  "temperature": (self.temperature > 0, "a number > 0"),
                  "multiplier": (self.multiplier >= 0, "a number >= 0"),
                  "correct_prob": (0.0 < self.correct_prob < 1.0, "a number in (0, 1)")}
        for key, (ok, expected) in checks.items():
            if not ok:
                raise ConfigError(f"method.options.{key}: expected {expected}, got {getattr(self, key)!r}")


declare({"tfkd": TFKDOptions})  # the torch-free registry (icp grid, the Snakefile) reads this file up to here


import torch
import torch.nn.functional as F

from icp.methods import register
from icp.methods.base import Batch, Method, TrainOutput


def manual_teacher(y: torch.Tensor, num_classes: int, correct_prob: float, temperature: float) -> torch.Tensor:
    """q = softmax(p^d / T) with p^d = correct_prob on the true class and the rest spread evenly."""
    p = torch.full((len(y), num_classes), (1 - correct_prob) / (num_classes - 1), device=y.device)
    p.scatter_(1, y.view(-1, 1), correct_prob)
    return (p / temperature).softmax(1)


@register
class TeacherFreeKD(Method):
    """TF-KD-reg (Yuan et al., CVPR 2020): KL to a hand-made, temperature-softened teacher (official code)."""

    name = "tfkd"
    Options = TFKDOptions

    def forward_train(self, batch: Batch, epoch: int) -> TrainOutput:
        o = self.options
        logits = self.model(batch.x)
        q = manual_teacher(batch.y, logits.shape[1], o.correct_prob, o.temperature)
        log_p = logits.float().log_softmax(1)
        kl_mean = (q * (q.log() - log_p)).sum() / q.numel()  # nn.KLDivLoss(reduction='mean'): over B·K elements
        return TrainOutput(logits, {"ce": (1 - o.alpha) * F.cross_entropy(logits.float(), batch.y),
                                    "reg": o.alpha * o.multiplier * kl_mean})
