"""VGG networks with batch normalisation for CIFAR, in the five-block layout of the CRD
distillation benchmark (Tian et al., ICLR 2020): fully-connected layers replaced by global
average pooling and a single linear layer."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from robustlab.errors import check
from robustlab.models.base import Backbone, check_positive_int, global_avg_pool, init_weights

#: Channels of the 3x3 convs in each of the five blocks (CRD configurations S, A, B, D, E).
VGG_CONFIGS: dict[str, tuple[tuple[int, ...], ...]] = {
    "vgg8": ((64,), (128,), (256,), (512,), (512,)),
    "vgg11": ((64,), (128,), (256, 256), (512, 512), (512, 512)),
    "vgg13": ((64, 64), (128, 128), (256, 256), (512, 512), (512, 512)),
    "vgg16": ((64, 64), (128, 128), (256, 256, 256), (512, 512, 512), (512, 512, 512)),
    "vgg19": (
        (64, 64),
        (128, 128),
        (256, 256, 256, 256),
        (512, 512, 512, 512),
        (512, 512, 512, 512),
    ),
}


class VGG(Backbone):
    """VGG-BN: five blocks of conv3x3-BN-ReLU, 2x2 max-pool after the first three blocks,
    global average pooling, linear (Simonyan & Zisserman, ICLR 2015; CIFAR layout of CRD,
    Tian et al., ICLR 2020). Depth = number of convs + 1.
    """

    stage_names = ("block0", "block1", "block2", "block3", "block4")

    def __init__(
        self,
        config: Sequence[Sequence[int]],
        num_classes: int = 10,
        in_channels: int = 3,
    ) -> None:
        super().__init__(num_classes, in_channels)
        check(len(config) == 5, f"a VGG config needs 5 blocks of channel lists, got {config!r}")
        blocks = []
        channels = in_channels
        for block in config:
            check(len(block) >= 1, f"every VGG block needs at least one conv, got {config!r}")
            layers: list[nn.Module] = []
            for width in block:
                width = check_positive_int(width, "VGG channels")
                layers += [
                    nn.Conv2d(channels, width, 3, padding=1, bias=False),
                    nn.BatchNorm2d(width),
                    nn.ReLU(),
                ]
                channels = width
            blocks.append(nn.Sequential(*layers))
        self.block0, self.block1, self.block2, self.block3, self.block4 = blocks
        self.pool = nn.MaxPool2d(2)
        self.feature_dim = channels
        self.classifier = nn.Linear(channels, num_classes)
        init_weights(self)

    def features(self, x: torch.Tensor) -> torch.Tensor:
        x = self.pool(self.block0(x))
        x = self.pool(self.block1(x))
        x = self.pool(self.block2(x))
        return global_avg_pool(self.block4(self.block3(x)))


def vgg8(num_classes: int = 10, in_channels: int = 3) -> VGG:
    """VGG-8-BN (CRD configuration S: 64 | 128 | 256 | 512 | 512), a distillation student."""
    return VGG(VGG_CONFIGS["vgg8"], num_classes, in_channels)


def vgg11(num_classes: int = 10, in_channels: int = 3) -> VGG:
    """VGG-11-BN (configuration A)."""
    return VGG(VGG_CONFIGS["vgg11"], num_classes, in_channels)


def vgg13(num_classes: int = 10, in_channels: int = 3) -> VGG:
    """VGG-13-BN (configuration B: 64,64 | 128,128 | 256,256 | 512,512 | 512,512), a teacher."""
    return VGG(VGG_CONFIGS["vgg13"], num_classes, in_channels)


def vgg16(num_classes: int = 10, in_channels: int = 3) -> VGG:
    """VGG-16-BN (configuration D)."""
    return VGG(VGG_CONFIGS["vgg16"], num_classes, in_channels)


def vgg19(num_classes: int = 10, in_channels: int = 3) -> VGG:
    """VGG-19-BN (configuration E)."""
    return VGG(VGG_CONFIGS["vgg19"], num_classes, in_channels)
