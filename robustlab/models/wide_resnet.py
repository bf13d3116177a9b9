"""Wide residual networks WRN-d-k (Zagoruyko & Komodakis, "Wide Residual Networks", BMVC 2016)."""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import nn

from robustlab.errors import check
from robustlab.models.base import (
    Backbone,
    check_dropout,
    check_positive_int,
    global_avg_pool,
    init_weights,
)


class WideBasicBlock(nn.Module):
    """Pre-activation wide unit y = conv3x3(dropout(relu(bn(conv3x3(relu(bn(x))))))) + shortcut(x),
    with a 1x1 conv on relu(bn(x)) as shortcut where the shape changes (Zagoruyko & Komodakis)."""

    def __init__(self, in_planes: int, planes: int, stride: int, dropout: float) -> None:
        super().__init__()
        self.bn1 = nn.BatchNorm2d(in_planes)
        self.conv1 = nn.Conv2d(in_planes, planes, 3, stride=stride, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.dropout = nn.Dropout(dropout)
        self.conv2 = nn.Conv2d(planes, planes, 3, padding=1, bias=False)
        self.shortcut: nn.Module | None = None
        if stride != 1 or in_planes != planes:
            self.shortcut = nn.Conv2d(in_planes, planes, 1, stride=stride, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = F.relu(self.bn1(x))
        residual = x if self.shortcut is None else self.shortcut(out)
        out = self.conv1(out)
        out = self.conv2(self.dropout(F.relu(self.bn2(out))))
        return out + residual


class WideResNet(Backbone):
    """WRN-d-k: conv3x3 stem with 16 channels, three stages of (d - 4) / 6 WideBasicBlocks with
    16k, 32k, 64k channels (strides 1, 2, 2), final BN-ReLU, global average pooling, linear
    (Zagoruyko & Komodakis, BMVC 2016). WRN-28-10 has 36.5 M parameters.
    """

    stage_names = ("stem", "layer1", "layer2", "layer3", "final")

    def __init__(
        self,
        depth: int,
        widen_factor: int,
        dropout: float = 0.0,
        num_classes: int = 10,
        in_channels: int = 3,
    ) -> None:
        super().__init__(num_classes, in_channels)
        check(
            isinstance(depth, int) and depth >= 10 and (depth - 4) % 6 == 0,
            f"WideResNet depth must be 6n+4 with n >= 1 (10, 16, 22, 28, 40, ...), got {depth!r}",
        )
        widen_factor = check_positive_int(widen_factor, "widen_factor")
        dropout = check_dropout(dropout)
        self.depth = depth
        self.widen_factor = widen_factor
        blocks = (depth - 4) // 6
        self.stem = nn.Conv2d(in_channels, 16, 3, padding=1, bias=False)
        stages = []
        in_planes = 16
        for planes, stride in zip(
            (16 * widen_factor, 32 * widen_factor, 64 * widen_factor), (1, 2, 2), strict=True
        ):
            units = []
            for s in [stride] + [1] * (blocks - 1):
                units.append(WideBasicBlock(in_planes, planes, s, dropout))
                in_planes = planes
            stages.append(nn.Sequential(*units))
        self.layer1, self.layer2, self.layer3 = stages
        self.final = nn.Sequential(nn.BatchNorm2d(in_planes), nn.ReLU())
        self.feature_dim = in_planes
        self.classifier = nn.Linear(in_planes, num_classes)
        init_weights(self)

    def features(self, x: torch.Tensor) -> torch.Tensor:
        out = self.layer3(self.layer2(self.layer1(self.stem(x))))
        return global_avg_pool(self.final(out))


def wide_resnet(
    depth: int,
    widen_factor: int,
    dropout: float = 0.0,
    num_classes: int = 10,
    in_channels: int = 3,
) -> WideResNet:
    """Generic WRN-``depth``-``widen_factor`` (depth = 6n + 4), dropout between the two convs."""
    return WideResNet(depth, widen_factor, dropout, num_classes, in_channels)


def _wrn_factory(depth: int, widen_factor: int) -> Callable[..., WideResNet]:
    def factory(num_classes: int = 10, in_channels: int = 3, dropout: float = 0.0) -> WideResNet:
        return WideResNet(depth, widen_factor, dropout, num_classes, in_channels)

    factory.__name__ = factory.__qualname__ = f"wrn_{depth}_{widen_factor}"
    factory.__doc__ = f"WRN-{depth}-{widen_factor} (Zagoruyko & Komodakis, 2016)."
    return factory


wrn_16_2 = _wrn_factory(16, 2)
wrn_16_4 = _wrn_factory(16, 4)
wrn_16_8 = _wrn_factory(16, 8)
wrn_28_4 = _wrn_factory(28, 4)
wrn_28_10 = _wrn_factory(28, 10)
wrn_40_1 = _wrn_factory(40, 1)
wrn_40_2 = _wrn_factory(40, 2)
