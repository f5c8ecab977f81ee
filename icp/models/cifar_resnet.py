"""``resnet20`` / ``resnet32`` / ``resnet56``: the CIFAR ResNets of He et al., "Deep Residual Learning for Image
Recognition", CVPR 2016, Sec. 4.2: 3x3 conv-16 stem, three stages of n BasicBlocks (n = 3/5/9) with 16/32/64
channels and strides 1/2/2. ``shortcut="A"`` (default, the paper's CIFAR choice, as in
akamaster/pytorch_resnet_cifar10) is a parameter-free identity with stride-2 subsampling and zero-padded channels;
``shortcut="B"`` is a 1x1 conv + BN projection where the shape changes. Option A with 10 classes gives 0.27M /
0.46M / 0.85M parameters (269,722 / 464,154 / 853,018), as in the paper. Taps are post-ReLU.
"""
from __future__ import annotations

from icp.models import declare, register


def options(shortcut: str = "A") -> None:
    if shortcut not in ("A", "B"):
        raise ValueError(f"shortcut must be 'A' or 'B', got {shortcut!r}")


declare({"resnet20": options, "resnet32": options, "resnet56": options})  # the torch-free registry reads up to here

import torch.nn as nn  # noqa: E402  (after declare: the grid reads the options without torch)
import torch.nn.functional as F  # noqa: E402

from icp.models.base import ClassifierNet, check_in_channels, conv3x3  # noqa: E402


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
        self.conv1, self.bn1 = conv3x3(cin, cout, stride), nn.BatchNorm2d(cout)
        self.conv2, self.bn2 = conv3x3(cout, cout), nn.BatchNorm2d(cout)
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
        check_in_channels(in_channels)
        options(shortcut)
        if (depth - 2) % 6:
            raise ValueError(f"CIFAR ResNet depth must be 6n+2, got {depth}")
        n, widths, cin, stages = (depth - 2) // 6, (16, 32, 64), 16, []
        for i, w in enumerate(widths):
            blocks = []
            for j in range(n):
                blocks.append(BasicBlock(cin, w, 2 if (i > 0 and j == 0) else 1, shortcut))
                cin = w
            stages.append(nn.Sequential(*blocks))
        stem = nn.Sequential(conv3x3(in_channels, 16), nn.BatchNorm2d(16), nn.ReLU(inplace=True))
        super().__init__(stem, stages, widths, num_classes)


@register("resnet20")
def resnet20(num_classes: int, in_channels: int = 3, shortcut: str = "A") -> CifarResNet:
    return CifarResNet(20, num_classes, in_channels, shortcut)


@register("resnet32")
def resnet32(num_classes: int, in_channels: int = 3, shortcut: str = "A") -> CifarResNet:
    return CifarResNet(32, num_classes, in_channels, shortcut)


@register("resnet56")
def resnet56(num_classes: int, in_channels: int = 3, shortcut: str = "A") -> CifarResNet:
    return CifarResNet(56, num_classes, in_channels, shortcut)
