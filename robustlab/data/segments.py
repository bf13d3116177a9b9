"""Felzenszwalb segments of the training images (``data.segments``), a training view for
segmentation-based mixing (ChimeraMix, IJCAI 2022; HydraMix, arXiv 2501.09504).

Segmentation never runs inside the training loop: every training image is segmented once, at
setup (:func:`segment_images`, Felzenszwalb & Huttenlocher, IJCV 2004, via scikit-image's
``felzenszwalb``), and the label maps are kept in memory beside the uint8 images. A training
batch then carries each row's label map, and on the training device the map is cropped and
flipped with exactly the offsets and flips drawn for ``x`` (:func:`crop_and_flip_segments`),
so it stays aligned with the image the method sees: ``views["segments"]``, (B, H, W) int64.

Options ``data.segments: {scale, min_size, sigma}`` (null or ``{}`` for the defaults):

- ``scale`` and ``min_size`` (null => chosen by image size, :func:`default_scale`): 60 for
  images up to 64 px (ChimeraMix's setting for 32-px CIFAR), 400 above (its setting for
  96-px STL-10);
- ``sigma`` (null => 0.8, scikit-image's default, which ChimeraMix keeps): the Gaussian
  smoothing before segmenting.

Images are segmented in the [−1, 1] range the generator works in (``2x − 1``; ChimeraMix's
generator stage segments its (0.5, 0.5)-normalised images), at their stored resolution.

Label maps delivered to a method are numbered 0 … n−1 per row in the order of the original
labels; with a zero-padded random crop, the padding visible in the crop is one more segment,
numbered 0 (it is black in ``x`` as well).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Mapping
from typing import Any

import numpy as np
import torch
from torch import Tensor
from torch.utils.data import Dataset

from robustlab.data.augment import crop_and_flip
from robustlab.errors import check

log = logging.getLogger("robustlab")

#: The training view name methods ask for (``ERM.views_for``) and find in ``views``.
SEGMENTS_VIEW = "segments"
SEGMENT_KEYS = ("scale", "min_size", "sigma")
DEFAULT_SIGMA = 0.8


def available_segments(data: Mapping[str, Any]) -> tuple[str, ...]:
    """``("segments",)`` when a run's ``data`` config sets ``data.segments`` (the view its
    training batches then carry, for ``ERM.check_requirements``), else ``()``."""
    return (SEGMENTS_VIEW,) if data.get("segments") is not None else ()


def default_scale(image_size: tuple[int, int]) -> int:
    """``scale`` = ``min_size`` for (H, W) images: 60 up to 64 px, 400 above."""
    return 60 if max(image_size) <= 64 else 400


def segment_options(options: Mapping[str, Any] | None) -> dict[str, Any] | None:
    """Checked ``data.segments`` (None: no segments); unset keys stay None until
    :func:`resolve_options` knows the image size."""
    if options is None:
        return None
    check(
        isinstance(options, Mapping),
        f"data.segments must be null or a mapping {{scale, min_size, sigma}}, got {options!r}",
    )
    unknown = sorted(set(options) - set(SEGMENT_KEYS))
    check(not unknown, f"data.segments: unknown key(s) {unknown}; accepted: {list(SEGMENT_KEYS)}")
    parsed = {key: options.get(key) for key in SEGMENT_KEYS}
    for key, value in parsed.items():
        check(
            value is None
            or (isinstance(value, int | float) and not isinstance(value, bool) and value >= 0),
            f"data.segments.{key} must be a number >= 0 or null (default by image size), "
            f"got {value!r}",
        )
    check(
        parsed["min_size"] is None or float(parsed["min_size"]).is_integer(),
        f"data.segments.min_size must be a whole number of pixels, got {parsed['min_size']!r}",
    )
    return parsed


def resolve_options(options: Mapping[str, Any], image_size: tuple[int, int]) -> dict[str, Any]:
    """``{scale, min_size, sigma}`` with the defaults for ``image_size`` filled in."""
    default = default_scale(image_size)
    return {
        "scale": float(default if options.get("scale") is None else options["scale"]),
        "min_size": int(default if options.get("min_size") is None else options["min_size"]),
        "sigma": float(DEFAULT_SIGMA if options.get("sigma") is None else options["sigma"]),
    }


def segment_images(images: Tensor, *, scale: float, min_size: int, sigma: float) -> Tensor:
    """Felzenszwalb label maps (N, H, W) int64 of uint8 images (N, C, H, W), each numbered
    0 … n−1, segmented in [−1, 1] units."""
    from skimage.segmentation import felzenszwalb  # optional dependency: only with segments

    check(
        images.dtype == torch.uint8 and images.ndim == 4,
        f"segment_images takes uint8 (N, C, H, W) images, got {images.dtype} {tuple(images.shape)}",
    )
    arrays = images.permute(0, 2, 3, 1).numpy().astype(np.float64) / 127.5 - 1.0
    grey = arrays.shape[-1] == 1
    labels = np.empty(arrays.shape[:3], dtype=np.int64)
    for index, image in enumerate(arrays):
        labels[index] = felzenszwalb(
            image[..., 0] if grey else image,
            scale=scale,
            sigma=sigma,
            min_size=min_size,
            channel_axis=None if grey else -1,
        )
    return torch.from_numpy(labels)


def timed_segments(images: Tensor, options: Mapping[str, Any]) -> tuple[Tensor, float]:
    """:func:`segment_images` with the options resolved for the images' size, and the seconds
    it took (logged)."""
    resolved = resolve_options(options, (int(images.shape[2]), int(images.shape[3])))
    start = time.perf_counter()
    labels = segment_images(images, **resolved)
    seconds = time.perf_counter() - start
    log.info(
        f"data.segments: {len(images)} training images segmented once in {seconds:.2f} s "
        f"(Felzenszwalb scale={resolved['scale']:g} min_size={resolved['min_size']} "
        f"sigma={resolved['sigma']:g}; {labels.flatten(1).amax(1).float().mean() + 1:.1f} "
        "segments per image on average)"
    )
    return labels, seconds


def compact_labels(labels: Tensor) -> Tensor:
    """Renumber each row's labels (B, H, W) to 0 … n−1, keeping their order."""
    flat = labels.flatten(1)
    count = int(flat.max()) + 1 if flat.numel() else 1
    present = torch.zeros((len(flat), count), dtype=torch.int64, device=flat.device)
    present.scatter_(1, flat, 1)
    rank = present.cumsum(dim=1) - 1
    return rank.gather(1, flat).view_as(labels)


def crop_and_flip_segments(
    labels: Tensor, padding: int, flip: bool, generator: torch.Generator
) -> Tensor:
    """Label maps (B, H, W) cropped and flipped by :func:`~robustlab.data.augment.crop_and_flip`
    with ``generator`` (a twin of the one ``x`` was augmented with: the same draws); the zero
    padding becomes segment 0 and each row is renumbered (:func:`compact_labels`)."""
    shifted = (labels + 1).unsqueeze(1)  # 0 is left for the padding
    return compact_labels(crop_and_flip(shifted, padding, flip, generator).squeeze(1))


class SegmentBatches(Dataset):
    """``batches[positions] + (segments[positions],)``: a training batch dataset whose batches
    also carry each row's label map (``segments`` indexed like the sampler's positions)."""

    def __init__(self, batches: Dataset, segments: Tensor) -> None:
        self.batches = batches
        self.segments = segments

    def __len__(self) -> int:
        return len(self.batches)

    def __getitem__(self, batch: Tensor) -> tuple[Tensor, ...]:
        return (*self.batches[batch], self.segments[batch])
