"""``resnet50_cifar``: the ICP authors' backbone (maheakdave/Self-Distillation-via-Iterative-Constructive-
Perturbations, ``Image Classification/train.py`` builds torchvision's ``resnet50`` and ``utils.py``'s
``modify_resnet50`` changes its stem): torchvision's ResNet-50 (Bottleneck blocks [3, 4, 6, 3], widths
256/512/1024/2048, strides 1/2/2/2, torchvision's init) without the max-pool, the four ``layer1..4`` as the
tapped stages. Option ``stem``: ``3x3`` (default) a 3x3 conv-64 with stride 1 and padding 1, the usual CIFAR
ResNet-50 (stage maps 32/16/8/4 on 32x32); ``authors`` the stem their code actually trains: ``modify_resnet50``
sets ``conv1.kernel_size = 3`` and ``conv1.padding = 1`` on the built conv, which leaves its 7x7 weight (a
conv's forward reads the weight's shape, not ``kernel_size``) and its stride 2, so it is a 7x7 stride-2
padding-1 conv (stage maps 14/7/4/2 on 32x32), parameter for parameter torchvision's ``resnet50``.
"""
from __future__ import annotations

from icp.models import declare, register


def options(stem: str = "3x3") -> None:
    if stem not in ("3x3", "authors"):
        raise ValueError(f"stem must be '3x3' or 'authors', got {stem!r}")


declare({"resnet50_cifar": options})  # the torch-free registry (icp grid, the Snakefile) reads this file up to here

import torch.nn as nn  # noqa: E402  (after declare: the grid reads the options without torch)

from icp.models.base import ClassifierNet, check_in_channels  # noqa: E402


class ResNet50Cifar(ClassifierNet):
    """torchvision's ``resnet50`` with a CIFAR stem and no max-pool (module docstring; ``stem``: ``3x3`` or
    ``authors``). Its stages are torchvision's ``layer1..4`` (post-ReLU Bottleneck outputs), so the taps are
    those of the other classifiers; the classifier is this base class's ``nn.Linear(2048, num_classes)``."""

    def __init__(self, num_classes: int, in_channels: int = 3, stem: str = "3x3"):
        from torchvision.models.resnet import Bottleneck, ResNet

        check_in_channels(in_channels)
        options(stem)
        tv = ResNet(Bottleneck, [3, 4, 6, 3], num_classes=num_classes)  # torchvision's resnet50, untrained
        if stem == "3x3":
            conv = nn.Conv2d(in_channels, 64, 3, stride=1, padding=1, bias=False)
        else:  # the authors' modify_resnet50: kernel_size and padding attributes changed on the 7x7 stride-2 conv
            conv = nn.Conv2d(in_channels, 64, 7, stride=2, padding=1, bias=False)
        stages = (tv.layer1, tv.layer2, tv.layer3, tv.layer4)
        super().__init__(nn.Sequential(conv, tv.bn1, tv.relu), stages, (256, 512, 1024, 2048), num_classes)


@register("resnet50_cifar")
def resnet50_cifar(num_classes: int, in_channels: int = 3, stem: str = "3x3") -> ResNet50Cifar:
    return ResNet50Cifar(num_classes, in_channels, stem)
