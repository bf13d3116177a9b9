"""The ResNet-32 of WINN's released code (Lee et al., CVPR 2018): pre-activation residual units
(He et al., ECCV 2016) with layer normalisation (Ba et al., 2016) and swish (Ramachandran et
al., 2017) in place of batch normalisation and ReLU.

Layout (from the authors' TensorFlow notebook ``WINN-ResNet-MNIST``): conv3x3(16) → LN → swish;
three stages of n units (n = 5 for ResNet-32) with 16, 32, 64 channels, the first unit of
stages 2 and 3 halving the resolution (stride-2 conv; shortcut: 2×2 average pooling and zero
channel padding); unit = LN → swish → conv3x3 → LN → swish → conv3x3, plus the shortcut (the
very first unit skips its leading LN → swish, the stem just applied them); then LN → swish →
global average pooling → linear. Layer norm normalises each image over (C, H, W) with a
per-channel scale and shift (TensorFlow's ``layer_norm`` defaults), i.e. ``GroupNorm(1, C)``.
Without batch statistics every image's output depends on that image alone, which the WGAN-GP
penalty and per-image synthesis rely on.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from robustlab.models.base import Backbone, check_positive_int, global_avg_pool


def layer_norm(channels: int) -> nn.GroupNorm:
    """Layer norm over (C, H, W) with a per-channel affine (TensorFlow ``layer_norm``)."""
    return nn.GroupNorm(1, channels)


class WinnUnit(nn.Module):
    """A pre-activation residual unit with layer norm and swish (module docstring)."""

    def __init__(self, in_planes: int, planes: int, stride: int, pre_activate: bool = True):
        super().__init__()
        self.pre = nn.Sequential(layer_norm(in_planes), nn.SiLU()) if pre_activate else None
        self.conv1 = nn.Conv2d(in_planes, planes, 3, stride=stride, padding=1, bias=False)
        self.norm1 = layer_norm(planes)
        self.conv2 = nn.Conv2d(planes, planes, 3, padding=1, bias=False)
        self.stride, self.extra = stride, planes - in_planes

    def shortcut(self, x: torch.Tensor) -> torch.Tensor:
        if self.stride > 1:
            x = F.avg_pool2d(x, self.stride, ceil_mode=True)  # "SAME" pooling: odd sizes fit
        if self.extra:
            x = F.pad(x, (0, 0, 0, 0, self.extra // 2, self.extra - self.extra // 2))
        return x

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.pre(x) if self.pre is not None else x
        h = self.conv2(F.silu(self.norm1(self.conv1(h))))
        return h + self.shortcut(x)


class ResNetWinn(Backbone):
    """ResNet-(6n+2) with layer norm and swish, as in WINN's code (module docstring)."""

    stage_names = ("stem", "layer1", "layer2", "layer3")

    def __init__(
        self, units: int = 5, width: int = 16, num_classes: int = 10, in_channels: int = 3
    ) -> None:
        super().__init__(num_classes, in_channels)
        units = check_positive_int(units, "units")
        width = check_positive_int(width, "width")
        self.stem = nn.Sequential(
            nn.Conv2d(in_channels, width, 3, padding=1, bias=False), layer_norm(width), nn.SiLU()
        )
        stages = []
        for index, planes in enumerate((width, 2 * width, 4 * width)):
            in_planes = width if index == 0 else planes // 2
            blocks = [WinnUnit(in_planes, planes, 1 if index == 0 else 2, pre_activate=index > 0)]
            blocks += [WinnUnit(planes, planes, 1) for _ in range(units - 1)]
            stages.append(nn.Sequential(*blocks))
        self.layer1, self.layer2, self.layer3 = stages
        self.head = nn.Sequential(layer_norm(4 * width), nn.SiLU())
        self.feature_dim = 4 * width
        self.classifier = nn.Linear(self.feature_dim, num_classes)
        for m in self.modules():
            if isinstance(m, nn.Conv2d):  # variance scaling (He et al. 2015), as in the code
                nn.init.kaiming_normal_(m.weight, mode="fan_in", nonlinearity="relu")

    def features(self, x: torch.Tensor) -> torch.Tensor:
        x = self.layer3(self.layer2(self.layer1(self.stem(x))))
        return global_avg_pool(self.head(x))


def resnet32_winn(num_classes: int = 10, in_channels: int = 3, width: int = 16) -> ResNetWinn:
    """WINN's ResNet-32 (5 units per stage, 16/32/64 channels, layer norm, swish)."""
    return ResNetWinn(5, width, num_classes, in_channels)
