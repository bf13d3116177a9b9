"""Images on disk in class folders (``root/train/<class>/*.png``, ``root/val/<class>/...``).

Always the DataLoader path (b): files are decoded per image in worker processes. Optional
``image_size`` makes every image square: Resize(shorter side = ``resize`` or ``image_size``) then
CenterCrop(``image_size``); without it all images must already share one size. With
``random_resized_crop`` training images instead get the ImageNet training crop (Szegedy et al.
2015): a random window of ``crop_scale`` of the area and aspect ratio in [3/4, 4/3], resized to
``image_size`` (validation and test keep the centre crop). ``mean``/``std`` fix the per-channel
normalisation (e.g. ImageNet's, which pretrained torchvision weights expect); null estimates them
from 512 seeded training images.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
from torchvision import transforms as T
from torchvision.datasets.folder import IMG_EXTENSIONS, find_classes, make_dataset

from robustlab.data.base import ImageDataModule, LoadedData
from robustlab.data.files import missing_data_error
from robustlab.data.sources import FileSource
from robustlab.errors import check


def _is_size(value: Any) -> bool:
    return value is None or (isinstance(value, int) and not isinstance(value, bool) and value >= 1)


class ImageFolderDataModule(ImageDataModule):
    """torchvision ImageFolder layout; class indices follow the sorted train class folders."""

    name = "imagefolder"

    def __init__(
        self,
        train_dir: str = "train",
        test_dir: str = "val",
        image_size: int | None = None,
        resize: int | None = None,
        channels: int = 3,
        random_resized_crop: bool = False,
        crop_scale: Sequence[float] = (0.08, 1.0),
        mean: Sequence[float] | None = None,
        std: Sequence[float] | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        check(
            _is_size(image_size),
            f"data.image_size must be an integer >= 1 or null, got {image_size!r}",
        )
        check(_is_size(resize), f"data.resize must be an integer >= 1 or null, got {resize!r}")
        check(
            resize is None or image_size is not None, "data.resize needs data.image_size (the crop)"
        )
        check(channels in (1, 3), f"data.channels must be 1 or 3, got {channels!r}")
        check(
            not random_resized_crop or image_size is not None,
            "data.random_resized_crop needs data.image_size (the output size)",
        )
        check(
            len(crop_scale) == 2 and 0 < crop_scale[0] <= crop_scale[1] <= 1,
            f"data.crop_scale must be [min, max] area fractions with 0 < min <= max <= 1, "
            f"got {list(crop_scale)}",
        )
        check(
            (mean is None) == (std is None)
            and all(v is None or len(v) == channels for v in (mean, std))
            and all(x > 0 for x in std or ()),
            f"data.mean and data.std must both be null or both list {channels} value(s) (std > 0), "
            f"got mean={mean!r}, std={std!r}",
        )
        self.train_dir = self.root / train_dir
        self.test_dir = self.root / test_dir
        self.channels = channels
        self.pre = (
            [] if image_size is None else [T.Resize(resize or image_size), T.CenterCrop(image_size)]
        )
        self.train_pre = (
            [T.RandomResizedCrop(image_size, scale=tuple(crop_scale))]
            if random_resized_crop
            else self.pre
        )
        if mean is not None:
            self._stats = (tuple(map(float, mean)), tuple(map(float, std)))

    def load_data(self) -> LoadedData:
        if not (self.train_dir.is_dir() and self.test_dir.is_dir()):
            raise missing_data_error(
                self.name,
                self.root,
                [self.train_dir / "<class>/<image>", self.test_dir / "<class>/<image>"],
                downloadable=False,
                note="(set data.train_dir / data.test_dir)",
            )
        classes, class_to_idx = find_classes(self.train_dir)
        train = self._source(self.train_dir, class_to_idx, self.train_pre)
        test = self._source(self.test_dir, class_to_idx)
        return LoadedData(train, test, classes, f"image folders {self.train_dir}, {self.test_dir}")

    def _source(
        self, folder: Path, class_to_idx: dict[str, int], train_pre: list | None = None
    ) -> FileSource:
        samples = make_dataset(
            str(folder), class_to_idx, extensions=IMG_EXTENSIONS, allow_empty=True
        )
        if not samples:
            raise missing_data_error(
                self.name,
                self.root,
                [folder / "<class>/<image>"],
                downloadable=False,
                note=f"(no images with extensions {', '.join(IMG_EXTENSIONS)})",
            )
        paths, labels = zip(*samples, strict=True)
        return FileSource(
            paths, torch.tensor(labels), channels=self.channels, pre=self.pre, train_pre=train_pre
        )


#: ImageNet's per-channel mean and std (of its training set), which torchvision's weights expect
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


class ImageNetDataModule(ImageFolderDataModule):
    """ILSVRC-2012 in class folders (``train/<wnid>/*.JPEG``, ``val/<wnid>/*.JPEG``) with the
    standard pipeline: random-resized crop to 224 + flip for training, resize 256 + centre crop
    224 for evaluation, ImageNet's mean/std. Not downloadable by script (licence)."""

    name = "imagenet"

    def __init__(
        self,
        image_size: int | None = 224,
        resize: int | None = 256,
        random_resized_crop: bool = True,
        mean: Sequence[float] | None = IMAGENET_MEAN,
        std: Sequence[float] | None = IMAGENET_STD,
        **kwargs: Any,
    ) -> None:
        super().__init__(
            image_size=image_size,
            resize=resize,
            random_resized_crop=random_resized_crop,
            mean=mean,
            std=std,
            **kwargs,
        )
