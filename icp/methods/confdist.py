"""Confusion Distillation (``confdist``, with **train-split confusion**): Kang & Kim, "What Do Students Learn?
A Feature-Level Analysis of Dark Knowledge", ICPR 2026 (arXiv 2606.03052), Sec. 4.2, Eq. 3 and 6-9. Official code:
https://github.com/KangWooya/What_Do_Students_Learn, ``training/train_cd.py`` (``_init_smoothing_matrix``,
``_confkd_mode``, ``_compute_confusion_prob``, ``train`` and the main loop), recipe in its ``README.md``.

A teacher-free self-distillation whose soft target for a sample of class k is row k of the model's own class
confusion ratio, smoothed by an exponential moving average:

    S_ij = 1 − ε + ε/K if i = j else ε/K                        (Eq. 7, the initial Q̃)
    Q_ki = #{samples of class k predicted i} / #{samples of class k}   (Eq. 3; official: counts + 1e-8, row-normalised)
    Q̃ ← μ·Q̃ + (1 − μ)·Q(t)   after every epoch t from the end of the first hard phase on   (Eq. 6)
    L_soft = T²·(1/B) Σ_b KL(Q̃_{y_b,:} ‖ softmax(z_b / T))   (Eq. 8; official: Σ p·(log(p + 1e-8) − log q))
    L = α·L_soft + β·CE(z, y) in a soft phase, CE(z, y) in a hard phase   (Eq. 9)

with α = 0.7, β = 0.3, T = 2, μ = 0.9, ε = 0.1 (the README's "Key Hyperparameters", the paper's best configuration).
The target row is not tempered; only the student's logits are divided by T.

**Phase schedule.** Training alternates hard (CE only) and soft phases, starting hard; ``phases`` gives their
lengths as ratios of ``train.epochs`` (the paper's Table 1 writes them so: "the absolute length of each stage is
determined by the total number of training epochs"). The default 3:3:6:3:15 is the paper's best (300 epochs: hard
0-30, soft 30-60, hard 60-120, soft 120-150, hard 150-300; the official ``--transition_epoch 30 30 60 30 150``).
Phase i ends after epoch round(T_train·(r_1 + … + r_i)/Σr) (1-based; Python's round, half to even), so the
official absolute schedules are reproduced exactly for their epoch counts (3:3:3:3:8 of 200 epochs =
``30 30 30 30 80``). The EMA is updated after
every epoch from the end of the first phase on (official ``epoch >= transition_epoch[0]``), hard phases included, and
a soft epoch reads the Q̃ of the epochs before it.

**Train-split confusion: our numbers are not comparable with the paper's.** Q(t) here counts the confusion of the
*training* split; the paper's official code counts it on the *test* split (a leak, below), so the paper's CIFAR-100
numbers (Table 2: 77.13 ± 0.01 % for ResNet-18 at 300 epochs, the official README's "Main Results") are not
comparable with ours, and not a target this implementation can or should reproduce.

**Departure from the official code (a test-set leak).** The official ``_compute_confusion_prob`` builds Q(t) from an
eval-mode pass over ``cifar100_test_loader``, the *test* split, whose labels then become the training targets: the
reported accuracy is measured on the data that shaped the targets. The paper does not say which data Q(t) uses for
training (Eq. 3 defines it on "the testset D" for the analysis of Sec. 4.1). A benchmark cannot train on test labels,
so Q(t) here is the confusion ratio of the **training split**: the labels as trained on (noisy in a noise scenario)
against the argmax of the logits of that epoch's own training steps (train mode, the augmented views, the model as
it was at each step), accumulated in ``after_step`` and folded into Q̃ when the next epoch starts. This needs no
extra pass, so the step costs what a ``ce`` step costs; an end-of-epoch eval-mode pass over the training split
(closer to the official timing) would need a hook the engine does not have and cost 1/3 of a ce epoch more per
epoch. Training-split predictions are more often correct than test predictions, so the rows of Q are more peaked
(more mass on the diagonal) than the official ones.

Other choices: K is the dataset's class count (the official code fixes K = 100 for CIFAR-100). Q̃ and the current
epoch's counts are registered buffers, so they are in every checkpoint and a resumed run continues exactly. The
official ``_confkd_mode`` has a slip for epochs past the schedule (it returns "soft" after an odd number of phases,
against its own comment); it never runs there, since its phases sum to the epoch count, and neither do ours.

Cost: one forward and backward pass of the model, as ``ce`` (an argmax and a K × K count per step, a K × K EMA per
epoch): ``step_cost`` 1.
"""
from __future__ import annotations

from dataclasses import dataclass, field

from icp.schema import ConfigError
from icp.methods.options import Cost, declare


