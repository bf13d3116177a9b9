"""Any dataset shipped as two ``.npz`` files of uint8 NHWC images and integer labels."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from robustlab.data.arrays import load_images, load_labels
from robustlab.data.base import ImageDataModule, LoadedData
from robustlab.data.files import require_files
from robustlab.data.sources import ArraySource
from robustlab.errors import check


class NpzDataModule(ImageDataModule):
    """Arrays ``image_key`` (uint8 (N, H, W[, C])) and ``label_key`` of two .npz files.

    Paths are relative to ``root`` unless absolute. ``class_names`` (list) fixes the number of
    classes; null => ``max(label) + 1`` classes named "0", "1", ...
    """

    name = "npz"

    def __init__(
        self,
        train_path: str = "train.npz",
        test_path: str = "test.npz",
        image_key: str = "images",
        label_key: str = "labels",
        class_names: list[str] | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        check(
            class_names is None or len(class_names) >= 2,
            f"data.class_names must list at least two classes or be null, got {class_names!r}",
        )
        self.train_path = self.root / Path(train_path).expanduser()
        self.test_path = self.root / Path(test_path).expanduser()
        self.image_key = image_key
        self.label_key = label_key
        self.names = None if class_names is None else [str(n) for n in class_names]

    def load_data(self) -> LoadedData:
        require_files(
            self.name,
            self.root,
            [self.train_path, self.test_path],
            downloadable=False,
            note="(set data.train_path / data.test_path)",
        )
        train, test = (
            ArraySource(load_images(p, self.image_key), load_labels(p, self.label_key))
            for p in (self.train_path, self.test_path)
        )
        top = int(torch.cat([train.labels, test.labels]).max())
        names = self.names or [str(k) for k in range(top + 1)]
        check(
            int(torch.cat([train.labels, test.labels]).min()) >= 0 and top < len(names),
            f"data={self.name}: labels must lie in 0..{len(names) - 1} (class_names), "
            f"found max {top}",
        )
        return LoadedData(train, test, names, f"npz arrays {self.train_path}, {self.test_path}")
