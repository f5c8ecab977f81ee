"""Backbones for the self-distillation benchmark, behind one registry (:mod:`icp.model_registry`: names, kinds,
options and their checks, without torch; re-exported here).

Models (constructor signature ``(num_classes, in_channels=3, **options)``):

* ``resnet20`` / ``resnet32`` / ``resnet56`` -- CIFAR ResNets of He et al.,
  "Deep Residual Learning for Image Recognition", CVPR 2016, Sec. 4.2: 3x3
  conv-16 stem, three stages of n BasicBlocks (n = 3/5/9) with 16/32/64
  channels and strides 1/2/2.  ``shortcut="A"`` (default, the paper's CIFAR
  choice, as in akamaster/pytorch_resnet_cifar10) is a parameter-free identity
  with stride-2 subsampling and zero-padded channels; ``shortcut="B"`` is a
  1x1 conv + BN projection where the shape changes.  Option A with 10 classes
  gives 0.27M / 0.46M / 0.85M parameters (269,722 / 464,154 / 853,018), as
  in the paper.
* ``preact_resnet18`` -- pre-activation ResNet-18 (He et al., "Identity
  Mappings in Deep Residual Networks", ECCV 2016) in the CIFAR form used by
  CS-KD (Yun et al., CVPR 2020, alinlab/cs-kd) and PS-KD (Kim et al., ICCV
  2021, lgcnsai/PS-KD-Pytorch): 3x3 conv-64 stem with stride 1 and no
  max-pool, PreActBlocks [2, 2, 2, 2] with 64/128/256/512 channels and
  strides 1/2/2/2, 1x1 conv shortcut where the shape changes, final BN-ReLU.
* ``resnet50_cifar`` -- the ICP authors' backbone (maheakdave/Self-Distillation-via-Iterative-Constructive-
  Perturbations, ``Image Classification/train.py`` builds torchvision's ``resnet50`` and ``utils.py``'s
  ``modify_resnet50`` changes its stem): torchvision's ResNet-50 (Bottleneck blocks [3, 4, 6, 3], widths
  256/512/1024/2048, strides 1/2/2/2, torchvision's init) without the max-pool, the four ``layer1..4`` as the
  tapped stages. Option ``stem``: ``3x3`` (default) a 3x3 conv-64 with stride 1 and padding 1, the usual CIFAR
  ResNet-50 (stage maps 32/16/8/4 on 32x32); ``authors`` the stem their code actually trains: ``modify_resnet50``
  sets ``conv1.kernel_size = 3`` and ``conv1.padding = 1`` on the built conv, which leaves its 7x7 weight (a
  conv's forward reads the weight's shape, not ``kernel_size``) and its stride 2, so it is a 7x7 stride-2
  padding-1 conv (stage maps 14/7/4/2 on 32x32), parameter for parameter torchvision's ``resnet50``.
* ``vae`` -- a convolutional VAE (:class:`ConvVAE`) for the generative study: encoder stages tapped like the
  classifiers' stages, ``latent``, ``width``, ``beta`` and ``image_size`` options.
* ``wrn16_4`` -- Wide ResNet 16-4 (Zagoruyko & Komodakis, "Wide Residual
  Networks", BMVC 2016): pre-activation wide blocks, widths 16/64/128/256,
  two blocks per stage, option ``dropout`` between the two convs of a block.

Inputs: 1-channel 28x28 inputs are handled by adapting the stem's input
channels; spatial size is native (28 -> 28/14/7 stage maps).  Any spatial
size >= 8 works, since the head uses global average pooling.

Features: ``forward(x, features=True)`` returns ``(logits, feats)``; ``feats``
maps each of ``feature_names`` (shallow -> deep) to that stage's NCHW output,
plus ``"pool"``, the (B, D) vector fed to ``classifier``.  CIFAR ResNet taps
are post-ReLU.  Pre-activation nets have no activation between stages by
design, so their inner taps are the raw stage outputs and the last tap is the
map after the final BN-ReLU.  Taps are gathered in ``forward`` (no hooks, no
Python-side state): ``torch.compile(fullgraph=True)`` / CUDA-graph friendly.

Initialisation: convs Kaiming normal (fan_out, relu), BN weight 1 / bias 0,
the linear classifier keeps PyTorch's default init.
"""
from __future__ import annotations

from typing import Dict, Sequence, Tuple

import torch
import torch.nn as nn
import torch.nn.functional as F

from icp.model_registry import (GENERATIVE, MODELS, build_model, check_dropout, check_options,  # noqa: F401
                                check_shortcut, check_stem, check_vae, list_models, register)

__all__ = ["MODELS", "register", "list_models", "build_model", "ClassifierNet"]


