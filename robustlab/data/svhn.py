"""SVHN cropped digits (Netzer et al. 2011): ``root/{train,test,extra}_32x32.mat``.

Read by torchvision.

Label 10 (digit zero) is mapped to 0, as torchvision does.
"""

from __future__ import annotations

from typing import Any

import torch
from torchvision import datasets

from robustlab.data.base import ImageDataModule, LoadedData
from robustlab.data.files import missing_data_error
from robustlab.data.mnist import download_torchvision
from robustlab.data.sources import ArraySource
from robustlab.errors import DataNotFoundError, check


class SVHNDataModule(ImageDataModule):
    """SVHN 3x32x32, 10 classes, 73257 train (+531131 with ``extra=true``) / 26032 test."""

    name = "svhn"
    downloadable = True

    def __init__(self, extra: bool = False, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        check(isinstance(extra, bool), f"data.extra must be true/false, got {extra!r}")
        self.extra = extra

    def _splits(self) -> list[str]:
        return ["train", "test"] + (["extra"] if self.extra else [])

    def _read(self, split: str) -> ArraySource:
        try:
            data = datasets.SVHN(str(self.root), split=split)
        except RuntimeError as error:
            raise DataNotFoundError(
                f"data={self.name}: {self.root / datasets.SVHN.split_list[split][1]} is corrupted "
                f"({error}); delete it and set data.download=true"
            ) from error
        return ArraySource(torch.from_numpy(data.data), torch.from_numpy(data.labels).long())

    def load_data(self) -> LoadedData:
        expected = [self.root / datasets.SVHN.split_list[s][1] for s in self._splits()]
        if not all(path.is_file() for path in expected):
            raise missing_data_error(self.name, self.root, expected, downloadable=True)
        train, test = self._read("train"), self._read("test")
        if self.extra:
            more = self._read("extra")
            train = ArraySource(
                torch.cat([train.images, more.images]), torch.cat([train.labels, more.labels])
            )
        return LoadedData(train, test, [str(k) for k in range(10)], f"SVHN ({self.root})")

    def download_data(self) -> None:
        for split in self._splits():
            download_torchvision(self.name, datasets.SVHN, self.root, split=split)
