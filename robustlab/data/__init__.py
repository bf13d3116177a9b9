"""Datasets as LightningDataModules: registry ``DATASETS`` and ``build_datamodule``.

See :class:`robustlab.data.base.ImageDataModule` for the shared options (Hydra keys ``data.*``).
"""

from __future__ import annotations

from typing import Any

from robustlab.data.arrays import load_array_file, load_images, load_labels
from robustlab.data.augment import crop_and_flip, random_crop, random_flip
from robustlab.data.base import ImageDataModule, LoadedData
from robustlab.data.cifar import (
    CiFAIR10DataModule,
    CiFAIR100DataModule,
    CIFAR10DataModule,
    CIFAR100DataModule,
)
from robustlab.data.digits import DigitsDataModule
from robustlab.data.groups import GroupBatchSampler
from robustlab.data.imagefolder import ImageFolderDataModule, ImageNetDataModule
from robustlab.data.mnist import FashionMNISTDataModule, MNISTDataModule
from robustlab.data.npz import NpzDataModule
from robustlab.data.sampler import ShardedBatchSampler
from robustlab.data.stl10 import STL10DataModule
from robustlab.data.svhn import SVHNDataModule
from robustlab.data.synthetic import SyntheticDataModule
from robustlab.data.tiny_imagenet import TinyImageNetDataModule
from robustlab.data.views import VIEW_RECIPES, register_view
from robustlab.registry import construct, resolve

DATASETS: dict[str, type[ImageDataModule]] = {
    cls.name: cls
    for cls in (
        DigitsDataModule,
        MNISTDataModule,
        FashionMNISTDataModule,
        CIFAR10DataModule,
        CIFAR100DataModule,
        CiFAIR10DataModule,
        CiFAIR100DataModule,
        SVHNDataModule,
        STL10DataModule,
        NpzDataModule,
        ImageFolderDataModule,
        ImageNetDataModule,
        TinyImageNetDataModule,
        SyntheticDataModule,
    )
}


def build_datamodule(name: str, **kwargs: Any) -> ImageDataModule:
    """Instantiate the datamodule called ``name`` (or at an import path) from config keys."""
    return construct(resolve(DATASETS, name, group="data"), f"data={name}", **kwargs)


__all__ = [
    "DATASETS",
    "VIEW_RECIPES",
    "GroupBatchSampler",
    "ImageDataModule",
    "LoadedData",
    "ShardedBatchSampler",
    "build_datamodule",
    "crop_and_flip",
    "load_array_file",
    "load_images",
    "load_labels",
    "random_crop",
    "random_flip",
    "register_view",
    *(cls.__name__ for cls in DATASETS.values()),
]
