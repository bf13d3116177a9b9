"""Pre-activation ResNet-18 with a CIFAR stem (He et al., "Identity Mappings in Deep Residual
Networks", ECCV 2016), the standard backbone of adversarial-training work on CIFAR."""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from robustlab.errors import check
from robustlab.models.base import Backbone, check_positive_int, global_avg_pool, init_weights


class PreActBlock(nn.Module):
    """Pre-activation unit y = conv3x3(relu(bn(conv3x3(relu(bn(x)))))) + shortcut(x); a 1x1 conv
    on relu(bn(x)) is the shortcut where the shape changes (He et al., ECCV 2016)."""

    def __init__(self, in_planes: int, planes: int, stride: int) -> None:
        super().__init__()
        self.bn1 = nn.BatchNorm2d(in_planes)
        self.conv1 = nn.Conv2d(in_planes, planes, 3, stride=stride, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.conv2 = nn.Conv2d(planes, planes, 3, padding=1, bias=False)
        self.shortcut: nn.Module | None = None
        if stride != 1 or in_planes != planes:
            self.shortcut = nn.Conv2d(in_planes, planes, 1, stride=stride, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = F.relu(self.bn1(x))
        residual = x if self.shortcut is None else self.shortcut(out)
        out = self.conv1(out)
        out = self.conv2(F.relu(self.bn2(out)))
        return out + residual


class PreActResNet(Backbone):
    """Pre-activation ResNet: conv3x3 stem (stride 1), four stages of PreActBlocks with widths
    w, 2w, 4w, 8w (strides 1, 2, 2, 2), final BN-ReLU, global average pooling, linear
    (He et al., ECCV 2016). ResNet-18: 2 blocks per stage, w = 64, 11.2 M parameters.
    """

    stage_names = ("stem", "layer1", "layer2", "layer3", "layer4", "final")

    def __init__(
        self,
        blocks_per_stage: Sequence[int] = (2, 2, 2, 2),
        num_classes: int = 10,
        in_channels: int = 3,
        width: int = 64,
    ) -> None:
        super().__init__(num_classes, in_channels)
        width = check_positive_int(width, "width")
        check(
            len(blocks_per_stage) == 4,
            f"blocks_per_stage needs 4 entries, got {tuple(blocks_per_stage)}",
        )
        self.stem = nn.Conv2d(in_channels, width, 3, padding=1, bias=False)
        stages = []
        in_planes = width
        for i, blocks in enumerate(blocks_per_stage):
            planes = width * 2**i
            units = []
            for s in [1 if i == 0 else 2] + [1] * (check_positive_int(blocks, "blocks") - 1):
                units.append(PreActBlock(in_planes, planes, s))
                in_planes = planes
            stages.append(nn.Sequential(*units))
        self.layer1, self.layer2, self.layer3, self.layer4 = stages
        self.final = nn.Sequential(nn.BatchNorm2d(in_planes), nn.ReLU())
        self.feature_dim = in_planes
        self.classifier = nn.Linear(in_planes, num_classes)
        init_weights(self)

    def features(self, x: torch.Tensor) -> torch.Tensor:
        out = self.layer2(self.layer1(self.stem(x)))
        return global_avg_pool(self.final(self.layer4(self.layer3(out))))


def preact_resnet18(num_classes: int = 10, in_channels: int = 3, width: int = 64) -> PreActResNet:
    """PreAct-ResNet-18: [2, 2, 2, 2] blocks, base width ``width``."""
    return PreActResNet((2, 2, 2, 2), num_classes, in_channels, width)
