"""Be Your Own Teacher (``byot``): Zhang, Song, Gao, Chen, Bao & Ma, "Be Your Own Teacher: Improve the Performance
of Convolutional Neural Networks via Self Distillation", ICCV 2019. The authors released no code; we follow the
widely used re-implementation https://github.com/luanyunteng/pytorch-be-your-own-teacher (``train.py``,
``models/resnet.py``), whose hyper-parameters (T = 3, α = 0.1, β = 1e-6) the ICP authors' BYOT baseline also uses
(maheakdave/Self-Distillation-via-Iterative-Constructive-Perturbations, ``Image Classification/byot_train.py``
and ``utils.py: distillation_loss``).

Heads: after every stage but the last (the model's named feature taps ``feature_names[:-1]``) an auxiliary
classifier = bottleneck → global average pooling → linear, where the bottleneck (``branchBottleNeck``) is
1×1 conv (C_i → C/4) → BN → ReLU → k×k conv with stride k (C/4 → C/4) → BN → ReLU → 1×1 conv (C/4 → C) → BN →
ReLU, C the channels of the final stage and k the ratio of the tap's spatial size to the final stage's (measured
once with a 32×32 probe: 8/4/2 for PreAct ResNet-18 as in the official code, 4/2 for the CIFAR ResNets and
WRN-16-4). The deepest classifier is the model's own head. The heads are submodules of this method, so the engine's
optimizer trains them (with weight decay, as the official optimizer over ``model.parameters()``); ``eval_model``
returns the bare classifier, so evaluation and the shipped network never run them.

Loss (official ``train.py``), with z the final logits, z_j the j-th auxiliary head's logits, f = the final
pooled features (``feats["pool"]``) and f_j the j-th head's pooled features:

    L = (1 − α)·[CE(z, y) + Σ_j CE(z_j, y)]
      + α·T²·Σ_j CE_soft(z_j / T, softmax(z / T))                       (KD from the deepest head)
      + β·Σ_j Σ [(f_j − f)² · 1(f_j > 0 ∨ f > 0)]                        (L2 hint, summed over batch and channels)

* The KD teacher softmax(z / T) and the hint target f are detached (official ``temp4.detach()``,
  ``final_fea.detach()``): the deepest head teaches and is not pulled towards the shallow ones.
* The KD term is the official soft cross-entropy −mean_i Σ_k q_ik·log softmax(z_j / T)_ik (same gradient as the
  KL, larger by the teacher's entropy), multiplied by T².
* The hint's mask and sum reduction are the official ``feature_loss_function``; our taps and heads end in ReLU or
  BN-ReLU, so the mask keeps every element.

Choices: the head convolutions have no bias (the official ones do; a bias before BatchNorm is cancelled by it).
The ICP authors' BYOT differs from this in ways we do not reproduce: their auxiliary "heads" are deep copies of
the later ResNet-50 stages instead of bottlenecks, the final CE has weight 1 while the auxiliary CE and KD terms
are averaged over heads, the KD target and the hint target are not detached (a KL with ``log_target``), and the
hint is an MSE over full feature maps.
"""
from __future__ import annotations

from dataclasses import dataclass

from icp.schema import ConfigError
from icp.methods.options import Cost, declare


@dataclass
class BYOTOptions(Cost):
    temperature: float = 3.0  # T of the KD from the deepest head to the shallower ones
    alpha: float = 0.1  # α: weight of the KD terms ((1 − α) on the CE terms)
    beta: float = 1e-6  # β: weight of the L2 feature hints

    # step_cost: 1 (Cost's), which cannot see the model; python -m icp.flops counts the heads on each model
    cost_basis = ("forward + backward of the model, as ce; the auxiliary heads (a bottleneck and a linear layer "
                  "after every stage but the last) not declared: counted, they add 2 % on resnet20, 7 % on "
                  "preact_resnet18 and 43 % on resnet50_cifar (results/reference/flops.csv, which the costs use)")

    def __post_init__(self):
        checks = {"temperature": (self.temperature > 0, "a number > 0"),
                  "alpha": (0.0 <= self.alpha <= 1.0, "a number in [0, 1]"),
                  "beta": (self.beta >= 0, "a number >= 0")}
        for key, (ok, expected) in checks.items():
            if not ok:
                raise ConfigError(f"method.options.{key}: expected {expected}, got {getattr(self, key)!r}")


