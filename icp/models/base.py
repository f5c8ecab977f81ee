"""What the networks share (torch): :class:`ClassifierNet`, the base of every classifier, and the pre-activation
blocks of PreAct ResNet and WRN. The models themselves are one file each beside this one (:mod:`icp.models`).

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

__all__ = ["ClassifierNet", "PreActBlock", "bn_relu", "check_in_channels", "conv3x3", "preact_stages"]


def conv3x3(cin: int, cout: int, stride: int = 1) -> nn.Conv2d:
    return nn.Conv2d(cin, cout, 3, stride=stride, padding=1, bias=False)


def check_in_channels(in_channels: int) -> None:
    if in_channels < 1:
        raise ValueError(f"in_channels must be >= 1, got {in_channels}")


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


# ------------------------------------------------- pre-activation blocks (PreAct / WRN)
class PreActBlock(nn.Module):
    """BN-ReLU-conv3x3-BN-ReLU-(dropout)-conv3x3 + shortcut; a projection (1x1 conv)
    where the shape changes is applied to the pre-activated input, else identity on x."""

    def __init__(self, cin: int, cout: int, stride: int, dropout: float = 0.0):
        super().__init__()
        self.bn1, self.conv1 = nn.BatchNorm2d(cin), conv3x3(cin, cout, stride)
        self.bn2, self.conv2 = nn.BatchNorm2d(cout), conv3x3(cout, cout)
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


def preact_stages(cin: int, widths: Sequence[int], strides: Sequence[int], n_blocks: Sequence[int],
                  dropout: float = 0.0):
    stages = []
    for w, s, n in zip(widths, strides, n_blocks):
        blocks = []
        for j in range(n):
            blocks.append(PreActBlock(cin, w, s if j == 0 else 1, dropout))
            cin = w
        stages.append(nn.Sequential(*blocks))
    return stages


def bn_relu(c: int) -> nn.Module:
    return nn.Sequential(nn.BatchNorm2d(c), nn.ReLU(inplace=True))
