"""Per-image datasets for the ordinary DataLoader path: ``dataset[i] -> (image, label)``.

Without a transform an image comes out as a float tensor (C, H, W) in [0, 1]; with one, the
image is handed to the (torchvision/PIL) transform as a PIL image, so the transform must end in
``ToTensor()``.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np
import torch
from PIL import Image
from torch import Tensor
from torch.utils.data import Dataset


class ArrayItems(Dataset):
    """Images of a uint8 (N, C, H, W) tensor, optionally restricted to ``index``."""

    def __init__(
        self,
        images: Tensor,
        labels: Tensor,
        index: Tensor | None = None,
        transform: Callable | None = None,
    ) -> None:
        self.images = images
        self.labels = labels
        self.index = torch.arange(len(labels)) if index is None else index
        self.transform = transform
        # PIL wants contiguous HWC rows; one copy up front instead of one per item.
        self._hwc = None if transform is None else images.permute(0, 2, 3, 1).contiguous().numpy()

    def __len__(self) -> int:
        return len(self.index)

    def __getitem__(self, i: int) -> tuple[Tensor, int]:
        row = int(self.index[i])
        label = int(self.labels[row])
        if self.transform is None:
            return self.images[row].to(torch.float32).div_(255), label
        array = self._hwc[row]
        image = Image.fromarray(array[..., 0] if array.shape[-1] == 1 else array)
        return self.transform(image), label


class FileItems(Dataset):
    """Image files ``paths[index[i]]`` opened with PIL in ``mode`` ("RGB" or "L")."""

    def __init__(
        self,
        paths: Sequence[str],
        labels: Tensor,
        index: Tensor | None = None,
        transform: Callable | None = None,
        mode: str = "RGB",
    ) -> None:
        self.paths = list(paths)
        self.labels = labels
        self.index = torch.arange(len(labels)) if index is None else index
        self.transform = transform
        self.mode = mode

    def __len__(self) -> int:
        return len(self.index)

    def __getitem__(self, i: int) -> tuple[Tensor, int]:
        row = int(self.index[i])
        with Image.open(self.paths[row]) as file:
            image = file.convert(self.mode)
        if self.transform is None:
            array = np.asarray(image, dtype=np.uint8)
            array = array[..., None] if array.ndim == 2 else array
            tensor = torch.from_numpy(array.copy()).permute(2, 0, 1).to(torch.float32).div_(255)
            return tensor, int(self.labels[row])
        return self.transform(image), int(self.labels[row])