def _conv3x3(cin: int, cout: int, stride: int = 1) -> nn.Conv2d:
    return nn.Conv2d(cin, cout, 3, stride=stride, padding=1, bias=False)


class ClassifierNet(nn.Module):
    """Common base: stem -> stages (tapped) -> final (Identity or BN-ReLU) -> GAP -> classifier."""

    feature_names: Tuple[str, ...]
    feature_channels: Dict[str, int]
    classifier: nn.Linear
    num_classes: int

    def __init__(self, stem: nn.Module, stages: Sequence[nn.Module], channels: Sequence[int],
                 num_classes: int, final: nn.Module = None):
        super().__init__()
        if num_classes < 1:
            raise ValueError(f"num_classes must be >= 1, got {num_classes}")
        self.num_classes = int(num_classes)
        self.feature_names = tuple(f"stage{i + 1}" for i in range(len(stages)))
        self.feature_channels = dict(zip(self.feature_names, (int(c) for c in channels)))
        self.stem = stem
        self.stages = nn.ModuleList(stages)
        self.final = final if final is not None else nn.Identity()
        self.classifier = nn.Linear(int(channels[-1]), self.num_classes)
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
            elif isinstance(m, nn.BatchNorm2d):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)

    def forward(self, x: torch.Tensor, features: bool = False):
        out = self.stem(x)
        taps = []
        for stage in self.stages:
            out = stage(out)
            taps.append(out)
        out = self.final(out)
        taps[-1] = out
        pooled = torch.flatten(F.adaptive_avg_pool2d(out, 1), 1)
        logits = self.classifier(pooled)
        if not features:
            return logits
        feats = dict(zip(self.feature_names, taps))
        feats["pool"] = pooled
        return logits, feats


def _check_in_channels(in_channels: int) -> None:
    if in_channels < 1:
        raise ValueError(f"in_channels must be >= 1, got {in_channels}")

# ---------------------------------------------------------------- CIFAR ResNet
class _PadShortcut(nn.Module):
    """Option A: stride-2 subsampling plus zero channels (split over both sides, as akamaster)."""

    def __init__(self, cin: int, cout: int, stride: int):
        super().__init__()
        self.stride, self.lo, self.hi = stride, (cout - cin) // 2, cout - cin - (cout - cin) // 2

    def forward(self, x):
        x = x[:, :, ::self.stride, ::self.stride]
        return F.pad(x, (0, 0, 0, 0, self.lo, self.hi))


class BasicBlock(nn.Module):
    def __init__(self, cin: int, cout: int, stride: int, shortcut: str):
        super().__init__()
        self.conv1, self.bn1 = _conv3x3(cin, cout, stride), nn.BatchNorm2d(cout)
        self.conv2, self.bn2 = _conv3x3(cout, cout), nn.BatchNorm2d(cout)
        self.shortcut: nn.Module = nn.Identity()
        if stride != 1 or cin != cout:
            if shortcut == "A":
                self.shortcut = _PadShortcut(cin, cout, stride)
            else:
                self.shortcut = nn.Sequential(nn.Conv2d(cin, cout, 1, stride=stride, bias=False),
                                              nn.BatchNorm2d(cout))

    def forward(self, x):
        out = F.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return F.relu(out + self.shortcut(x))


class CifarResNet(ClassifierNet):
    def __init__(self, depth: int, num_classes: int, in_channels: int = 3, shortcut: str = "A"):
        _check_in_channels(in_channels)
        check_shortcut(shortcut)
        if (depth - 2) % 6:
            raise ValueError(f"CIFAR ResNet depth must be 6n+2, got {depth}")
        n, widths, cin, stages = (depth - 2) // 6, (16, 32, 64), 16, []
        for i, w in enumerate(widths):
            blocks = []
            for j in range(n):
                blocks.append(BasicBlock(cin, w, 2 if (i > 0 and j == 0) else 1, shortcut))
                cin = w
            stages.append(nn.Sequential(*blocks))
        stem = nn.Sequential(_conv3x3(in_channels, 16), nn.BatchNorm2d(16), nn.ReLU(inplace=True))
        super().__init__(stem, stages, widths, num_classes)


# ------------------------------------------------- pre-activation blocks (PreAct / WRN)
class PreActBlock(nn.Module):
    """BN-ReLU-conv3x3-BN-ReLU-(dropout)-conv3x3 + shortcut; a projection (1x1 conv)
    where the shape changes is applied to the pre-activated input, else identity on x."""

    def __init__(self, cin: int, cout: int, stride: int, dropout: float = 0.0):
        super().__init__()
        self.bn1, self.conv1 = nn.BatchNorm2d(cin), _conv3x3(cin, cout, stride)
        self.bn2, self.conv2 = nn.BatchNorm2d(cout), _conv3x3(cout, cout)
        self.dropout = nn.Dropout(dropout) if dropout > 0 else nn.Identity()
        self.shortcut = None
        if stride != 1 or cin != cout:
            self.shortcut = nn.Conv2d(cin, cout, 1, stride=stride, bias=False)

    def forward(self, x):
        out = F.relu(self.bn1(x))
        skip = x if self.shortcut is None else self.shortcut(out)
        out = self.conv1(out)
        out = self.conv2(self.dropout(F.relu(self.bn2(out))))
        return out + skip