declare({"byot": BYOTOptions})  # the torch-free registry (icp grid, the Snakefile) reads this file up to here


import torch
import torch.nn.functional as F
from torch import nn

from icp.methods import register
from icp.methods.base import Batch, Method, MethodContext, TrainOutput


def _conv_bn_relu(cin: int, cout: int, kernel: int) -> list[nn.Module]:
    return [nn.Conv2d(cin, cout, kernel, stride=kernel, bias=False), nn.BatchNorm2d(cout), nn.ReLU(inplace=True)]


class AuxHead(nn.Module):
    """Bottleneck (1×1 → k×k stride k → 1×1, each BN-ReLU) → global average pooling → linear."""

    def __init__(self, cin: int, cout: int, stride: int, num_classes: int):
        super().__init__()
        mid = max(1, cout // 4)
        self.bottleneck = nn.Sequential(*_conv_bn_relu(cin, mid, 1), *_conv_bn_relu(mid, mid, stride),
                                        *_conv_bn_relu(mid, cout, 1))
        self.fc = nn.Linear(cout, num_classes)
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        feat = torch.flatten(F.adaptive_avg_pool2d(self.bottleneck(x), 1), 1)
        return self.fc(feat), feat


@torch.no_grad()
def tap_strides(model: nn.Module, probe: int = 32) -> dict[str, int]:
    """Spatial size of each feature tap relative to the last one, from one eval-mode forward of a probe image."""
    first_conv = next(m for m in model.modules() if isinstance(m, nn.Conv2d))
    device = next(model.parameters()).device
    was_training = model.training
    model.eval()  # no BatchNorm statistics are touched
    try:
        _, feats = model(torch.zeros(1, first_conv.in_channels, probe, probe, device=device), features=True)
    finally:
        model.train(was_training)
    last = feats[model.feature_names[-1]].shape[-1]
    return {name: max(1, feats[name].shape[-1] // last) for name in model.feature_names}


def hint_loss(feat: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Official ``feature_loss_function``: squared error where either side is positive, summed."""
    return ((feat - target) ** 2 * ((feat > 0) | (target > 0))).sum()


@register
class BeYourOwnTeacher(Method):
    """BYOT (Zhang et al., ICCV 2019): auxiliary heads taught by the deepest one; dropped at evaluation."""

    name = "byot"
    Options = BYOTOptions

    def __init__(self, model: nn.Module, options: BYOTOptions, ctx: MethodContext):
        super().__init__(model, options, ctx)
        names = model.feature_names
        if len(names) < 2:
            raise ValueError(f"byot needs a model with at least two feature taps, got {names}")
        final_channels = model.feature_channels[names[-1]]
        strides = tap_strides(model)
        self.taps = names[:-1]
        self.heads = nn.ModuleList(AuxHead(model.feature_channels[n], final_channels, strides[n], ctx.num_classes)
                                   for n in self.taps)

    def forward_train(self, batch: Batch, epoch: int) -> TrainOutput:
        o, y, t = self.options, batch.y, self.options.temperature
        logits, feats = self.model(batch.x, features=True)
        teacher = (logits.detach().float() / t).softmax(1)
        final = feats["pool"].detach().float()
        ce_aux = kd = hint = 0.0
        for name, head in zip(self.taps, self.heads):
            z, f = head(feats[name])
            ce_aux = ce_aux + F.cross_entropy(z.float(), y)
            kd = kd + F.cross_entropy(z.float() / t, teacher) * t * t
            hint = hint + hint_loss(f.float(), final)
        return TrainOutput(logits, {"ce": (1 - o.alpha) * F.cross_entropy(logits.float(), y),
                                    "ce_aux": (1 - o.alpha) * ce_aux, "kd": o.alpha * kd, "hint": o.beta * hint})
