"""MobileNetV1 (Howard et al., "MobileNets: Efficient Convolutional Neural Networks for Mobile
Vision Applications", arXiv 1704.04861, 2017), with a stride-1 stem for 32 x 32 inputs."""

from __future__ import annotations

import torch
from torch import nn

from robustlab.errors import check
from robustlab.models.base import Backbone, check_positive_number, global_avg_pool, init_weights

#: (output channels, stride) of the 13 depthwise-separable layers (Howard et al., Table 1).
LAYERS: tuple[tuple[int, int], ...] = (
    (64, 1),
    (128, 2),
    (128, 1),
    (256, 2),
    (256, 1),
    (512, 2),
    (512, 1),
    (512, 1),
    (512, 1),
    (512, 1),
    (512, 1),
    (1024, 2),
    (1024, 1),
)
STEM_CHANNELS = 32


def _conv_bn_relu(in_ch: int, out_ch: int, kernel: int, stride: int = 1, groups: int = 1):
    return nn.Sequential(
        nn.Conv2d(in_ch, out_ch, kernel, stride, kernel // 2, groups=groups, bias=False),
        nn.BatchNorm2d(out_ch),
        nn.ReLU(),
    )


def depthwise_separable(in_ch: int, out_ch: int, stride: int) -> nn.Sequential:
    """Depthwise 3x3 conv-BN-ReLU (stride s) then pointwise 1x1 conv-BN-ReLU (Howard, Fig. 3)."""
    return nn.Sequential(
        _conv_bn_relu(in_ch, in_ch, 3, stride, groups=in_ch), _conv_bn_relu(in_ch, out_ch, 1)
    )


class MobileNetV1(Backbone):
    """MobileNetV1 1x: 3x3 stem conv-BN-ReLU (32 channels), 13 depthwise-separable layers
    (``LAYERS``, channels x ``width_mult``), global average pooling, linear. ``stem_stride=2``
    is the ImageNet network (the ResNet-50 -> MobileNetV1 student of mdistiller/CRLD, 4.2M
    parameters at 1000 classes); ``stem_stride=1`` (default) the CIFAR adaptation (total
    stride 16, a 2 x 2 map before pooling at 32 px)."""

    stage_names = ("stem", "layers.2", "layers.4", "layers.10", "layers.12")

    def __init__(
        self,
        num_classes: int = 10,
        in_channels: int = 3,
        width_mult: float = 1.0,
        stem_stride: int = 1,
    ) -> None:
        super().__init__(num_classes, in_channels)
        check_positive_number(width_mult, "width_mult")
        check(stem_stride in (1, 2), f"stem_stride must be 1 or 2, got {stem_stride!r}")

        def scaled(c: int) -> int:
            return max(1, int(c * width_mult))

        channels = scaled(STEM_CHANNELS)
        self.stem = _conv_bn_relu(in_channels, channels, 3, stem_stride)
        layers = []
        for out_ch, stride in LAYERS:
            layers.append(depthwise_separable(channels, scaled(out_ch), stride))
            channels = scaled(out_ch)
        self.layers = nn.Sequential(*layers)
        self.feature_dim = channels
        self.classifier = nn.Linear(channels, num_classes)
        init_weights(self)

    def features(self, x: torch.Tensor) -> torch.Tensor:
        return global_avg_pool(self.layers(self.stem(x)))


def mobilenetv1(
    num_classes: int = 10, in_channels: int = 3, width_mult: float = 1.0, stem_stride: int = 1
) -> MobileNetV1:
    """MobileNetV1 with width multiplier ``width_mult``; ``stem_stride=2`` for ImageNet."""
    return MobileNetV1(num_classes, in_channels, width_mult, stem_stride)
