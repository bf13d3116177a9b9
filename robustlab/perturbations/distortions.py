"""Stability distortions of real image pipelines (Zheng, Song, Leung, Goodfellow, CVPR 2016).

Stability training asks a model to give the same output for an image and a slightly distorted
copy. The paper evaluates on the distortions of real pipelines: JPEG compression (its example is
quality 50), thumbnail rescaling (downscale, then upscale back) and cropping / offsets; the
training perturbation is Gaussian pixel noise. The paper's parameter grids were not recoverable,
so the levels here are configurable defaults (``DEFAULT_LEVELS``), not the paper's values.

Every distortion is ``fn(images, level, generator=None) -> images`` on float (B, C, H, W) in
[0, 1], batched on the input's device (JPEG goes through libjpeg on the CPU and comes back).
``generator`` is a ``torch.Generator`` or per-image streams (:mod:`robustlab.randomness`).

- ``jpeg``: encode/decode at quality ``level`` (1..100); distortion grows as quality falls.
- ``thumbnail``: area-downscale by ``level`` = s in (0, 1] to ⌊s·H + ½⌋ × ⌊s·W + ½⌋, then
  bilinear upscale back to H × W (the thumbnail a real pipeline makes, shown at full size).
- ``crop`` (default offset distortion): keep an (H-k) × (W-k) window anchored at a corner chosen
  at random per sample, then bilinearly resize it back to H × W (crop, then resize to the
  network input, as a real pipeline does). ``level`` = k pixels, 0 <= k < min(H, W) / 2.
- ``crop_pad``: shift the content by (±k, ±k) pixels (random signs per sample) and fill the
  uncovered border with zeros; no resampling, so pixel values are untouched.
- ``gaussian_noise``: x + σ·ε, ε ~ N(0, I), clipped to [0, 1]; ``level`` = σ.
"""

from __future__ import annotations

import numbers
from collections.abc import Callable, Mapping, Sequence

import torch
from torch import Tensor

from robustlab import randomness
from robustlab.errors import check
from robustlab.perturbations import imageops
from robustlab.randomness import RandomSource
from robustlab.registry import resolve

Distortion = Callable[..., Tensor]

DEFAULT_LEVELS: dict[str, list[float]] = {
    "jpeg": [90, 70, 50, 30, 10],
    "thumbnail": [0.75, 0.5, 0.375, 0.25],
    "crop": [1, 2, 3, 4],
    "crop_pad": [1, 2, 3, 4],
    "gaussian_noise": [0.01, 0.02, 0.04, 0.08],
}


# --------------------------------------------------------------------------------------------
# Level validation (shared by the distortions and by random_distortion's up-front check)
# --------------------------------------------------------------------------------------------


def _is_number(value: object) -> bool:
    return isinstance(value, numbers.Real) and not isinstance(value, bool)


def _is_int(value: object) -> bool:
    return _is_number(value) and value == int(value)


def _check_jpeg(quality: float, size: tuple[int, int]) -> None:
    check(
        _is_int(quality) and 1 <= quality <= 100,
        f"jpeg quality must be an integer in 1..100 (100 = best), got {quality!r}",
    )


def _check_thumbnail(scale: float, size: tuple[int, int]) -> None:
    check(
        _is_number(scale) and 0 < scale <= 1,
        f"thumbnail scale must be in (0, 1] (fraction of the original side), got {scale!r}",
    )


def _check_offset(offset: float, size: tuple[int, int], name: str = "crop") -> None:
    limit = min(size) / 2
    check(
        _is_int(offset) and 0 <= offset < limit,
        f"{name} offset must be an integer number of pixels with 0 <= offset < min(H, W)/2 = "
        f"{limit:g} for {size[0]}x{size[1]} images, got {offset!r}",
    )


def _check_crop_pad(offset: float, size: tuple[int, int]) -> None:
    _check_offset(offset, size, "crop_pad")


def _check_sigma(sigma: float, size: tuple[int, int]) -> None:
    check(
        _is_number(sigma) and sigma >= 0,
        f"gaussian_noise sigma must be >= 0 (std on the [0, 1] pixel scale), got {sigma!r}",
    )


_VALIDATORS: dict[str, Callable[[float, tuple[int, int]], None]] = {
    "jpeg": _check_jpeg,
    "thumbnail": _check_thumbnail,
    "crop": _check_offset,
    "crop_pad": _check_crop_pad,
    "gaussian_noise": _check_sigma,
}


# --------------------------------------------------------------------------------------------
# The distortions
# --------------------------------------------------------------------------------------------


def jpeg(images: Tensor, quality: int, generator: RandomSource = None) -> Tensor:
    """JPEG round trip at ``quality`` (libjpeg via torchvision, after uint8 quantisation)."""
    imageops.check_images(images, who="distortions")
    _check_jpeg(quality, images.shape[-2:])
    return imageops.jpeg_roundtrip(images, int(quality))


