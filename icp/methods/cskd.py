"""Class-wise Self-Knowledge Distillation (``cskd``): Yun, Park, Lee & Shin, "Regularizing Class-wise Predictions
via Self-knowledge Distillation", CVPR 2020. Official code: https://github.com/alinlab/cs-kd (``train.py``:
``KDLoss`` and the ``--cls`` branch of ``train``; ``datasets.py``: ``PairBatchSampler``).

Every step sees B anchors x_i and, for each, another sample x'_i of the same class; the loss (paper Eq. 2-3) is

    L = CE(z, y) + λ·T²·(1/B) Σ_i KL(softmax(z'_i / T) ‖ softmax(z_i / T)),

where z are the anchors' logits and z' the pairs' logits, computed under ``no_grad`` (the pair branch is a fixed
target). T = 4 and λ = 1 are the paper's defaults (λ = 3 for its fine-grained data sets). As in the official code
the anchors and the pairs go through the network in two separate forward passes in train mode (so BatchNorm
normalises each half with its own statistics and updates its running averages twice per step), and the KL is
``KLDivLoss(reduction='sum') · T² / B``.

Batches (:meth:`ClassWiseSelfKD.batch_sampler`): one shuffled pass over the training split in chunks of B
anchors (seeded from the engine's per-epoch generator, so resume is exact), each followed by its B pairs, so the
loader sees index batches of 2B. Choices and deviations:

* The official sampler draws the pair uniformly from the whole class, so it can pick the anchor itself
  (probability 1/N_c, 0.2 % on CIFAR-100). We draw uniformly among the *other* samples of the class; a class
  with a single training sample (e.g. 1-shot) pairs it with itself, the only choice.
* "Same class" means the training label as trained on (noisy in a noise scenario), as in the official code.
* ``data.drop_last`` applies to the anchors (the official sampler keeps the last, smaller batch).
* Bookkeeping: the method returns the anchors' logits and labels (``TrainOutput.labels``), so training accuracy
  and loss averages are over the anchors, as in the official code, and the engine's images/s counts anchors,
  i.e. samples of the epoch per second. CS-KD feeds 2B images per step (B of them forward-only), which shows as
  a lower images/s and a higher step-time ratio to ``ce`` at the same batch size and number of steps.

Official recipe (CIFAR-100, PreAct ResNet-18, SGD 0.1, momentum 0.9, wd 1e-4, 200 epochs, ÷10 at 50 % and 75 %,
batch 128): ``config/cskd-cifar100.yaml``.
"""
from __future__ import annotations

from dataclasses import dataclass

from icp.schema import ConfigError
from icp.methods.options import Cost, declare


@dataclass
class CSKDOptions(Cost):
    temperature: float = 4.0  # T (paper and official default 4)
    lam: float = 1.0  # λ, weight of the class-wise KD term (1; the paper uses 3 on fine-grained sets)

    def __post_init__(self):
        if not self.temperature > 0:
            raise ConfigError(f"method.options.temperature: expected a number > 0, got {self.temperature!r}")
        if not self.lam >= 0:
            raise ConfigError(f"method.options.lam: expected a number >= 0, got {self.lam!r}")

    cost_basis = "ce's step on the B anchors + a no-grad forward of their B same-class pairs"

    def step_cost(self, epoch: int, epochs: int) -> float:
        """The anchors' ce step and the pairs' forward under ``no_grad`` (a step counts its B anchors): 4/3."""
        return 4 / 3


declare({"cskd": CSKDOptions})  # the torch-free registry (icp grid, the Snakefile) reads this file up to here


from typing import Iterator

import torch
import torch.nn.functional as F

from icp.methods import register
from icp.methods.base import Batch, Method, TrainOutput


def same_class_partners(labels: torch.Tensor, anchors: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """For each anchor index, a uniformly drawn other index with the same label (itself if its class has one)."""
    labels = labels.long()
    order = torch.argsort(labels, stable=True)  # indices grouped by class
    counts = torch.bincount(labels)
    starts = torch.cumsum(counts, 0) - counts
    rank = torch.empty_like(order)
    rank[order] = torch.arange(len(order))  # position of each index within the grouped order
    c = labels[anchors]
    n_other = counts[c] - 1
    own = rank[anchors] - starts[c]  # the anchor's position within its class
    draw = (torch.rand(len(anchors), generator=generator) * n_other).long().clamp_max((n_other - 1).clamp_min(0))
    draw = draw + (draw >= own).long() * (n_other > 0).long()  # skip the anchor's own slot
    return order[starts[c] + draw]


@register
class ClassWiseSelfKD(Method):
    """CS-KD (Yun et al., CVPR 2020): match the predictions of same-class pairs (KL at T = 4)."""

    name = "cskd"
    Options = CSKDOptions

    def batch_sampler(self, labels: torch.Tensor, batch_size: int, drop_last: bool,
                      generator: torch.Generator) -> Iterator[torch.Tensor]:
        anchors = torch.randperm(len(labels), generator=generator)
        partners = same_class_partners(labels, anchors, generator)
        batches = [torch.cat([a, p]) for a, p in zip(anchors.split(batch_size), partners.split(batch_size))]
        if drop_last and batches and len(batches[-1]) < 2 * batch_size:
            batches.pop()
        return iter(batches)

    def forward_train(self, batch: Batch, epoch: int) -> TrainOutput:
        o, b = self.options, len(batch.y) // 2
        y = batch.y[:b]
        logits = self.model(batch.x[:b])
        with torch.no_grad():
            pair_logits = self.model(batch.x[b:])
        t = o.temperature
        log_p = (logits.float() / t).log_softmax(1)
        q = (pair_logits.float() / t).softmax(1)
        kd = F.kl_div(log_p, q, reduction="sum") * t * t / b
        return TrainOutput(logits, {"ce": F.cross_entropy(logits.float(), y), "cls": o.lam * kd}, labels=y)
