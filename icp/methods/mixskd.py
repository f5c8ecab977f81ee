"""MixSKD (``mixskd``), a **mixup-based** self-distillation: Yang, An, Zhou, Cai, Zhi, Wu, Xu & Zhang, "MixSKD:
Self-Knowledge Distillation from Mixup for Image Recognition", ECCV 2022 (arXiv 2208.05768). Official code:
https://github.com/winycg/Self-KD-Lib (``main_mixskd_cifar.py``: ``mixup_data``, ``train``; ``models/resnet_mixskd.py``:
``Auxiliary_Classifier``, ``ResNet_Final_Auxiliary_Classifer``, ``ResNet_Auxiliary``; ``methods/adversarial.py``:
``discriminatorLoss``; ``utils.py``: ``DistillKL``; ``main_mixskd_imagenet.py`` for the ImageNet loss).

**Mixup-based:** every step trains on the B images of the batch *and* on B mixup images x̃ = λ·x + (1 − λ)·x[π]
(one λ ~ Beta(a, a) per step, π a random permutation of the batch), with the mixup cross-entropy. Part of its gain
over ``ce`` can therefore be the augmentation itself; compare it with a mixup baseline to tell them apart.

Network (official ``ResNet_Auxiliary``), for a model of S stages whose last stage has C channels:

* S − 1 auxiliary branches: branch i takes stage i's output through fresh copies of stages i+1 .. S (and of the
  model's final BN-ReLU, for our pre-activation nets, so that every branch ends as the backbone's last tap does),
  then global average pooling and its own linear classifier. With the backbone, S classifiers and S feature maps
  F_1 .. F_S of the last stage's shape.
* a self-teacher (``ResNet_Final_Auxiliary_Classifer``): the S feature maps concatenated → 1×1 conv (S·C → C, no
  bias) → global average pooling → linear.
* S discriminators (``discriminatorLoss``): pooled feature → linear (C → 128) → ReLU → linear (128 → 2).

One forward pass in train mode of [x; x̃] (2B images) gives logits z_k and maps F_k of every classifier k. For the
originals' part, the pair's mixtures ẑ_k = λ·z_k + (1 − λ)·z_k[π] and F̂_k likewise; for the mixup images' part
z̃_k, F̃_k. The self-teacher gives t̂ on the F̂ and t̃ on the F̃. The loss (official ``train``; KL = ``DistillKL``,
``kl_div(batchmean)·T²``; MCE(z) = λ·CE(z, y) + (1 − λ)·CE(z, y[π])):

    L = Σ_k CE(z_k on x, y)                                                         ce
      + Σ_k MCE(z̃_k) + MCE(t̂) + MCE(t̃)                                            mixup_ce
      + KL(ẑ_S ‖ t̃) + KL(z̃_S ‖ t̂) + Σ_{k<S} [KL(ẑ_k ‖ z̃_k) + KL(z̃_k ‖ ẑ_k)]         kd   (the second argument,
      + Σ_k MSE(F̂_k, F̃_k)                                                          feat  the teacher, detached)
      + Σ_k BCE(D_k(pool [F̂_k; F̃_k]), [(1, 0)·B; (0, 1)·B])                          disc

(paper Sec. 3: feature-map distillation with a discriminator, logit distillation between the mixture of the pair's
predictions and the mixup image's, and the self-teacher's soft labels for the backbone). All terms have weight 1
and are minimised by one optimizer, as in the official code. T = 3 and a = 0.4 are the CIFAR script's defaults
(``--kd_T``, ``--mixup-alpha``; 0.2 on ImageNet).

**The discriminators (``discriminators``).** ``frozen`` (the default) is the official code as it runs:
``methods/adversarial.py``'s ``discriminatorLoss`` keeps its ``Discriminator``s in a plain Python list
(``self.classifier = []``), so they are not submodules: not in ``trainable_list.parameters()`` (which
``main_mixskd_cifar.py`` hands to its one SGD), never updated, and the network minimises the BCE of S fixed random
MLPs (``loss = loss_cls + loss_div + loss_fea + loss_gan``). We keep them frozen at their random initialisation
(as submodules with ``requires_grad`` off, so they are checkpointed and a resume is exact). ``adversarial`` is a
true min-max over the same BCE: the discriminators minimise it (they learn to tell the pair's interpolated maps
from the mixup images' maps) while the network maximises it (its maps learn to be told apart less), through a
gradient-reversal layer on the discriminators' input (Ganin & Lempitsky, ICML 2015), in the same single step and
optimizer: the GAN-style game that the word "adversarial" (the official file's name) and a discriminator suggest.
We could not read the paper's equation for this term here; neither option is checked against it. The earlier
``train_discriminators: true`` (one optimizer minimising the same BCE over the network *and* the discriminators)
is gone: it is neither the official code nor a min-max game.

What we keep, and where we depart from the official code:

* Everything above is kept; the auxiliary branches, the self-teacher and the discriminators are submodules of this
  method, saved in every checkpoint; the branches and the self-teacher (and the discriminators, ``adversarial``
  only) are trained by the engine's optimizer (with weight decay, as the official SGD over ``trainable_list``);
  ``eval_model`` is the bare classifier, so evaluation and the shipped network never run them. The official
  ``test`` reports the best top-1 of the S classifiers (``max(acc1)``); we report the backbone's, the network one
  would deploy.
* **The discriminators are never trained in the official code** (above): its intent is unclear (the loss module is
  appended to ``trainable_list``, but holds no parameters there); we follow what it does by default
  (``discriminators: frozen``); ``adversarial`` is the min-max alternative.
* **An official bug, the mixup cross-entropy is not back-propagated on CIFAR:** ``main_mixskd_cifar.py`` computes
  ``loss_mixcls`` but leaves it out of ``loss``; ``main_mixskd_imagenet.py`` adds the same terms to its loss, and
  MixSKD's task loss on mixup images is the point of the method. Without it nothing trains the self-teacher (its
  logits enter the loss only as detached KD targets), so the CIFAR script distils from a random self-teacher. We
  back-propagate it (``mixup_ce: true``); ``false`` is the CIFAR script as it runs.
* The branches' convolutions and BatchNorms are initialised as our models' stages (Kaiming normal, fan-out); the
  self-teacher's and heads' layers keep PyTorch's default initialisation, as all official layers do. The official
  models are its own CIFAR ResNets; ours are this project's models (:class:`icp.models.base.ClassifierNet`: any
  model with ``stages`` and ``final``).
* λ and π are drawn from torch's CPU generator (seeded per epoch by the engine, so a resume is exact), not
  ``np.random``; ``mixup_alpha`` must be > 0 (the official code falls back to λ = 0.5 at 0).

Bookkeeping: the returned logits are the backbone's on the B original images, so training accuracy (as the
official backbone's ``top1_num[-1]``), loss averages and images/s count the batch's B samples; the 2B images fed per
step, the branches and the self-teacher show in a lower images/s than ``ce``.
"""
from __future__ import annotations

