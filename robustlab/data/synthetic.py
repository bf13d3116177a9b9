"""Seeded class-conditional random images: learnable, instant, no files (tests, smoke runs).

Class k has a smooth template t_k (4x4 uniform noise upsampled bilinearly, scaled to
[0.2, 0.8]); an image is ``clamp(t_y + noise * N(0, 1), 0, 1)`` quantised to uint8. Labels are
balanced (i % K) and shuffled. ``data_seed`` fixes the dataset itself, independent of ``seed``.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F

from robustlab.data.base import ImageDataModule, LoadedData
from robustlab.data.seeding import generator_for
from robustlab.data.sources import ArraySource
from robustlab.errors import check
from robustlab.perturbations.imageops import to_uint8


def synthetic_images(
    num_classes: int,
    n: int,
    channels: int,
    size: int,
    noise: float,
    generator: torch.Generator,
    templates: torch.Tensor,
) -> ArraySource:
    """``n`` balanced, shuffled samples around ``templates`` (K, C, S, S)."""
    labels = torch.arange(n) % num_classes
    labels = labels[torch.randperm(n, generator=generator)]
    images = templates[labels] + noise * torch.randn(n, channels, size, size, generator=generator)
    return ArraySource(to_uint8(images), labels)


class SyntheticDataModule(ImageDataModule):
    """``n_train``/``n_test`` images of ``channels`` x ``image_size`` x ``image_size``."""

    name = "synthetic"

    def __init__(
        self,
        num_classes: int = 10,
        image_size: int = 32,
        channels: int = 3,
        n_train: int = 1000,
        n_test: int = 200,
        noise: float = 0.25,
        data_seed: int = 0,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        for key, value, low in (
            ("num_classes", num_classes, 2),
            ("image_size", image_size, 4),
            ("n_train", n_train, num_classes),
            ("n_test", n_test, 1),
            ("data_seed", data_seed, 0),
        ):
            check(
                isinstance(value, int) and not isinstance(value, bool) and value >= low,
                f"data.{key} must be an integer >= {low}, got {value!r}",
            )
        check(channels in (1, 3), f"data.channels must be 1 or 3, got {channels!r}")
        check(
            isinstance(noise, int | float) and noise >= 0, f"data.noise must be >= 0, got {noise!r}"
        )
        self.size, self.channels, self.classes = image_size, channels, num_classes
        self.n_train, self.n_test, self.noise, self.data_seed = (
            n_train,
            n_test,
            float(noise),
            data_seed,
        )

    def load_data(self) -> LoadedData:
        generator = generator_for(self.data_seed, "synthetic")
        coarse = torch.rand(self.classes, self.channels, 4, 4, generator=generator)
        templates = 0.2 + 0.6 * F.interpolate(
            coarse, size=(self.size, self.size), mode="bilinear", align_corners=False
        )
        rest = (self.channels, self.size, self.noise, generator, templates)
        train = synthetic_images(self.classes, self.n_train, *rest)
        test = synthetic_images(self.classes, self.n_test, *rest)
        return LoadedData(
            train,
            test,
            [f"class_{k}" for k in range(self.classes)],
            f"synthetic (data_seed={self.data_seed})",
        )
