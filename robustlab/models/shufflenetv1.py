"""ShuffleNetV1 adapted to 32 x 32 inputs (Zhang et al., "ShuffleNet: An Extremely Efficient
Convolutional Neural Network for Mobile Devices", CVPR 2018), as the "ShuffleV1" student of the
CRD and mdistiller distillation benchmarks (Tian et al., ICLR 2020)."""

from __future__ import annotations

import torch
from torch import nn

from robustlab.errors import check
from robustlab.models.base import Backbone, check_positive_int, global_avg_pool, init_weights
from robustlab.models.shufflenetv2 import channel_shuffle

#: Output channels of stages 2-4 per number of groups g (Zhang et al., 2018, Table 1, 1x); the
#: paper's g = 4 and 8 widths do not split into g groups with this (CRD's) first-unit rule.
STAGE_CHANNELS: dict[int, tuple[int, int, int]] = {
    1: (144, 288, 576),
    2: (200, 400, 800),
    3: (240, 480, 960),
}
#: Units per stage (Zhang et al., 2018, Table 1): the first of each has stride 2.
UNITS_PER_STAGE = (4, 8, 4)
STEM_CHANNELS = 24


class ShuffleUnitV1(nn.Module):
    """ShuffleNet unit (Zhang et al., Fig. 2b/c): grouped 1x1 conv-BN-ReLU to a quarter of the
    output width, channel shuffle, depthwise 3x3 conv-BN (stride s), grouped 1x1 conv-BN; then
    ``relu(x + branch)`` (s = 1) or ``relu(concat(branch, avgpool3x3_s2(x)))`` (s = 2, the branch
    making ``out - in`` channels). The first grouped conv after the stem is ungrouped (its input
    has only 24 channels)."""

    def __init__(self, in_ch: int, out_ch: int, stride: int, groups: int) -> None:
        super().__init__()
        branch_out = out_ch - in_ch if stride == 2 else out_ch
        mid = branch_out // 4
        first_groups = 1 if in_ch == STEM_CHANNELS else groups
        self.first_groups, self.stride = first_groups, stride
        self.reduce = nn.Sequential(
            nn.Conv2d(in_ch, mid, 1, groups=first_groups, bias=False),
            nn.BatchNorm2d(mid),
            nn.ReLU(),
        )
        self.depthwise = nn.Sequential(
            nn.Conv2d(mid, mid, 3, stride, 1, groups=mid, bias=False), nn.BatchNorm2d(mid)
        )
        self.expand = nn.Sequential(
            nn.Conv2d(mid, branch_out, 1, groups=groups, bias=False), nn.BatchNorm2d(branch_out)
        )
        self.shortcut = nn.AvgPool2d(3, stride=2, padding=1) if stride == 2 else nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = channel_shuffle(self.reduce(x), self.first_groups)
        out = self.expand(self.depthwise(out))
        residual = self.shortcut(x)
        merged = torch.cat([out, residual], 1) if self.stride == 2 else out + residual
        return torch.relu(merged)


class ShuffleNetV1(Backbone):
    """ShuffleNetV1 (1x, ``groups`` g): 1x1 stem conv-BN-ReLU with 24 channels (stride 1, no
    max-pool: the CIFAR variant of CRD/mdistiller), three stages of 4, 8, 4 units (the first of
    each with stride 2) of width ``STAGE_CHANNELS[g]``, global average pooling, linear."""

    stage_names = ("stem", "layer1", "layer2", "layer3")

    def __init__(self, num_classes: int = 10, in_channels: int = 3, groups: int = 3) -> None:
        super().__init__(num_classes, in_channels)
        groups = check_positive_int(groups, "groups")
        check(
            groups in STAGE_CHANNELS,
            f"groups must be one of {sorted(STAGE_CHANNELS)}, got {groups!r}",
        )
        self.stem = nn.Sequential(
            nn.Conv2d(in_channels, STEM_CHANNELS, 1, bias=False),
            nn.BatchNorm2d(STEM_CHANNELS),
            nn.ReLU(),
        )
        stages = []
        channels = STEM_CHANNELS
        for width, units in zip(STAGE_CHANNELS[groups], UNITS_PER_STAGE, strict=True):
            layers = [ShuffleUnitV1(channels, width, 2, groups)]
            layers += [ShuffleUnitV1(width, width, 1, groups) for _ in range(units - 1)]
            stages.append(nn.Sequential(*layers))
            channels = width
        self.layer1, self.layer2, self.layer3 = stages
        self.feature_dim = channels
        self.classifier = nn.Linear(channels, num_classes)
        init_weights(self)

    def features(self, x: torch.Tensor) -> torch.Tensor:
        return global_avg_pool(self.layer3(self.layer2(self.layer1(self.stem(x)))))


def shufflenetv1(num_classes: int = 10, in_channels: int = 3, groups: int = 3) -> ShuffleNetV1:
    """ShuffleNetV1 1x with ``groups`` (default 3, CRD's "ShuffleV1") for CIFAR-sized inputs."""
    return ShuffleNetV1(num_classes, in_channels, groups)