from dataclasses import dataclass

from icp.schema import ConfigError
from icp.methods.options import Cost, declare


DISCRIMINATORS = ("frozen", "adversarial")


@dataclass
class MixSKDOptions(Cost):
    """MixSKD: mixup-based self-distillation (trains on mixup images too; see icp/methods/mixskd.py)."""

    mixup_alpha: float = 0.4  # a of λ ~ Beta(a, a), one λ per step (official CIFAR default 0.4; ImageNet 0.2)
    temperature: float = 3.0  # T of every KL term (official --kd_T 3)
    mixup_ce: bool = True  # back-propagate the mixup CE terms (official ImageNet script; the CIFAR one omits them)
    discriminators: str = "frozen"  # frozen: official code (never trained); adversarial: min-max via gradient reversal

    def __post_init__(self):
        checks = {"mixup_alpha": (self.mixup_alpha > 0, "a number > 0"),
                  "temperature": (self.temperature > 0, "a number > 0"),
                  "mixup_ce": (isinstance(self.mixup_ce, bool), "true or false"),
                  "discriminators": (self.discriminators in DISCRIMINATORS, f"one of {', '.join(DISCRIMINATORS)}")}
        for key, (ok, expected) in checks.items():
            if not ok:
                raise ConfigError(f"method.options.{key}: expected {expected}, got {getattr(self, key)!r}")

    cost_basis = ("forward + backward of 2B images (the batch and its mixup images) through the model and its S − 1 "
                  "auxiliary branches (copies of the later stages); self-teacher, heads and discriminators not counted")

    def step_cost(self, epoch: int, epochs: int) -> float:
        """2B images, each through the backbone and the branches, in ce steps of B images. The branches repeat
        stages 2..S, 3..S, .., S: with stages of equal FLOPs (our ResNets, to a few %), (S − 1)/2 backbones, so a
        step costs 2·(1 + (S − 1)/2) = S + 1 ce steps: 4 for the 3-stage models, 5 for the 4-stage ones. FLOPs
        counted (``torch.utils.flop_counter``, forward + backward, 32×32 inputs, 100 classes, heads and
        discriminators included) give 3.97 for resnet20, 4.12 for wrn16_4, 4.96 for preact_resnet18 and 5.63 for
        resnet50_cifar. The cost cannot see the model; we declare 4, the 3-stage value (resnet20, the model of most
        of the studies' runs): it undercounts MixSKD on the 4-stage models by 20-30 %."""
        return 4.0