def _preact_stages(cin: int, widths: Sequence[int], strides: Sequence[int], n_blocks: Sequence[int],
                   dropout: float = 0.0):
    stages = []
    for w, s, n in zip(widths, strides, n_blocks):
        blocks = []
        for j in range(n):
            blocks.append(PreActBlock(cin, w, s if j == 0 else 1, dropout))
            cin = w
        stages.append(nn.Sequential(*blocks))
    return stages


def _bn_relu(c: int) -> nn.Module:
    return nn.Sequential(nn.BatchNorm2d(c), nn.ReLU(inplace=True))


class PreActResNet(ClassifierNet):
    def __init__(self, num_classes: int, in_channels: int = 3, n_blocks=(2, 2, 2, 2)):
        _check_in_channels(in_channels)
        widths = (64, 128, 256, 512)
        stages = _preact_stages(64, widths, (1, 2, 2, 2), n_blocks)
        super().__init__(_conv3x3(in_channels, 64), stages, widths, num_classes, final=_bn_relu(512))


class WideResNet(ClassifierNet):
    def __init__(self, depth: int, widen: int, num_classes: int, in_channels: int = 3,
                 dropout: float = 0.0):
        _check_in_channels(in_channels)
        if (depth - 4) % 6:
            raise ValueError(f"WRN depth must be 6n+4, got {depth}")
        check_dropout(dropout)
        n = (depth - 4) // 6
        widths = (16 * widen, 32 * widen, 64 * widen)
        stages = _preact_stages(16, widths, (1, 2, 2), (n, n, n), dropout)
        super().__init__(_conv3x3(in_channels, 16), stages, widths, num_classes,
                         final=_bn_relu(widths[-1]))


# ---------------------------------------------------------------- the ICP authors' ResNet-50
class ResNet50Cifar(ClassifierNet):
    """torchvision's ``resnet50`` with a CIFAR stem and no max-pool (module docstring; ``stem``: ``3x3`` or
    ``authors``). Its stages are torchvision's ``layer1..4`` (post-ReLU Bottleneck outputs), so the taps are
    those of the other classifiers; the classifier is this base class's ``nn.Linear(2048, num_classes)``."""

    def __init__(self, num_classes: int, in_channels: int = 3, stem: str = "3x3"):
        from torchvision.models.resnet import Bottleneck, ResNet

        _check_in_channels(in_channels)
        check_stem(stem)
        tv = ResNet(Bottleneck, [3, 4, 6, 3], num_classes=num_classes)  # torchvision's resnet50, untrained
        if stem == "3x3":
            conv = nn.Conv2d(in_channels, 64, 3, stride=1, padding=1, bias=False)
        else:  # the authors' modify_resnet50: kernel_size and padding attributes changed on the 7x7 stride-2 conv
            conv = nn.Conv2d(in_channels, 64, 7, stride=2, padding=1, bias=False)
        stages = (tv.layer1, tv.layer2, tv.layer3, tv.layer4)
        super().__init__(nn.Sequential(conv, tv.bn1, tv.relu), stages, (256, 512, 1024, 2048), num_classes)


# ---------------------------------------------------------------- VAE (the ICP paper's generative experiment)
class VAEOutput(tuple):
    """``(recon, mu, logvar)``: the reconstruction in the normalised input space and the posterior q(z|x)."""

    __slots__ = ()

    def __new__(cls, recon, mu, logvar):
        return super().__new__(cls, (recon, mu, logvar))

    recon = property(lambda self: self[0])
    mu = property(lambda self: self[1])
    logvar = property(lambda self: self[2])


def _down(cin: int, cout: int, stride: int) -> nn.Module:
    k = 4 if stride == 2 else 3
    return nn.Sequential(nn.Conv2d(cin, cout, k, stride, 1, bias=False), nn.BatchNorm2d(cout), nn.ReLU(inplace=True))


def _up(cin: int, cout: int) -> nn.Module:
    return nn.Sequential(nn.ConvTranspose2d(cin, cout, 4, 2, 1, bias=False), nn.BatchNorm2d(cout),
                         nn.ReLU(inplace=True))


