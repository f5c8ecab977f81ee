"""Zipf's label smoothing (``zipfls``): Liang, Li, Bing, Zhao, Tang, Lin & Fan, "Efficient One Pass
Self-distillation with Zipf's Label Smoothing", ECCV 2022 (arXiv 2207.12980), Sec. 3. Official code:
https://github.com/megvii-research/zipfls, ``pytorch_zipfls/losses.py`` (``zipf_loss``, ``gen_pdf``,
``get_masked_distribution``, ``kl_loss``) and ``pytorch_zipfls/train.py`` (``train``: the total loss); the
MegEngine port ``megengine_zipfls/loss.py`` computes the same.

The **non-dense** variant (official ``--dense`` off, ``--rank hard``, ``--distribution rank_zipf``, no ``--friend``):
the soft target of a sample is built, in the same forward pass, from the ranking of its *own* logits. For sample i
with label y_i and logits z_i (K classes):

    r_ik = 1 + #{j : z_ij > z_ik}                       (rank among all K classes, ties share the smallest rank:
                                                         scipy ``rankdata(-z, method='min')``, target included)
    q_ik = r_ik^(−power) / Σ_{j≠y_i} r_ij^(−power)      for k ≠ y_i   (Zipf's law over the K − 1 non-target classes)
    p̃_i = softmax(z_i restricted to the K − 1 non-target classes)
    L = CE(z, y) + λ·(1/B) Σ_i KL(q_i ‖ p̃_i)

The target is a constant (computed from detached logits; the official code ranks them on the CPU with numpy), the KL
is at temperature 1 (there is no temperature in the official loss) and is averaged over the batch
(``F.kl_div(..., reduction='none').sum(1).mean()``). The rank counts the target class, so when the target is not the
top-1 class the best non-target class still gets rank 1 and the others skip the target's rank, as in the official
``mask * dist`` before renormalising.

Options and their provenance:

* ``lam`` (λ, official ``--loss_lambda``) = 0.1: the official CIFAR-100 recipe (``pytorch_zipfls/README.md`` and
  ``megengine_zipfls/Makefile``, ResNet-18 and DenseNet-121) and ImageNet; the official argparse default 1.0 is the
  TinyImageNet / iNat-21 setting. **Provenance: 0.1 is the *dense* variant's value.** Every command of the README
  (CIFAR-100 included) passes ``--dense``, the variant that votes the ranking from per-pixel predictions of the last
  feature map; we implement the non-dense loss (above), for which the official code publishes no tuned λ. 0.1 is
  therefore borrowed from the dense CIFAR recipe, not tuned for this loss: a λ search, not this default, is what
  says how well the non-dense variant can do.
* ``power`` (official ``--power``) = 1.0, the official default: q ∝ 1/r.
* ``mask`` (official ``--mask``) = false, the official default: when true the KL is averaged over the samples whose
  top-1 prediction is correct only (0 if there are none).

Departures from the official code, none of which changes the loss:

* The ranks are computed on the device with a batched ``searchsorted`` (no CPU round trip); they equal scipy's
  ``method='min'`` ranks of the same float32 logits, ties included.
* The official training script also adds ``alpha``-weighted CE losses of intermediate-stage heads
  (``--deeplayer`` > 1) and the *dense* variant votes the ranking from per-pixel argmaxes of the last feature map
  (``--dense``, used in the paper's CIFAR commands): neither is this non-dense variant (``--deeplayer`` 1, the
  default, trains the final classifier only).

Cost: one forward and backward pass of the model, as ``ce`` (the ranking and the KL over K classes are negligible):
``step_cost`` 1.
"""
from __future__ import annotations

from dataclasses import dataclass

from icp.schema import ConfigError
from icp.methods.options import Cost, declare


@dataclass
class ZipfLSOptions(Cost):
    lam: float = 0.1  # λ, weight of the KL term (official --loss_lambda of the CIFAR-100 recipe)
    power: float = 1.0  # exponent of the Zipf distribution, q ∝ rank^(−power) (official --power default)
    mask: bool = False  # KL only on correctly classified samples (official --mask, off by default)

    def __post_init__(self):
        checks = {"lam": (self.lam >= 0, "a number >= 0"), "power": (self.power >= 0, "a number >= 0")}
        for key, (ok, expected) in checks.items():
            if not ok:
                raise ConfigError(f"method.options.{key}: expected {expected}, got {getattr(self, key)!r}")


declare({"zipfls": ZipfLSOptions})  # the torch-free registry (icp grid, the Snakefile) reads this file up to here


import torch
import torch.nn.functional as F

from icp.methods import register
from icp.methods.base import Batch, Method, TrainOutput


def min_rank(logits: torch.Tensor) -> torch.Tensor:
    """1-based rank of every logit within its row, largest first, ties sharing the smallest rank
    (scipy ``rankdata(-logits, axis=1, method='min')``): 1 + the number of strictly larger logits."""
    neg = -logits
    return torch.searchsorted(neg.sort(1).values.contiguous(), neg.contiguous(), right=False) + 1


def non_target(values: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """The (B, K − 1) columns of ``values`` other than each row's label, in class order."""
    k = values.shape[1]
    cols = torch.arange(k - 1, device=values.device).expand(len(y), -1)
    cols = cols + (cols >= y.view(-1, 1)).long()
    return values.gather(1, cols)


def zipf_target(logits: torch.Tensor, y: torch.Tensor, power: float) -> torch.Tensor:
    """q: Zipf's law over the non-target classes by their rank among all K logits, (B, K − 1), rows sum to 1."""
    dist = non_target(min_rank(logits.detach().float()).float().reciprocal().pow(power), y)
    return dist / dist.sum(1, keepdim=True)


def zipf_kl(logits: torch.Tensor, y: torch.Tensor, power: float, mask: bool) -> torch.Tensor:
    """(1/B) Σ_i KL(q_i ‖ softmax(non-target logits_i)) (official ``kl_loss``), or its mean over the correctly
    classified samples with ``mask``."""
    logits = logits.float()
    q = zipf_target(logits, y, power)
    kl = F.kl_div(non_target(logits, y).log_softmax(1), q, reduction="none").sum(1)
    if not mask:
        return kl.mean()
    correct = (logits.argmax(1) == y).float()
    return (kl * correct).sum() / correct.sum().clamp(min=1.0)  # 0 when none is correct, as the official code


@register
class ZipfLabelSmoothing(Method):
    """Zipf's LS (Liang et al., ECCV 2022): CE + λ·KL to a Zipf distribution over the ranked non-target logits."""

    name = "zipfls"
    Options = ZipfLSOptions

    def forward_train(self, batch: Batch, epoch: int) -> TrainOutput:
        o = self.options
        logits = self.model(batch.x)
        return TrainOutput(logits, {"ce": F.cross_entropy(logits.float(), batch.y),
                                    "zipf": o.lam * zipf_kl(logits, batch.y, o.power, o.mask)})
