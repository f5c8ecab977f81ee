"""``wrn16_4``: Wide ResNet 16-4 (Zagoruyko & Komodakis, "Wide Residual Networks", BMVC 2016): pre-activation
wide blocks, widths 16/64/128/256, two blocks per stage, option ``dropout`` between the two convs of a block.
"""
from __future__ import annotations

from icp.models import declare, register


def options(dropout: float = 0.0) -> None:
    if not 0.0 <= dropout < 1.0:
        raise ValueError(f"dropout must be in [0, 1), got {dropout}")


declare({"wrn16_4": options})  # the torch-free registry (icp grid, the Snakefile) reads this file up to here

from icp.models.base import ClassifierNet, bn_relu, check_in_channels, conv3x3, preact_stages  # noqa: E402


class WideResNet(ClassifierNet):
    def __init__(self, depth: int, widen: int, num_classes: int, in_channels: int = 3,
                 dropout: float = 0.0):
        check_in_channels(in_channels)
        if (depth - 4) % 6:
            raise ValueError(f"WRN depth must be 6n+4, got {depth}")
        options(dropout)
        n = (depth - 4) // 6
        widths = (16 * widen, 32 * widen, 64 * widen)
        stages = preact_stages(16, widths, (1, 2, 2), (n, n, n), dropout)
        super().__init__(conv3x3(in_channels, 16), stages, widths, num_classes,
                         final=bn_relu(widths[-1]))


@register("wrn16_4")
def wrn16_4(num_classes: int, in_channels: int = 3, dropout: float = 0.0) -> WideResNet:
    return WideResNet(16, 4, num_classes, in_channels, dropout)
