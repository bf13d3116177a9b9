"""CIFAR ResNets with 6n + 2 layers (He et al., CVPR 2016, Sec. 4.2) and the wide "x4" variants
used by distillation benchmarks (CRD, Tian et al., ICLR 2020; mdistiller)."""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from robustlab.errors import check
from robustlab.models.base import Backbone, check_positive_int, global_avg_pool, init_weights

SHORTCUTS = ("conv", "pad")


class ZeroPadShortcut(nn.Module):
    """Parameter-free shortcut ("option A"): subsample by ``stride``, zero-pad new channels."""

    def __init__(self, extra_channels: int, stride: int) -> None:
        super().__init__()
        self.extra_channels = extra_channels
        self.stride = stride

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x[:, :, :: self.stride, :: self.stride]
        return F.pad(x, (0, 0, 0, 0, 0, self.extra_channels))


class BasicBlock(nn.Module):
    """Residual unit y = relu(bn(conv3x3(relu(bn(conv3x3(x))))) + shortcut(x)) (He et al., 2016)."""

    def __init__(self, in_planes: int, planes: int, stride: int, shortcut: str) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(in_planes, planes, 3, stride=stride, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.conv2 = nn.Conv2d(planes, planes, 3, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.shortcut: nn.Module
        if stride == 1 and in_planes == planes:
            self.shortcut = nn.Identity()
        elif shortcut == "conv" or planes < in_planes:
            self.shortcut = nn.Sequential(
                nn.Conv2d(in_planes, planes, 1, stride=stride, bias=False), nn.BatchNorm2d(planes)
            )
        else:
            self.shortcut = ZeroPadShortcut(planes - in_planes, stride)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = F.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return F.relu(out + self.shortcut(x))


class CifarResNet(Backbone):
    """ResNet-(6n+2) for 32 x 32 images: conv3x3 stem, three stages of n BasicBlocks with
    ``num_filters[1:]`` channels (stride 1, 2, 2), global average pooling, linear
    (He et al., "Deep Residual Learning for Image Recognition", CVPR 2016).

    ``shortcut="conv"`` uses 1x1 conv + BN projections where the shape changes, as in the
    CRD/mdistiller code the distillation results come from; ``"pad"`` is the paper's
    parameter-free option A.
    """

    stage_names = ("stem", "layer1", "layer2", "layer3")

    def __init__(
        self,
        depth: int,
        num_filters: Sequence[int] = (16, 16, 32, 64),
        num_classes: int = 10,
        in_channels: int = 3,
        shortcut: str = "conv",
    ) -> None:
        super().__init__(num_classes, in_channels)
        check(
            isinstance(depth, int) and depth >= 8 and (depth - 2) % 6 == 0,
            f"CIFAR ResNet depth must be 6n+2 with n >= 1 (8, 14, 20, 32, 44, 56, 110, ...), "
            f"got {depth!r}",
        )
        filters = [check_positive_int(f, "num_filters entries") for f in num_filters]
        check(len(filters) == 4, f"num_filters needs 4 entries (stem, stage 1-3), got {filters}")
        check(shortcut in SHORTCUTS, f"shortcut must be one of {SHORTCUTS}, got {shortcut!r}")
        self.depth = depth
        blocks = (depth - 2) // 6
        self.stem = nn.Sequential(
            nn.Conv2d(in_channels, filters[0], 3, padding=1, bias=False),
            nn.BatchNorm2d(filters[0]),
            nn.ReLU(),
        )
        stages = []
        in_planes = filters[0]
        for planes, stride in zip(filters[1:], (1, 2, 2), strict=True):
            strides = [stride] + [1] * (blocks - 1)
            units = []
            for s in strides:
                units.append(BasicBlock(in_planes, planes, s, shortcut))
                in_planes = planes
            stages.append(nn.Sequential(*units))
        self.layer1, self.layer2, self.layer3 = stages
        self.feature_dim = filters[3]
        self.classifier = nn.Linear(self.feature_dim, num_classes)
        init_weights(self)

    def features(self, x: torch.Tensor) -> torch.Tensor:
        return global_avg_pool(self.layer3(self.layer2(self.layer1(self.stem(x)))))


def cifar_resnet(
    depth: int,
    num_filters: Sequence[int] = (16, 16, 32, 64),
    num_classes: int = 10,
    in_channels: int = 3,
    shortcut: str = "conv",
) -> CifarResNet:
    """Generic :class:`CifarResNet` of any depth 6n+2 and stem/stage widths ``num_filters``."""
    return CifarResNet(depth, num_filters, num_classes, in_channels, shortcut)


_THIN = (16, 16, 32, 64)
_X4 = (32, 64, 128, 256)


def resnet8(num_classes: int = 10, in_channels: int = 3, shortcut: str = "conv") -> CifarResNet:
    """ResNet-8 (n = 1), widths 16-16-32-64."""
    return CifarResNet(8, _THIN, num_classes, in_channels, shortcut)


def resnet14(num_classes: int = 10, in_channels: int = 3, shortcut: str = "conv") -> CifarResNet:
    """ResNet-14 (n = 2), widths 16-16-32-64."""
    return CifarResNet(14, _THIN, num_classes, in_channels, shortcut)


def resnet20(num_classes: int = 10, in_channels: int = 3, shortcut: str = "conv") -> CifarResNet:
    """ResNet-20 (n = 3), widths 16-16-32-64; 0.27 M parameters (He et al., 2016, Table 6)."""
    return CifarResNet(20, _THIN, num_classes, in_channels, shortcut)


def resnet32(num_classes: int = 10, in_channels: int = 3, shortcut: str = "conv") -> CifarResNet:
    """ResNet-32 (n = 5), widths 16-16-32-64; 0.46 M parameters (He et al., 2016, Table 6)."""
    return CifarResNet(32, _THIN, num_classes, in_channels, shortcut)


def resnet44(num_classes: int = 10, in_channels: int = 3, shortcut: str = "conv") -> CifarResNet:
    """ResNet-44 (n = 7), widths 16-16-32-64; 0.66 M parameters (He et al., 2016, Table 6)."""
    return CifarResNet(44, _THIN, num_classes, in_channels, shortcut)


def resnet56(num_classes: int = 10, in_channels: int = 3, shortcut: str = "conv") -> CifarResNet:
    """ResNet-56 (n = 9), widths 16-16-32-64; 0.85 M parameters (He et al., 2016, Table 6)."""
    return CifarResNet(56, _THIN, num_classes, in_channels, shortcut)


def resnet110(num_classes: int = 10, in_channels: int = 3, shortcut: str = "conv") -> CifarResNet:
    """ResNet-110 (n = 18), widths 16-16-32-64; 1.7 M parameters (He et al., 2016, Table 6)."""
    return CifarResNet(110, _THIN, num_classes, in_channels, shortcut)


def resnet8x4(num_classes: int = 10, in_channels: int = 3, shortcut: str = "conv") -> CifarResNet:
    """ResNet-8 with 4x widths 32-64-128-256 (CRD, Tian et al., 2020), a distillation student."""
    return CifarResNet(8, _X4, num_classes, in_channels, shortcut)


def resnet32x4(num_classes: int = 10, in_channels: int = 3, shortcut: str = "conv") -> CifarResNet:
    """ResNet-32 with 4x widths 32-64-128-256 (CRD, Tian et al., 2020), a distillation teacher."""
    return CifarResNet(32, _X4, num_classes, in_channels, shortcut)
