"""MobileNetV2 adapted to 32 x 32 inputs (Sandler et al., "MobileNetV2: Inverted Residuals and
Linear Bottlenecks", CVPR 2018)."""

from __future__ import annotations

import torch
from torch import nn

from robustlab.errors import check
from robustlab.models.base import (
    Backbone,
    check_positive_int,
    check_positive_number,
    global_avg_pool,
    init_weights,
)

#: (expansion t, output channels c, repeats n, first stride s) per stage; ``None`` means the
#: network's expansion factor. Stage 2 has stride 1 instead of the paper's 2 (CIFAR adaptation).
STAGES: tuple[tuple[int | None, int, int, int], ...] = (
    (1, 16, 1, 1),
    (None, 24, 2, 1),
    (None, 32, 3, 2),
    (None, 64, 4, 2),
    (None, 96, 3, 1),
    (None, 160, 3, 2),
    (None, 320, 1, 1),
)


def _conv_bn_relu6(in_ch: int, out_ch: int, kernel: int, stride: int = 1, groups: int = 1):
    return nn.Sequential(
        nn.Conv2d(in_ch, out_ch, kernel, stride, kernel // 2, groups=groups, bias=False),
        nn.BatchNorm2d(out_ch),
        nn.ReLU6(),
    )


class InvertedResidual(nn.Module):
    """y = [x +] bn(pw(relu6(bn(dw3x3(relu6(bn(pw(x)))))))): 1x1 expansion by t (skipped when
    t = 1), depthwise 3x3, linear 1x1 projection; residual when stride 1 and shapes match
    (Sandler et al., 2018)."""

    def __init__(self, in_ch: int, out_ch: int, stride: int, expansion: int) -> None:
        super().__init__()
        hidden = in_ch * expansion
        layers: list[nn.Module] = []
        if expansion != 1:
            layers.append(_conv_bn_relu6(in_ch, hidden, 1))
        layers += [
            _conv_bn_relu6(hidden, hidden, 3, stride, groups=hidden),
            nn.Conv2d(hidden, out_ch, 1, bias=False),
            nn.BatchNorm2d(out_ch),
        ]
        self.conv = nn.Sequential(*layers)
        self.use_residual = stride == 1 and in_ch == out_ch

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.conv(x)
        return x + out if self.use_residual else out


class MobileNetV2(Backbone):
    """MobileNetV2: conv3x3 stem (32 w channels), seven stages of inverted residuals (``STAGES``,
    channels scaled by w), 1x1 conv to max(1280, 1280 w) channels, global average pooling,
    linear (Sandler et al., CVPR 2018). ``stem_stride=1`` is the usual CIFAR adaptation (total
    stride 8); ``stem_stride=2`` with w = 0.5 is the "MobileNetV2" student of CRD/mdistiller.
    """

    stage_names = ("stem", "stages.1", "stages.2", "stages.4", "stages.6", "head")

    def __init__(
        self,
        num_classes: int = 10,
        in_channels: int = 3,
        width_mult: float = 1.0,
        expansion: int = 6,
        stem_stride: int = 1,
    ) -> None:
        super().__init__(num_classes, in_channels)
        check_positive_number(width_mult, "width_mult")
        expansion = check_positive_int(expansion, "expansion")
        check(stem_stride in (1, 2), f"stem_stride must be 1 or 2, got {stem_stride!r}")

        def scaled(c: int) -> int:
            return max(1, int(c * width_mult))

        channels = scaled(32)
        self.stem = _conv_bn_relu6(in_channels, channels, 3, stem_stride)
        stages = []
        for t, c, n, s in STAGES:
            units = []
            for stride in [s] + [1] * (n - 1):
                units.append(InvertedResidual(channels, scaled(c), stride, t or expansion))
                channels = scaled(c)
            stages.append(nn.Sequential(*units))
        self.stages = nn.Sequential(*stages)
        last = max(1280, int(1280 * width_mult))
        self.head = _conv_bn_relu6(channels, last, 1)
        self.feature_dim = last
        self.classifier = nn.Linear(last, num_classes)
        init_weights(self)

    def features(self, x: torch.Tensor) -> torch.Tensor:
        return global_avg_pool(self.head(self.stages(self.stem(x))))


def mobilenetv2(
    num_classes: int = 10,
    in_channels: int = 3,
    width_mult: float = 1.0,
    expansion: int = 6,
    stem_stride: int = 1,
) -> MobileNetV2:
    """MobileNetV2 for CIFAR (stride-1 stem), width multiplier ``width_mult``."""
    return MobileNetV2(num_classes, in_channels, width_mult, expansion, stem_stride)


def mobilenetv2_half(num_classes: int = 10, in_channels: int = 3) -> MobileNetV2:
    """MobileNetV2 x0.5 with a stride-2 stem, the "MobileNetV2" student of the CRD and mdistiller
    benchmarks (Tian et al., ICLR 2020)."""
    return MobileNetV2(num_classes, in_channels, width_mult=0.5, expansion=6, stem_stride=2)