def thumbnail(
    images: Tensor,
    scale: float,
    generator: RandomSource = None,
    *,
    down: str = "area",
    up: str = "bilinear",
) -> Tensor:
    """Thumbnail: resize to ⌊s·H + ½⌋ × ⌊s·W + ½⌋ with ``down``, then back to H × W with ``up``."""
    imageops.check_images(images, who="distortions")
    _check_thumbnail(scale, images.shape[-2:])
    h, w = images.shape[-2:]
    small = (max(1, int(h * scale + 0.5)), max(1, int(w * scale + 0.5)))
    if small == (h, w):
        return images.clone()
    return imageops.resize(imageops.resize(images, small, down), (h, w), up)


def _corner_bits(images: Tensor, generator: RandomSource) -> Tensor:
    """Two random bits per sample, (B, 2) int64: (x, y) direction of the offset."""
    return randomness.randint((images.shape[0], 2), 0, 2, generator, images.device)


def crop(images: Tensor, offset: int, generator: RandomSource = None) -> Tensor:
    """Crop an (H-k) × (W-k) window at a random corner per sample, resize back to H × W.

    Corner (top, left) ∈ {0, k}² is drawn from ``generator``; resizing is bilinear with
    half-pixel centres: out[i, j] = window((i + ½)·(H-k)/H - ½, (j + ½)·(W-k)/W - ½).
    """
    imageops.check_images(images, who="distortions")
    _check_offset(offset, images.shape[-2:])
    k = int(offset)
    bits = _corner_bits(images, generator)
    if k == 0:
        return images.clone()
    h, w = images.shape[-2:]
    left, top = bits[:, 0] * k, bits[:, 1] * k
    window = imageops.translate(images, -left, -top)[..., : h - k, : w - k]
    return imageops.resize(window, (h, w), "bilinear")


def crop_pad(images: Tensor, offset: int, generator: RandomSource = None) -> Tensor:
    """Shift content by (±k, ±k) pixels (random signs per sample), zero-filling the border."""
    imageops.check_images(images, who="distortions")
    _check_crop_pad(offset, images.shape[-2:])
    k = int(offset)
    bits = _corner_bits(images, generator)
    if k == 0:
        return images.clone()
    signs = 2 * bits - 1
    return imageops.translate(images, signs[:, 0] * k, signs[:, 1] * k, fill=0.0)


def gaussian_noise(images: Tensor, sigma: float, generator: RandomSource = None) -> Tensor:
    """x + σ·ε with ε ~ N(0, I) per pixel, clipped to [0, 1] (the stability-training noise)."""
    imageops.check_images(images, who="distortions")
    _check_sigma(sigma, images.shape[-2:])
    return imageops.gaussian_noise(images, float(sigma), generator)


DISTORTIONS: dict[str, Distortion] = {
    "jpeg": jpeg,
    "thumbnail": thumbnail,
    "crop": crop,
    "crop_pad": crop_pad,
    "gaussian_noise": gaussian_noise,
}


def _lookup(name: str) -> Distortion:
    return resolve(DISTORTIONS, name, group="distortion", imports=False)


def distort(images: Tensor, name: str, level: float, generator: RandomSource = None) -> Tensor:
    """Apply the registered distortion ``name`` at ``level`` (see ``DISTORTIONS``)."""
    return _lookup(name)(images, level, generator)


def random_distortion(
    images: Tensor,
    names: Sequence[str] | None = None,
    levels: Mapping[str, Sequence[float]] | None = None,
    generator: RandomSource = None,
    *,
    return_choices: bool = False,
) -> Tensor | tuple[Tensor, list[tuple[str, float]]]:
    """Distort each sample with its own randomly chosen (name, level).

    The name is uniform over ``names`` (default: all of ``DISTORTIONS``), then the level is
    uniform over ``levels[name]`` (default: ``DEFAULT_LEVELS``). Samples sharing a choice are
    processed as one batch. With ``return_choices`` the per-sample choices are returned too.
    """
    imageops.check_images(images, who="distortions")
    names = list(DISTORTIONS) if names is None else list(names)
    levels = DEFAULT_LEVELS if levels is None else levels
    check(len(names) > 0, "random_distortion needs at least one distortion name")
    for name in names:
        _lookup(name)
        check(
            name in levels and len(levels[name]) > 0,
            f"random_distortion: no levels given for {name!r}; pass levels={{{name!r}: [...]}}",
        )
        for level in levels[name]:
            _VALIDATORS[name](level, tuple(images.shape[-2:]))

    b = images.shape[0]
    name_idx = randomness.randint((b,), 0, len(names), generator, images.device)
    u = randomness.uniform((b,), 0.0, 1.0, generator, images.device)
    counts = torch.tensor([len(levels[n]) for n in names], device=images.device)
    level_idx = torch.minimum((u * counts[name_idx]).long(), counts[name_idx] - 1)

    out = torch.empty_like(images)
    stride = int(counts.max())
    pair = name_idx * stride + level_idx
    for key in torch.unique(pair).tolist():  # sorted, so the generator is consumed in order
        idx = torch.nonzero(pair == key).squeeze(1)
        name = names[key // stride]
        level = levels[name][key % stride]
        out[idx] = distort(images[idx], name, level, randomness.rows_of(generator, idx))
    if not return_choices:
        return out
    choices = [
        (names[n], levels[names[n]][lv])
        for n, lv in zip(name_idx.tolist(), level_idx.tolist(), strict=True)
    ]
    return out, choices
