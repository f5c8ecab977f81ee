"""``preact_resnet18``: pre-activation ResNet-18 (He et al., "Identity Mappings in Deep Residual Networks", ECCV
2016) in the CIFAR form used by CS-KD (Yun et al., CVPR 2020, alinlab/cs-kd) and PS-KD (Kim et al., ICCV 2021,
lgcnsai/PS-KD-Pytorch): 3x3 conv-64 stem with stride 1 and no max-pool, PreActBlocks [2, 2, 2, 2] with
64/128/256/512 channels and strides 1/2/2/2, 1x1 conv shortcut where the shape changes, final BN-ReLU. No options.
"""
from __future__ import annotations

from icp.models import declare, register


def options() -> None:
    """It takes no options."""


declare({"preact_resnet18": options})  # the torch-free registry (icp grid, the Snakefile) reads this file up to here

from icp.models.base import ClassifierNet, bn_relu, check_in_channels, conv3x3, preact_stages  # noqa: E402


class PreActResNet(ClassifierNet):
    def __init__(self, num_classes: int, in_channels: int = 3, n_blocks=(2, 2, 2, 2)):
        check_in_channels(in_channels)
        widths = (64, 128, 256, 512)
        stages = preact_stages(64, widths, (1, 2, 2, 2), n_blocks)
        super().__init__(conv3x3(in_channels, 64), stages, widths, num_classes, final=bn_relu(512))


@register("preact_resnet18")
def preact_resnet18(num_classes: int, in_channels: int = 3) -> PreActResNet:
    return PreActResNet(num_classes, in_channels, (2, 2, 2, 2))
