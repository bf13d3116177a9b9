"""MNIST and Fashion-MNIST from the original idx files (gzipped or not).

Layout as ``torchvision.datasets.MNIST(root)`` expects:
``root/MNIST/raw/train-images-idx3-ubyte.gz`` etc. (``root/FashionMNIST/raw`` for Fashion-MNIST);
``download=true`` uses torchvision's downloader.
"""

from __future__ import annotations

from pathlib import Path
from urllib.error import URLError

import torch
from torchvision import datasets

from robustlab.data.arrays import read_idx
from robustlab.data.base import ImageDataModule, LoadedData
from robustlab.data.files import missing_data_error
from robustlab.data.sources import ArraySource
from robustlab.errors import DataNotFoundError

IDX_FILES = {
    "train": ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"),
    "test": ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"),
}


def download_torchvision(dataset: str, factory: type, root: Path, **kwargs) -> None:
    """Run a torchvision dataset's own downloader; failures become DataNotFoundError."""
    try:
        factory(str(root), download=True, **kwargs)
    except (RuntimeError, URLError, OSError) as error:
        raise DataNotFoundError(
            f"data={dataset}: download into {root} failed ({error}); check the network or put the "
            "files there by hand"
        ) from error


class MNISTDataModule(ImageDataModule):
    """MNIST 1x28x28, 10 classes, 60000 train / 10000 test."""

    name = "mnist"
    downloadable = True
    torchvision_class: type = datasets.MNIST
    title = "MNIST"
    classes = [str(k) for k in range(10)]

    @property
    def raw_folder(self) -> Path:
        return self.root / self.torchvision_class.__name__ / "raw"

    def _find(self, stem: str) -> Path | None:
        for candidate in (self.raw_folder / stem, self.raw_folder / f"{stem}.gz"):
            if candidate.is_file():
                return candidate
        return None

    def load_data(self) -> LoadedData:
        stems = [stem for pair in IDX_FILES.values() for stem in pair]
        found = {stem: self._find(stem) for stem in stems}
        if not all(found.values()):
            expected = [self.raw_folder / f"{stem}.gz" for stem in stems]
            raise missing_data_error(
                self.name,
                self.root,
                expected,
                downloadable=True,
                note="(uncompressed idx files are accepted too)",
            )
        splits = []
        for image_stem, label_stem in IDX_FILES.values():
            images = torch.from_numpy(read_idx(found[image_stem]).copy()).unsqueeze(1)
            labels = torch.from_numpy(read_idx(found[label_stem]).astype("int64"))
            splits.append(ArraySource(images, labels))
        return LoadedData(
            splits[0],
            splits[1],
            list(self.classes),
            f"{self.title} (idx files in {self.raw_folder})",
        )

    def download_data(self) -> None:
        for train in (True, False):
            download_torchvision(self.name, self.torchvision_class, self.root, train=train)


class FashionMNISTDataModule(MNISTDataModule):
    """Fashion-MNIST 1x28x28, 10 classes, 60000 train / 10000 test (Xiao et al. 2017)."""

    name = "fashion_mnist"
    torchvision_class = datasets.FashionMNIST
    title = "Fashion-MNIST"
    classes = list(datasets.FashionMNIST.classes)
