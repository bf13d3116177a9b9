"""STL-10 labelled splits (Coates et al. 2011) from ``root/stl10_binary/{train,test}_{X,y}.bin``.

X files are uint8 (N, 3, 96, 96) stored column-major per channel (transposed here); y files hold
labels 1..10 (shifted to 0..9). The unlabelled split is not read. ``download=true`` uses
torchvision's downloader (the full 2.5 GB archive).
"""

from __future__ import annotations

import numpy as np
import torch
from torchvision import datasets

from robustlab.data.base import ImageDataModule, LoadedData
from robustlab.data.files import missing_data_error
from robustlab.data.mnist import download_torchvision
from robustlab.data.sources import ArraySource

STL10_CLASSES = [
    "airplane",
    "bird",
    "car",
    "cat",
    "deer",
    "dog",
    "horse",
    "monkey",
    "ship",
    "truck",
]


class STL10DataModule(ImageDataModule):
    """STL-10 3x96x96, 10 classes, 5000 train / 8000 test."""

    name = "stl10"
    downloadable = True

    @property
    def folder(self):
        return self.root / datasets.STL10.base_folder

    def load_data(self) -> LoadedData:
        expected = [
            self.folder / f"{split}_{kind}.bin" for split in ("train", "test") for kind in "Xy"
        ]
        if not all(path.is_file() for path in expected):
            raise missing_data_error(self.name, self.root, expected, downloadable=True)
        splits = []
        for split in ("train", "test"):
            raw = np.fromfile(self.folder / f"{split}_X.bin", dtype=np.uint8)
            images = torch.from_numpy(raw.reshape(-1, 3, 96, 96)).transpose(2, 3).contiguous()
            labels = torch.from_numpy(np.fromfile(self.folder / f"{split}_y.bin", dtype=np.uint8))
            splits.append(ArraySource(images, labels.long() - 1))
        return LoadedData(splits[0], splits[1], list(STL10_CLASSES), f"STL-10 ({self.folder})")

    def download_data(self) -> None:
        download_torchvision(self.name, datasets.STL10, self.root, split="train")