declare({"mixskd": MixSKDOptions})  # the torch-free registry (icp grid, the Snakefile) reads this file up to here


import copy
from typing import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from icp.methods import register
from icp.methods.base import Batch, Method, MethodContext, TrainOutput


def fresh_copy(module: nn.Module) -> nn.Module:
    """A copy of ``module``'s architecture with freshly initialised weights (our models' initialisation)."""
    twin = copy.deepcopy(module)
    for m in twin.modules():
        if isinstance(m, nn.Conv2d):
            nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
            if m.bias is not None:
                nn.init.zeros_(m.bias)
        elif isinstance(m, nn.BatchNorm2d):
            nn.init.ones_(m.weight)
            nn.init.zeros_(m.bias)
            m.reset_running_stats()
        elif isinstance(m, nn.Linear):
            m.reset_parameters()
    return twin


class Branch(nn.Module):
    """An auxiliary classifier: copies of the later stages (and the final block) → GAP → linear."""

    def __init__(self, stages: Sequence[nn.Module], final: nn.Module, channels: int, num_classes: int):
        super().__init__()
        self.body = nn.Sequential(*(fresh_copy(s) for s in stages), fresh_copy(final))
        self.fc = nn.Linear(channels, num_classes)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        feat = self.body(x)
        return self.fc(torch.flatten(F.adaptive_avg_pool2d(feat, 1), 1)), feat


class SelfTeacher(nn.Module):
    """Official ``ResNet_Final_Auxiliary_Classifer``: concatenated maps → 1×1 conv → GAP → linear."""

    def __init__(self, n_maps: int, channels: int, num_classes: int):
        super().__init__()
        self.conv = nn.Conv2d(n_maps * channels, channels, 1, bias=False)
        self.fc = nn.Linear(channels, num_classes)

    def forward(self, maps: Sequence[torch.Tensor]) -> torch.Tensor:
        return self.fc(torch.flatten(F.adaptive_avg_pool2d(self.conv(torch.cat(list(maps), 1)), 1), 1))


def discriminator(channels: int, hidden: int = 128) -> nn.Module:
    """Official ``Discriminator``: linear → ReLU → linear to 2 logits."""
    return nn.Sequential(nn.Linear(channels, hidden), nn.ReLU(inplace=True), nn.Linear(hidden, 2))


class GradReverse(torch.autograd.Function):
    """Identity forward, negated gradient backward (Ganin & Lempitsky 2015): what is upstream maximises the loss
    that what is downstream minimises."""

    @staticmethod
    def forward(ctx, x):
        return x.view_as(x)

    @staticmethod
    def backward(ctx, grad):
        return -grad


