"""ShuffleNetV2 adapted to 32 x 32 inputs (Ma et al., "ShuffleNet V2: Practical Guidelines for
Efficient CNN Architecture Design", ECCV 2018)."""

from __future__ import annotations

import torch
from torch import nn

from robustlab.errors import check
from robustlab.models.base import Backbone, global_avg_pool, init_weights

#: Output channels of stages 2-4 and of conv5 per net size (Ma et al., 2018, Table 5).
NET_SIZES: dict[float, tuple[int, int, int, int]] = {
    0.5: (48, 96, 192, 1024),
    1.0: (116, 232, 464, 1024),
    1.5: (176, 352, 704, 1024),
    2.0: (244, 488, 976, 2048),
}
#: Basic units after the downsampling unit of each stage (the paper's repeats 4, 8, 4 minus one).
BLOCKS_PER_STAGE = (3, 7, 3)
STEM_CHANNELS = 24


def channel_shuffle(x: torch.Tensor, groups: int) -> torch.Tensor:
    """Interleave channel groups: (B, g * c, H, W) -> view (B, g, c) -> transpose -> (B, c * g)."""
    b, c, h, w = x.shape
    return x.reshape(b, groups, c // groups, h, w).transpose(1, 2).reshape(b, c, h, w)


def _conv_bn(in_ch: int, out_ch: int, kernel: int, stride: int = 1, groups: int = 1):
    return nn.Sequential(
        nn.Conv2d(in_ch, out_ch, kernel, stride, kernel // 2, groups=groups, bias=False),
        nn.BatchNorm2d(out_ch),
    )


def _branch(in_ch: int, out_ch: int, stride: int) -> nn.Sequential:
    """1x1 conv-BN-ReLU, depthwise 3x3 conv-BN (stride), 1x1 conv-BN-ReLU."""
    return nn.Sequential(
        _conv_bn(in_ch, out_ch, 1),
        nn.ReLU(),
        _conv_bn(out_ch, out_ch, 3, stride, groups=out_ch),
        _conv_bn(out_ch, out_ch, 1),
        nn.ReLU(),
    )


class ShuffleUnit(nn.Module):
    """Basic unit: split channels in halves, y = shuffle(concat(x1, branch(x2))) (Ma et al.)."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.branch = _branch(channels // 2, channels // 2, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x1, x2 = x.chunk(2, dim=1)
        return channel_shuffle(torch.cat([x1, self.branch(x2)], dim=1), 2)


class ShuffleDownUnit(nn.Module):
    """Downsampling unit: y = shuffle(concat(left(x), right(x))), both branches stride 2,
    left = depthwise 3x3-BN then 1x1-BN-ReLU (Ma et al., 2018, Fig. 3d)."""

    def __init__(self, in_ch: int, out_ch: int) -> None:
        super().__init__()
        mid = out_ch // 2
        self.left = nn.Sequential(
            _conv_bn(in_ch, in_ch, 3, 2, groups=in_ch), _conv_bn(in_ch, mid, 1), nn.ReLU()
        )
        self.right = _branch(in_ch, mid, 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return channel_shuffle(torch.cat([self.left(x), self.right(x)], dim=1), 2)


class ShuffleNetV2(Backbone):
    """ShuffleNetV2: stem conv-BN-ReLU with 24 channels (stride 1, no max-pool), three stages of
    one downsampling unit and 3, 7, 3 basic units, 1x1 conv-BN-ReLU, global average pooling,
    linear (Ma et al., ECCV 2018). The 1x1 stem default is the CIFAR variant of the CRD and
    mdistiller distillation benchmarks; ``stem_kernel_size=3`` is the usual alternative.
    """

    stage_names = ("stem", "layer1", "layer2", "layer3", "head")

    def __init__(
        self,
        num_classes: int = 10,
        in_channels: int = 3,
        net_size: float = 1.0,
        stem_kernel_size: int = 1,
    ) -> None:
        super().__init__(num_classes, in_channels)
        check(
            not isinstance(net_size, bool) and net_size in NET_SIZES,
            f"net_size must be one of {sorted(NET_SIZES)}, got {net_size!r}",
        )
        check(
            stem_kernel_size in (1, 3),
            f"stem_kernel_size must be 1 or 3, got {stem_kernel_size!r}",
        )
        widths = NET_SIZES[float(net_size)]
        self.stem = nn.Sequential(_conv_bn(in_channels, STEM_CHANNELS, stem_kernel_size), nn.ReLU())
        stages = []
        channels = STEM_CHANNELS
        for width, blocks in zip(widths[:3], BLOCKS_PER_STAGE, strict=True):
            units: list[nn.Module] = [ShuffleDownUnit(channels, width)]
            units += [ShuffleUnit(width) for _ in range(blocks)]
            stages.append(nn.Sequential(*units))
            channels = width
        self.layer1, self.layer2, self.layer3 = stages
        self.head = nn.Sequential(_conv_bn(channels, widths[3], 1), nn.ReLU())
        self.feature_dim = widths[3]
        self.classifier = nn.Linear(widths[3], num_classes)
        init_weights(self)

    def features(self, x: torch.Tensor) -> torch.Tensor:
        out = self.layer3(self.layer2(self.layer1(self.stem(x))))
        return global_avg_pool(self.head(out))


def shufflenetv2(
    num_classes: int = 10,
    in_channels: int = 3,
    net_size: float = 1.0,
    stem_kernel_size: int = 1,
) -> ShuffleNetV2:
    """ShuffleNetV2 ``net_size`` x (0.5, 1, 1.5 or 2) for CIFAR-sized inputs."""
    return ShuffleNetV2(num_classes, in_channels, net_size, stem_kernel_size)
