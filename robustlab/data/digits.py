"""scikit-learn's bundled handwritten digits (UCI optdigits test part): offline default dataset.

1797 images of 8x8 with values 0..16 and 10 classes. Values are scaled to uint8 by
round(v * 255 / 16) and upsampled 4x by nearest neighbour (each pixel becomes a 4x4 block) to
1x32x32. There is no official test split: a stratified ``test_fraction`` of every class is held
out with ``split_seed`` (fixed by default, so the test set does not change with the data seed).
"""

from __future__ import annotations

from typing import Any

import torch

from robustlab.data.base import ImageDataModule, LoadedData
from robustlab.data.sources import ArraySource
from robustlab.data.subsets import stratified_split
from robustlab.errors import check


def digits_images() -> tuple[torch.Tensor, torch.Tensor]:
    """All 1797 digits as uint8 (N, 1, 32, 32) and int64 labels, in scikit-learn's order."""
    from sklearn.datasets import load_digits

    bunch = load_digits()
    values = torch.as_tensor(bunch.images, dtype=torch.float64)  # (N, 8, 8), 0..16
    images = (values * 255 / 16).round().to(torch.uint8)
    images = images.repeat_interleave(4, dim=1).repeat_interleave(4, dim=2).unsqueeze(1)
    return images.contiguous(), torch.as_tensor(bunch.target, dtype=torch.int64)


class DigitsDataModule(ImageDataModule):
    """Digits 1x32x32, 10 classes; extra keys ``test_fraction`` (0.2) and ``split_seed`` (0)."""

    name = "digits"

    def __init__(self, test_fraction: float = 0.2, split_seed: int = 0, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        check(
            isinstance(test_fraction, int | float) and 0 < test_fraction < 1,
            f"data.test_fraction must be in (0, 1), got {test_fraction!r}",
        )
        check(
            isinstance(split_seed, int) and split_seed >= 0,
            f"data.split_seed must be an integer >= 0, got {split_seed!r}",
        )
        self.test_fraction = float(test_fraction)
        self.split_seed = split_seed

    def load_data(self) -> LoadedData:
        images, labels = digits_images()
        train, test = stratified_split(labels, self.test_fraction, self.split_seed)
        return LoadedData(
            ArraySource(images[train], labels[train]),
            ArraySource(images[test], labels[test]),
            [str(k) for k in range(10)],
            f"scikit-learn digits upsampled to 32x32 (nearest), stratified {self.test_fraction:g} "
            f"test split with split_seed={self.split_seed}",
        )