@dataclass
class ConfDistOptions(Cost):
    soft_weight: float = 0.7  # α, weight of the confusion KL in a soft phase (official --soft_w, best config)
    ce_weight: float = 0.3  # β, weight of the CE in a soft phase (official --ce_w); hard phases use CE alone
    temperature: float = 2.0  # T of the student's softmax, and the T² factor (official --T)
    ema: float = 0.9  # μ, EMA momentum of the confusion ratio (official --ema)
    smoothing: float = 0.1  # ε of the initial smoothing matrix S (official --smoothing)
    # lengths of the alternating hard, soft, hard, ... phases, as ratios of train.epochs (paper's best 3:3:6:3:15)
    phases: list = field(default_factory=lambda: [3, 3, 6, 3, 15])

    def __post_init__(self):
        checks = {"soft_weight": (self.soft_weight >= 0, "a number >= 0"),
                  "ce_weight": (self.ce_weight >= 0, "a number >= 0"),
                  "temperature": (self.temperature > 0, "a number > 0"),
                  "ema": (0.0 <= self.ema <= 1.0, "a number in [0, 1]"),
                  "smoothing": (0.0 <= self.smoothing <= 1.0, "a number in [0, 1]"),
                  "phases": (isinstance(self.phases, list) and len(self.phases) >= 1 and all(
                      isinstance(r, (int, float)) and not isinstance(r, bool) and r > 0 for r in self.phases),
                      "a non-empty list of numbers > 0 (hard, soft, hard, ... phase lengths)")}
        for key, (ok, expected) in checks.items():
            if not ok:
                raise ConfigError(f"method.options.{key}: expected {expected}, got {getattr(self, key)!r}")


declare({"confdist": ConfDistOptions})  # the torch-free registry (icp grid, the Snakefile) reads this file up to here


import torch
import torch.nn.functional as F
from torch import nn

from icp.methods import register
from icp.methods.base import Batch, Method, MethodContext, TrainOutput


def phase_ends(phases: list, epochs: int) -> list[int]:
    """The 1-based epoch after which each phase ends: round(epochs·(r_1 + … + r_i)/Σr); the last is ``epochs``."""
    total, run, ends = float(sum(phases)), 0.0, []
    for r in phases:
        run += r
        ends.append(int(round(epochs * run / total)))
    ends[-1] = epochs
    return ends


def smoothing_matrix(k: int, eps: float) -> torch.Tensor:
    """S of Eq. 7: 1 − ε + ε/K on the diagonal, ε/K elsewhere."""
    return torch.full((k, k), eps / k).fill_diagonal_(1.0 - eps + eps / k)


def confusion_ratio(counts: torch.Tensor) -> torch.Tensor:
    """Q of Eq. 3 from counts[true, predicted]: row-normalised after adding 1e-8 (official), so that a class with
    no sample gets the uniform row."""
    counts = counts + 1e-8
    return counts / counts.sum(1, keepdim=True)


def soft_loss(logits: torch.Tensor, target: torch.Tensor, temperature: float) -> torch.Tensor:
    """T²·(1/B) Σ_b Σ_k p_bk·(log(p_bk + 1e-8) − log softmax(z_b/T)_k) (Eq. 8, the official expression)."""
    log_q = (logits.float() / temperature).log_softmax(1)
    return temperature ** 2 * (target * ((target + 1e-8).log() - log_q)).sum(1).mean()


@register
class ConfusionDistillation(Method):
    """Confusion Distillation (Kang & Kim, ICPR 2026): KL to the EMA of its own training confusion, in soft phases."""

    name = "confdist"
    Options = ConfDistOptions

    def __init__(self, model: nn.Module, options: ConfDistOptions, ctx: MethodContext):
        super().__init__(model, options, ctx)
        k = ctx.num_classes
        self.ends = phase_ends(options.phases, ctx.epochs)
        self.register_buffer("confusion", smoothing_matrix(k, options.smoothing))  # Q̃, the targets' rows
        self.register_buffer("counts", torch.zeros(k, k))  # this epoch's [label, prediction] counts

    def soft(self, epoch: int) -> bool:
        """Whether the 0-based ``epoch`` is in a soft phase (official ``_confkd_mode`` of the 1-based epoch)."""
        return next(i for i, end in enumerate(self.ends) if epoch + 1 <= end) % 2 == 1

    def on_epoch_start(self, epoch: int) -> None:
        """Fold the previous epoch's confusion ratio into Q̃ (Eq. 6) once the first phase has ended; restart the
        counts."""
        if epoch >= 1 and epoch >= self.ends[0]:
            mu = self.options.ema
            self.confusion.mul_(mu).add_((1.0 - mu) * confusion_ratio(self.counts))
        self.counts.zero_()

    def forward_train(self, batch: Batch, epoch: int) -> TrainOutput:
        o = self.options
        logits = self.model(batch.x)
        ce = F.cross_entropy(logits.float(), batch.y)
        if not self.soft(epoch):
            return TrainOutput(logits, {"ce": ce, "soft": torch.zeros((), device=ce.device)})
        target = self.confusion[batch.y]
        return TrainOutput(logits, {"ce": o.ce_weight * ce,
                                    "soft": o.soft_weight * soft_loss(logits, target, o.temperature)})

    def after_step(self, batch: Batch, out: TrainOutput, epoch: int) -> None:
        pred = out.logits.detach().argmax(1)
        self.counts.index_put_((batch.y, pred), torch.ones_like(pred, dtype=self.counts.dtype), accumulate=True)