def mixskd_losses(logits: Sequence[torch.Tensor], maps: Sequence[torch.Tensor], teacher_mix: torch.Tensor,
                  teacher_mixed: torch.Tensor, y: torch.Tensor, lam: float, perm: torch.Tensor, t: float,
                  discriminators: Sequence[nn.Module], mixup_ce: bool = True,
                  adversarial: bool = False) -> dict[str, torch.Tensor]:
    """The MixSKD loss terms (module docstring). ``logits[k]`` (2B, K) and ``maps[k]`` (2B, C, H, W) are classifier
    k's outputs on [x; x̃] (the backbone last); ``teacher_mix`` / ``teacher_mixed`` the self-teacher's logits on the
    pair's mixed maps / on the mixup images' maps; ``perm`` the mixup permutation of the batch. ``adversarial``:
    the discriminators' input goes through :class:`GradReverse` (the same ``disc`` value; the network's gradient
    of it negated)."""
    b = len(y)
    y_perm = y[perm]
    logits = [z.float() for z in logits]
    maps = [f.float() for f in maps]
    teacher_mix, teacher_mixed = teacher_mix.float(), teacher_mixed.float()

    def kl(student, teacher):
        return F.kl_div((student / t).log_softmax(1), (teacher.detach() / t).softmax(1), reduction="batchmean") * t * t

    def mce(z):
        return lam * F.cross_entropy(z, y) + (1 - lam) * F.cross_entropy(z, y_perm)

    def pair_mix(v):
        return lam * v[:b] + (1 - lam) * v[:b][perm]

    mixes, on_mixed = [pair_mix(z) for z in logits], [z[b:] for z in logits]
    map_mixes, maps_mixed = [pair_mix(f) for f in maps], [f[b:] for f in maps]
    losses = {"ce": sum(F.cross_entropy(z[:b], y) for z in logits)}
    if mixup_ce:
        losses["mixup_ce"] = sum(mce(z) for z in on_mixed) + mce(teacher_mix) + mce(teacher_mixed)
    losses["kd"] = kl(mixes[-1], teacher_mixed) + kl(on_mixed[-1], teacher_mix) + sum(
        kl(a, m) + kl(m, a) for a, m in zip(mixes[:-1], on_mixed[:-1]))
    losses["feat"] = sum(F.mse_loss(a, m) for a, m in zip(map_mixes, maps_mixed))
    target = torch.cat([y.new_tensor([1.0, 0.0], dtype=torch.float).expand(b, 2),
                        y.new_tensor([0.0, 1.0], dtype=torch.float).expand(b, 2)])
    def disc_input(a, m):
        pooled = torch.flatten(F.adaptive_avg_pool2d(torch.cat([a, m]), 1), 1)
        return GradReverse.apply(pooled) if adversarial else pooled

    losses["disc"] = sum(F.binary_cross_entropy_with_logits(d(disc_input(a, m)), target)
                         for d, a, m in zip(discriminators, map_mixes, maps_mixed))
    return losses


@register
class MixSKD(Method):
    """MixSKD (Yang et al., ECCV 2022): mixup-based self-KD with auxiliary branches, a self-teacher and
    discriminators, all dropped at evaluation."""

    name = "mixskd"
    Options = MixSKDOptions

    def __init__(self, model: nn.Module, options: MixSKDOptions, ctx: MethodContext):
        super().__init__(model, options, ctx)
        stages, final = getattr(model, "stages", None), getattr(model, "final", None)
        if stages is None or final is None or len(stages) < 2:
            raise ValueError("mixskd needs a classifier with at least two stages (icp.models.base.ClassifierNet), "
                             f"got {type(model).__name__}")
        names = model.feature_names
        channels, k = model.feature_channels[names[-1]], ctx.num_classes
        self.taps = names[:-1]
        self.branches = nn.ModuleList(Branch(stages[i + 1:], final, channels, k) for i in range(len(self.taps)))
        self.teacher = SelfTeacher(len(names), channels, k)
        self.discriminators = nn.ModuleList(discriminator(channels) for _ in names)
        self.discriminators.requires_grad_(options.discriminators == "adversarial")  # frozen: the official code

    def forward_train(self, batch: Batch, epoch: int) -> TrainOutput:
        o, x, b = self.options, batch.x, len(batch.y)
        a = torch.tensor(o.mixup_alpha)
        lam = float(torch.distributions.Beta(a, a).sample())  # CPU generator: no device sync
        perm = torch.randperm(b).to(x.device)
        logits, feats = self.model(torch.cat([x, lam * x + (1 - lam) * x[perm]]), features=True)
        all_logits, maps = [], []
        for name, branch in zip(self.taps, self.branches):
            z, f = branch(feats[name])
            all_logits.append(z)
            maps.append(f)
        all_logits.append(logits)
        maps.append(feats[self.model.feature_names[-1]])
        teacher_mix = self.teacher([lam * f[:b] + (1 - lam) * f[:b][perm] for f in maps])
        teacher_mixed = self.teacher([f[b:] for f in maps])
        losses = mixskd_losses(all_logits, maps, teacher_mix, teacher_mixed, batch.y, lam, perm, o.temperature,
                               self.discriminators, o.mixup_ce, o.discriminators == "adversarial")
        return TrainOutput(logits[:b], losses)
