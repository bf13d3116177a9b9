"""Where one split's images live: in memory (``ArraySource``) or as files (``FileSource``).

A source knows its labels and builds the datasets both loading paths need for an index subset.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch
from torch import Tensor
from torch.utils.data import Dataset
from torchvision import transforms as T

from robustlab.data.arrays import channel_stats
from robustlab.data.batches import TensorBatches
from robustlab.data.items import ArrayItems, FileItems


class ArraySource:
    """A split held as uint8 images (N, C, H, W) and int64 labels (N,)."""

    resident = True

    def __init__(self, images: Tensor, labels: Tensor) -> None:
        if images.dtype != torch.uint8 or images.ndim != 4:
            raise ValueError(
                f"images must be uint8 (N, C, H, W), got {images.dtype} {tuple(images.shape)}"
            )
        if labels.shape != (images.shape[0],):
            raise ValueError(
                f"labels must have shape ({images.shape[0]},), got {tuple(labels.shape)}"
            )
        self.images = images.contiguous()
        self.labels = labels.to(torch.int64)

    def __len__(self) -> int:
        return len(self.labels)

    @property
    def channels(self) -> int:
        return int(self.images.shape[1])

    @property
    def image_size(self) -> tuple[int, int]:
        return int(self.images.shape[2]), int(self.images.shape[3])

    def batches(self, index: Tensor | None = None) -> Dataset:
        return TensorBatches(self.images, self.labels, index)

    def items(self, index: Tensor | None = None, transform: Callable | None = None) -> Dataset:
        return ArrayItems(self.images, self.labels, index, transform)

    def stats(self) -> tuple[tuple[float, ...], tuple[float, ...]]:
        return channel_stats(self.images)


class FileSource:
    """A split stored as image files, each passed through ``pre`` (e.g. Resize + CenterCrop), or
    through ``train_pre`` when training draws from it and one is given (e.g. RandomResizedCrop)."""

    resident = False

    def __init__(
        self,
        paths: Sequence[str],
        labels: Tensor,
        *,
        channels: int = 3,
        pre: Sequence[Callable] = (),
        train_pre: Sequence[Callable] | None = None,
    ) -> None:
        self.paths = list(paths)
        self.labels = labels.to(torch.int64)
        self.channels = channels
        self.pre = list(pre)
        self.train_pre = self.pre if train_pre is None else list(train_pre)

    def __len__(self) -> int:
        return len(self.labels)

    def items(self, index: Tensor | None = None, transform: Callable | None = None) -> Dataset:
        transform = transform if transform is not None else T.Compose([*self.pre, T.ToTensor()])
        return FileItems(
            self.paths, self.labels, index, transform, "L" if self.channels == 1 else "RGB"
        )

    @property
    def image_size(self) -> tuple[int, int]:
        image, _ = self.items()[0]
        return int(image.shape[1]), int(image.shape[2])

    def stats(self, max_images: int = 512) -> tuple[tuple[float, ...], tuple[float, ...]]:
        """Per-channel mean/std over a fixed random sample of at most ``max_images`` images."""
        order = torch.randperm(len(self), generator=torch.Generator().manual_seed(0))[:max_images]
        items = self.items(order.sort().values)
        total = torch.zeros(self.channels, dtype=torch.float64)
        squares = torch.zeros(self.channels, dtype=torch.float64)
        count = 0
        for i in range(len(items)):
            image = items[i][0].double()
            total += image.sum(dim=(1, 2))
            squares += image.square().sum(dim=(1, 2))
            count += image.shape[1] * image.shape[2]
        mean = total / count
        std = (squares / count - mean.square()).clamp_min(0).sqrt()
        return tuple(mean.tolist()), tuple(std.tolist())
