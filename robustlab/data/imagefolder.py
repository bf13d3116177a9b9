"""Images on disk in class folders (``root/train/<class>/*.png``, ``root/val/<class>/...``).

Always the DataLoader path (b): files are decoded per image in worker processes. Optional
``image_size`` makes every image square: Resize(shorter side = ``resize`` or ``image_size``) then
CenterCrop(``image_size``); without it all images must already share one size.
"""

from __future__ import annotations

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
        self.train_dir = self.root / train_dir
        self.test_dir = self.root / test_dir
        self.channels = channels
        self.pre = (
            [] if image_size is None else [T.Resize(resize or image_size), T.CenterCrop(image_size)]
        )

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
        train, test = (
            self._source(folder, class_to_idx) for folder in (self.train_dir, self.test_dir)
        )
        return LoadedData(train, test, classes, f"image folders {self.train_dir}, {self.test_dir}")

    def _source(self, folder: Path, class_to_idx: dict[str, int]) -> FileSource:
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
        return FileSource(paths, torch.tensor(labels), channels=self.channels, pre=self.pre)