class ConvVAE(nn.Module):
    """A convolutional VAE (Kingma & Welling, ICLR 2014) for the ICP paper's generative experiment.

    Encoder: three tapped stages ``stage1`` (stride 2, ``width`` channels), ``stage2`` (stride 2, 2·width),
    ``stage3`` (stride 1, 4·width), then linear maps to μ and log σ² of a ``latent``-dimensional diagonal
    Gaussian q(z|x) (the log σ² layer starts at zero and is clamped to [−10, 10]). Decoder: linear to 4·width × (H/4)², two stride-2 transposed convolutions, a 3×3 conv to the
    input channels, no output activation: it reconstructs the *normalised* input (the space ICP refines in).
    H and W must be multiples of 4 (28×28 Fashion-MNIST, 64×64 CUB). Taps are ``feature_names`` as in the
    classifiers; ``feats["pool"]`` is μ.

    ``forward`` samples z = μ + σ·ε in train mode and takes z = μ in eval mode (so the refinement, run in eval
    mode, is deterministic). :meth:`objective` is the negative ELBO with a unit-variance Gaussian decoder:
    recon = ½‖x̂ − x‖² summed over pixels (constants dropped), KL = KL(q(z|x) ‖ N(0, I)), loss = recon + β·KL
    per sample (``beta`` option; β = 1 is the ELBO, Higgins et al. 2017 for β ≠ 1).
    """

    generative = True

    def __init__(self, num_classes: int = 0, in_channels: int = 1, image_size: int = 28, latent: int = 32,
                 width: int = 32, beta: float = 1.0):
        super().__init__()
        _check_in_channels(in_channels)
        check_vae(image_size, latent, width, beta)
        self.in_channels, self.image_size, self.latent, self.beta = in_channels, image_size, latent, float(beta)
        self.num_classes = int(num_classes)
        widths = (width, 2 * width, 4 * width)
        self.feature_names = ("stage1", "stage2", "stage3")
        self.feature_channels = dict(zip(self.feature_names, widths))
        self.stages = nn.ModuleList([_down(in_channels, widths[0], 2), _down(widths[0], widths[1], 2),
                                     _down(widths[1], widths[2], 1)])
        self.side = image_size // 4
        flat = widths[2] * self.side * self.side
        self.to_mu, self.to_logvar = nn.Linear(flat, latent), nn.Linear(flat, latent)
        nn.init.zeros_(self.to_logvar.weight)  # start from σ = 1 (log σ² = bias ≈ 0)
        nn.init.zeros_(self.to_logvar.bias)
        self.from_z = nn.Linear(latent, flat)
        self.decoder = nn.Sequential(_up(widths[2], widths[1]), _up(widths[1], widths[0]),
                                     nn.Conv2d(widths[0], in_channels, 3, 1, 1))
        self.width = width

    def encode(self, x: torch.Tensor):
        taps, out = [], x
        for stage in self.stages:
            out = stage(out)
            taps.append(out)
        flat = torch.flatten(out, 1)
        # log σ² kept in [-10, 10]: exp() of an untrained layer's output would overflow the KL term
        return self.to_mu(flat), self.to_logvar(flat).clamp(-10.0, 10.0), taps

    def decode(self, z: torch.Tensor) -> torch.Tensor:
        h = self.from_z(z).view(-1, 4 * self.width, self.side, self.side)
        return self.decoder(F.relu(h))

    def forward(self, x: torch.Tensor, features: bool = False):
        mu, logvar, taps = self.encode(x)
        z = mu + torch.randn_like(mu) * (0.5 * logvar).exp() if self.training else mu
        out = VAEOutput(self.decode(z), mu, logvar)
        if not features:
            return out
        feats = dict(zip(self.feature_names, taps))
        feats["pool"] = mu
        return out, feats

    @staticmethod
    def terms(out: VAEOutput, target: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Per-sample (recon, KL): ½ Σ (x̂ − x)² over pixels, and KL(N(μ, σ²) ‖ N(0, I)) over latents."""
        recon = 0.5 * (out.recon.float() - target.float()).pow(2).flatten(1).sum(1)
        kl = -0.5 * (1 + out.logvar.float() - out.mu.float().pow(2) - out.logvar.float().exp()).sum(1)
        return recon, kl

    def objective(self, out: VAEOutput, target: torch.Tensor, reduction: str = "mean") -> torch.Tensor:
        """recon + β·KL per sample, averaged (``mean``) or summed (``sum``) over the batch."""
        recon, kl = self.terms(out, target)
        loss = recon + self.beta * kl
        return loss.sum() if reduction == "sum" else loss.mean()

    @torch.no_grad()
    def sample(self, n: int, generator: torch.Generator | None = None) -> torch.Tensor:
        """n decoded prior samples z ~ N(0, I) (normalised input space)."""
        device = self.to_mu.weight.device
        z = torch.randn(n, self.latent, generator=generator).to(device)
        return self.decode(z)
