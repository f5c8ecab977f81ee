"""Max Suppression (``maxsup``): Zhou, Li, Cheng, Yan, Dong, Fritz & Keuper, "MaxSup: Overcoming Representation
Collapse in Label Smoothing", NeurIPS 2025 (arXiv 2502.15798), Sec. 3. Official code:
https://github.com/ZhouYuxuanYX/Maximum-Suppression-Regularization: ``Conv/common_resnet/train.py``
(``train_one_epoch``, the ResNet recipe), the same loss in ``LT/loss/MAXsupLoss.py``, ``OOD/src/model.py`` and
``Deit/engine.py``.

Label smoothing with weight ε adds ε·(z_gt − mean_k z_k) to the cross-entropy (up to a constant); MaxSup penalises
the *top-1* logit instead of the ground-truth one, so that a misclassified sample is regularised the same way
(the README's L_MaxSup = α·(z_max − (1/K)Σ_k z_k)). With the official linear schedule of α over the epochs:

    α_t = α_0 + (α_1 − α_0)·t / max(T − 1, 1)            (t = 0-based epoch, T = ``train.epochs``)
    L   = CE(z, y) + α_t·(1/B) Σ_i (max_k z_ik − (1/K) Σ_k z_ik)

so α rises from α_0 = 0.1 at the first epoch to α_1 = 0.2 at the last (official ``lam = 0.1 + 0.1*epoch/(epochs-1)``
in ``common_resnet``, ``LT`` and ``OOD``; ``Deit/engine.py`` hard-codes ``epoch*0.1/299`` for its 300 epochs). The
cross-entropy has no label smoothing (official ``CrossEntropyLoss(label_smoothing=0.0)``). The max is the top-1 logit
(``topk(1)``), whose gradient flows to that logit only; the mean's gradient to every logit.

Departures from the official code: none in the loss. ``Conv/ffcv/losses.py`` (``MaxSuppression``, ImageNet with
FFCV) writes the same schedule as ``begin + (end − begin)·epoch/epochs``, which stops at 0.2 − 0.1/T in the last
epoch; we follow the three scripts above (α_1 reached at the last epoch), a difference of 0.1/T in α.

Cost: one forward and backward pass of the model, as ``ce`` (a max and a mean over K logits): ``step_cost`` 1.
"""
from __future__ import annotations

from dataclasses import dataclass

from icp.schema import ConfigError
from icp.methods.options import Cost, declare


@dataclass
class MaxSupOptions(Cost):
    alpha_start: float = 0.1  # α_0, weight of the max-suppression term at the first epoch (official 0.1)
    alpha_end: float = 0.2  # α_1, its weight at the last epoch, linear in between (official 0.1 + 0.1)

    def __post_init__(self):
        for key in ("alpha_start", "alpha_end"):
            if not getattr(self, key) >= 0:
                raise ConfigError(f"method.options.{key}: expected a number >= 0, got {getattr(self, key)!r}")


declare({"maxsup": MaxSupOptions})  # the torch-free registry (icp grid, the Snakefile) reads this file up to here


import torch
import torch.nn.functional as F

from icp.methods import register
from icp.methods.base import Batch, Method, TrainOutput


def max_suppression(logits: torch.Tensor) -> torch.Tensor:
    """(1/B) Σ_i (max_k z_ik − mean_k z_ik); the max is ``topk(1)``, as the official code, so that a tie sends the
    gradient to one logit (``amax`` would split it)."""
    logits = logits.float()
    return (logits.topk(1, 1).values.squeeze(1) - logits.mean(1)).mean()


@register
class MaxSuppression(Method):
    """MaxSup (Zhou et al., NeurIPS 2025): CE + α_t·(z_max − mean z), α_t linear from α_0 to α_1 over the run."""

    name = "maxsup"
    Options = MaxSupOptions

    def alpha(self, epoch: int) -> float:
        """α_t = α_0 + (α_1 − α_0)·t/max(T − 1, 1) for the 0-based epoch t."""
        o = self.options
        return o.alpha_start + (o.alpha_end - o.alpha_start) * epoch / max(self.ctx.epochs - 1, 1)

    def forward_train(self, batch: Batch, epoch: int) -> TrainOutput:
        logits = self.model(batch.x)
        return TrainOutput(logits, {"ce": F.cross_entropy(logits.float(), batch.y),
                                    "maxsup": self.alpha(epoch) * max_suppression(logits)})
