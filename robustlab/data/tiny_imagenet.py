"""Tiny-ImageNet-200 (Le & Yang, "Tiny ImageNet Visual Recognition Challenge", CS231N 2015):
64 x 64 RGB images of 200 ImageNet classes, 500 training and 50 validation images per class.

Layout read (the official ``tiny-imagenet-200.zip`` unpacked under ``root``)::

    tiny-imagenet-200/wnids.txt                      the 200 class ids (WordNet ids)
    tiny-imagenet-200/train/<wnid>/images/*.JPEG     training images
    tiny-imagenet-200/val/images/*.JPEG              validation images, flat ...
    tiny-imagenet-200/val/val_annotations.txt        ... labelled by "<file>\\t<wnid>\\t<box>" lines

The labelled validation split is the test set (the official test split has no labels), as in
the distillation benchmarks (CRLD, mdistiller); its images are sorted into their classes by the
annotations file, in memory (nothing on disk moves). A ``val/`` already sorted into class folders
(``val/<wnid>/[images/]*.JPEG``, what preparation scripts make) is read as it is. Class indices
follow the sorted wnids (torchvision ImageFolder's order, which those benchmarks' checkpoints
use). Files are decoded per image in DataLoader workers; ``download=true`` fetches the zip from
the CS231N site (checksummed) and unpacks it under ``root``.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch

from robustlab.data.base import LoadedData
from robustlab.data.files import missing_data_error
from robustlab.data.imagefolder import IMAGENET_MEAN, IMAGENET_STD, ImageFolderDataModule
from robustlab.data.mnist import download_torchvision
from robustlab.data.sources import FileSource
from robustlab.errors import DataNotFoundError

FOLDER = "tiny-imagenet-200"
URL = "http://cs231n.stanford.edu/tiny-imagenet-200.zip"
MD5 = "90528d7ca1a48142e341f4ef8d21d0de"
ANNOTATIONS = "val_annotations.txt"


def _download_archive(root: str, download: bool = True) -> None:
    """torchvision's downloader for the zip (a factory for :func:`download_torchvision`)."""
    from torchvision.datasets.utils import download_and_extract_archive

    download_and_extract_archive(URL, download_root=root, md5=MD5)


def read_annotations(path: Path) -> list[tuple[str, str]]:
    """``[(file name, wnid), ...]`` from ``val_annotations.txt`` (tab-separated, in file order)."""
    pairs = []
    for number, line in enumerate(path.read_text().splitlines(), start=1):
        if not line.strip():
            continue
        fields = line.split("\t")
        if len(fields) < 2:
            raise DataNotFoundError(
                f"{path}, line {number}: expected '<file>\\t<wnid>\\t...', got {line!r}; the "
                "file is damaged: unpack tiny-imagenet-200.zip again"
            )
        pairs.append((fields[0], fields[1]))
    return pairs


class TinyImageNetDataModule(ImageFolderDataModule):
    """Tiny-ImageNet-200, 3 x 64 x 64, 200 classes, 100000 train / 10000 labelled val (the test
    split here); ImageNet's mean/std by default (as the reference code normalises)."""

    name = "tiny_imagenet"
    downloadable = True

    def __init__(
        self,
        train_dir: str = f"{FOLDER}/train",
        test_dir: str = f"{FOLDER}/val",
        mean: Sequence[float] | None = IMAGENET_MEAN,
        std: Sequence[float] | None = IMAGENET_STD,
        **kwargs: Any,
    ) -> None:
        super().__init__(train_dir=train_dir, test_dir=test_dir, mean=mean, std=std, **kwargs)

    def download_data(self) -> None:
        if not self.train_dir.is_dir():
            download_torchvision(self.name, _download_archive, self.root)

    def _expected(self) -> list[Path]:
        return [
            self.train_dir.parent / "wnids.txt",
            self.train_dir / "<wnid>/images/<image>.JPEG",
            self.test_dir / "images/<image>.JPEG",
            self.test_dir / ANNOTATIONS,
        ]

    def load_data(self) -> LoadedData:
        annotated = (self.test_dir / ANNOTATIONS).is_file() and (self.test_dir / "images").is_dir()
        if not (self.train_dir.is_dir() and (annotated or self.test_dir.is_dir())):
            raise missing_data_error(
                self.name,
                self.root,
                self._expected(),
                downloadable=True,
                note="(or val/ sorted into class folders val/<wnid>/...)",
            )
        from torchvision.datasets.folder import find_classes

        classes, class_to_idx = find_classes(self.train_dir)
        wnids_file = self.train_dir.parent / "wnids.txt"
        if wnids_file.is_file():
            listed = sorted(wnids_file.read_text().split())
            if listed != classes:
                raise DataNotFoundError(
                    f"data={self.name}: {wnids_file} lists {len(listed)} classes but "
                    f"{self.train_dir} holds {len(classes)} class folders "
                    f"(first difference: {sorted(set(listed) ^ set(classes))[:3]}); unpack "
                    "tiny-imagenet-200.zip again"
                )
        train = self._source(self.train_dir, class_to_idx, self.train_pre)
        test = (
            self._annotated_source(class_to_idx)
            if annotated
            else self._source(self.test_dir, class_to_idx)
        )
        how = "labels from val_annotations.txt" if annotated else "val sorted in class folders"
        return LoadedData(train, test, classes, f"Tiny-ImageNet-200 in {self.root} ({how})")

    def _annotated_source(self, class_to_idx: dict[str, int]) -> FileSource:
        """The flat ``val/images`` with labels from ``val_annotations.txt``."""
        annotations = self.test_dir / ANNOTATIONS
        pairs = read_annotations(annotations)
        unknown = sorted({wnid for _, wnid in pairs} - set(class_to_idx))
        if unknown:
            raise DataNotFoundError(
                f"data={self.name}: {annotations} names classes with no training folder: "
                f"{unknown[:3]}; unpack tiny-imagenet-200.zip again"
            )
        paths = [self.test_dir / "images" / file for file, _ in pairs]
        missing = [p for p in paths if not p.is_file()]
        if missing or not paths:
            raise missing_data_error(
                self.name,
                self.root,
                missing[:3] or [self.test_dir / "images/<image>.JPEG"],
                downloadable=True,
                note=f"({len(missing)} of the {len(paths)} images {annotations.name} lists)",
            )
        labels = torch.tensor([class_to_idx[wnid] for _, wnid in pairs])
        return FileSource([str(p) for p in paths], labels, channels=self.channels, pre=self.pre)
