"""CIFAR-10/100 (Krizhevsky 2009) and ciFAIR-10/100 (Barz & Denzler 2020).

Layouts read:
* torchvision's python batches ``root/cifar-10-batches-py`` (``cifar-100-python``), checksummed;
* otherwise the JPEG-decoded copy ``root/cifar10-jpeg/{train,test}.npz`` (keys ``images`` uint8
  NHWC and ``labels``), with a warning: its pixels are not the canonical ones.
ciFAIR ("Do we train on test data?", J. Imaging 2020) is CIFAR with the test images that have
near-duplicates in the training set replaced; its release ``ciFAIR-10.zip`` unpacks to
``root/ciFAIR-10`` in the CIFAR python layout (same training batches, new ``test_batch``).
"""

from __future__ import annotations

import warnings
from pathlib import Path

import torch
from torchvision import datasets

from robustlab.data.arrays import load_images, load_labels
from robustlab.data.base import ImageDataModule, LoadedData
from robustlab.data.files import missing_data_error
from robustlab.data.mnist import download_torchvision
from robustlab.data.sources import ArraySource
from robustlab.errors import DataNotFoundError

# fmt: off
CIFAR10_CLASSES = [
    "airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck",
]
CIFAR100_CLASSES = [
    "apple", "aquarium_fish", "baby", "bear", "beaver", "bed", "bee", "beetle", "bicycle",
    "bottle", "bowl", "boy", "bridge", "bus", "butterfly", "camel", "can", "castle", "caterpillar",
    "cattle", "chair", "chimpanzee", "clock", "cloud", "cockroach", "couch", "crab", "crocodile",
    "cup", "dinosaur", "dolphin", "elephant", "flatfish", "forest", "fox", "girl", "hamster",
    "house", "kangaroo", "keyboard", "lamp", "lawn_mower", "leopard", "lion", "lizard", "lobster",
    "man", "maple_tree", "motorcycle", "mountain", "mouse", "mushroom", "oak_tree", "orange",
    "orchid", "otter", "palm_tree", "pear", "pickup_truck", "pine_tree", "plain", "plate", "poppy",
    "porcupine", "possum", "rabbit", "raccoon", "ray", "road", "rocket", "rose", "sea", "seal",
    "shark", "shrew", "skunk", "skyscraper", "snail", "snake", "spider", "squirrel", "streetcar",
    "sunflower", "sweet_pepper", "table", "tank", "telephone", "television", "tiger", "tractor",
    "train", "trout", "tulip", "turtle", "wardrobe", "whale", "willow_tree", "wolf", "woman",
    "worm",
]
# fmt: on


class CiFAIR10Files(datasets.CIFAR10):
    """torchvision reader for the ciFAIR-10 v1.0 release (cvjena.github.io/cifair)."""

    base_folder = "ciFAIR-10"
    url = "https://github.com/cvjena/cifair/releases/download/v1.0/ciFAIR-10.zip"
    filename = "ciFAIR-10.zip"
    tgz_md5 = "ca08fd390f0839693d3fc45c4e49585f"
    test_list = [["test_batch", "01290e6b622a1977a000eff13650aca2"]]


class CiFAIR100Files(datasets.CIFAR100):
    """torchvision reader for the ciFAIR-100 v1.0 release (cvjena.github.io/cifair)."""

    base_folder = "ciFAIR-100"
    url = "https://github.com/cvjena/cifair/releases/download/v1.0/ciFAIR-100.zip"
    filename = "ciFAIR-100.zip"
    tgz_md5 = "ddc236ab4b12eeb8b20b952614861a33"
    test_list = [["test", "8130dae8d6fc6a436437f0ebdb801df1"]]


def _nchw(dataset: datasets.CIFAR10) -> ArraySource:
    images = torch.from_numpy(dataset.data).permute(0, 3, 1, 2).contiguous()
    return ArraySource(images, torch.as_tensor(dataset.targets, dtype=torch.int64))


class CIFAR10DataModule(ImageDataModule):
    """CIFAR-10 3x32x32, 10 classes, 50000 train / 10000 test."""

    name = "cifar10"
    downloadable = True
    title = "CIFAR-10"
    files_class: type = datasets.CIFAR10
    jpeg_folder: str | None = "cifar10-jpeg"
    fallback_classes = CIFAR10_CLASSES

    def _expected(self) -> list[Path]:
        folder = self.root / self.files_class.base_folder
        names = [name for name, _ in self.files_class.train_list + self.files_class.test_list]
        return [folder / name for name in [*names, self.files_class.meta["filename"]]]

    def _jpeg_files(self) -> list[Path]:
        return [self.root / self.jpeg_folder / f"{split}.npz" for split in ("train", "test")]

    def load_data(self) -> LoadedData:
        if all(path.is_file() for path in self._expected()):
            return self._load_python_batches()
        if self.jpeg_folder and not self.download and all(p.is_file() for p in self._jpeg_files()):
            return self._load_jpeg_copy()
        note = ""
        if self.jpeg_folder:
            note = (
                f"(The JPEG-decoded copy {self.jpeg_folder}/train.npz + test.npz is accepted too.)"
            )
        raise missing_data_error(
            self.name, self.root, self._expected(), downloadable=True, note=note
        )

    def _load_python_batches(self) -> LoadedData:
        try:
            train = self.files_class(str(self.root), train=True)
            test = self.files_class(str(self.root), train=False)
        except RuntimeError as error:
            raise DataNotFoundError(
                f"data={self.name}: files under {self.root / self.files_class.base_folder} are "
                f"incomplete or corrupted ({error}); delete them and set data.download=true"
            ) from error
        folder = self.root / self.files_class.base_folder
        return LoadedData(
            _nchw(train), _nchw(test), list(train.classes), f"{self.title} ({folder})"
        )

    def _load_jpeg_copy(self) -> LoadedData:
        train_file, test_file = self._jpeg_files()
        warnings.warn(
            f"data={self.name}: reading the JPEG-decoded copy {train_file.parent} (not the "
            f"canonical pixels); label numbers 'CIFAR-10 (JPEG-decoded copy)'",
            stacklevel=2,
        )
        splits = [
            ArraySource(load_images(f, "images"), load_labels(f, "labels"))
            for f in (train_file, test_file)
        ]
        return LoadedData(
            splits[0],
            splits[1],
            list(self.fallback_classes),
            f"{self.title} (JPEG-decoded copy, {train_file.parent})",
        )

    def download_data(self) -> None:
        download_torchvision(self.name, self.files_class, self.root, train=True)


class CIFAR100DataModule(CIFAR10DataModule):
    """CIFAR-100 3x32x32, 100 fine classes, 50000 train / 10000 test."""

    name = "cifar100"
    title = "CIFAR-100"
    files_class = datasets.CIFAR100
    jpeg_folder = "cifar100-jpeg"
    fallback_classes = CIFAR100_CLASSES


class CiFAIR10DataModule(CIFAR10DataModule):
    """ciFAIR-10: CIFAR-10 training set, duplicate-free test set (10000 images)."""

    name = "cifair10"
    title = "ciFAIR-10"
    files_class = CiFAIR10Files
    jpeg_folder = None


class CiFAIR100DataModule(CIFAR10DataModule):
    """ciFAIR-100: CIFAR-100 training set, duplicate-free test set (10000 images)."""

    name = "cifair100"
    title = "ciFAIR-100"
    files_class = CiFAIR100Files
    jpeg_folder = None
    fallback_classes = CIFAR100_CLASSES
