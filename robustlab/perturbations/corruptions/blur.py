"""Blur corruptions of Hendrycks & Dietterich (ICLR 2019), batched.

Each follows the reference ``make_cifar_c.py`` / ``make_imagenet_c.py`` step by step, including
its boundary handling and its uint8 quantisation, on every image of the batch at once.
"""

from __future__ import annotations

from functools import lru_cache

import torch
from torch import Tensor

from robustlab import randomness
from robustlab.perturbations import imageops
from robustlab.perturbations.corruptions import filters
from robustlab.perturbations.corruptions.params import zoom_factors
from robustlab.perturbations.corruptions.registry import register
from robustlab.perturbations.corruptions.resample import clipped_zoom_sum, clipped_zoom_sum_matrix
from robustlab.perturbations.corruptions.swaps import local_shuffle_map
from robustlab.randomness import RandomSource


@register("gaussian_blur", grey="direct")
def gaussian_blur(x: Tensor, sigma: float, *, params: str, generator: RandomSource) -> Tensor:
    """Gaussian blur x * g_σ (skimage ``gaussian``: truncate 4σ, edge replication)
    (Hendrycks & Dietterich 2019)."""
    return filters.gaussian_filter(x, sigma).clamp_(0, 1)


@lru_cache(maxsize=32)
def disk_kernel(radius: float, alias_blur: float) -> Tensor:
    """The reference ``disk``: normalised indicator of x² + y² <= r² on a (2·max(8, r) + 1)² grid,
    smoothed by cv2.GaussianBlur (3×3, or 5×5 for r > 8, σ = alias_blur, BORDER_REFLECT_101)."""
    half = 8 if radius <= 8 else int(radius)
    size = 3 if radius <= 8 else 5
    t = torch.arange(-half, half + 1, dtype=torch.float64)
    inside = ((t[:, None] ** 2 + t[None, :] ** 2) <= radius**2).to(torch.float32)
    disk = (inside / inside.sum()).to(torch.float64)
    g = filters.opencv_gaussian_kernel1d(size, alias_blur)
    smooth = filters.correlate_separable(disk[None, None], g, g, "reflect101")
    return smooth[0, 0].to(torch.float32)


@register("defocus_blur", grey="direct")
def defocus_blur(
    x: Tensor, c: tuple[float, float], *, params: str, generator: RandomSource
) -> Tensor:
    """Defocus: x correlated with an anti-aliased disk of radius r (cv2.filter2D,
    BORDER_REFLECT_101) (Hendrycks & Dietterich 2019)."""
    kernel = disk_kernel(float(c[0]), float(c[1]))
    out = filters.apply_linear(
        x,
        lambda v: filters.correlate2d(v, kernel, "reflect101"),
        ("defocus", *c),
        lambda h, w: filters.correlate2d_matrix(h, w, kernel, "reflect101"),
    )
    return out.clamp_(0, 1)


@register("glass_blur", grey="direct")
def glass_blur(
    x: Tensor, c: tuple[float, int, int], *, params: str, generator: RandomSource
) -> Tensor:
    """Glass: blur with g_σ, quantise (uint8 truncation), shuffle pixels locally, blur again
    (Hendrycks & Dietterich 2019).

    Each shuffling pass is the reference's reverse-raster sequence of moves: pixel (h, w) takes
    the value of (h+dy, w+dx), (dx, dy) ~ randint(-δ, δ) — the reference's tuple "swap" of numpy
    pixel views copies rather than exchanges. It is computed exactly, as a composition of maps
    (:mod:`robustlab.perturbations.corruptions.swaps`), not approximated by independent moves.
    """
    sigma, delta, iterations = c
    b, ch, h, w = x.shape
    quantised = torch.floor(filters.gaussian_filter(x, sigma) * 255)  # np.uint8 truncates
    offsets = randomness.randint(
        (b, iterations, h - 2 * delta, w - 2 * delta, 2), -delta, delta, generator, x.device
    )
    flat = quantised.reshape(b, ch, h * w)
    for it in range(iterations):
        src = local_shuffle_map(offsets[:, it], h, w, delta)
        flat = flat.gather(2, src[:, None].expand(b, ch, h * w))
    return filters.gaussian_filter(flat.view(b, ch, h, w) / 255, sigma).clamp_(0, 1)


@register("motion_blur", grey="direct")
def motion_blur(
    x: Tensor, c: tuple[float, float], *, params: str, generator: RandomSource
) -> Tensor:
    """Motion: Σ_i w_i · x shifted by i pixels along a random angle θ ~ U(-45°, 45°) per image,
    w_i ∝ exp(-i²/2σ²), 2⌈radius⌉+1 taps (ImageMagick's MotionBlurImage, as re-implemented by
    ``imagecorruptions``); uint8 in and out as in the reference (Hendrycks & Dietterich 2019)."""
    radius, sigma = c
    angles = randomness.uniform((x.shape[0],), -45.0, 45.0, generator, x.device, torch.float64)
    u8 = imageops.from_uint8(imageops.to_uint8(x)).to(x.dtype)
    out = filters.motion_blur(u8, radius, sigma, angles)
    return imageops.from_uint8(imageops.to_uint8(out)).to(x.dtype)


@register("zoom_blur", grey="direct")
def zoom_blur(
    x: Tensor, c: tuple[float, float, float], *, params: str, generator: RandomSource
) -> Tensor:
    """Zoom: (x + Σ_z zoom_z(x)) / (n + 1), zoom_z a centre crop magnified by z (bilinear),
    z over the reference's ``np.arange`` factors (Hendrycks & Dietterich 2019)."""
    factors = tuple(zoom_factors(c))
    out = filters.apply_linear(
        x,
        lambda v: v + clipped_zoom_sum(v, factors),
        ("zoom", *c),
        lambda h, w: torch.eye(h * w, dtype=torch.float64) + clipped_zoom_sum_matrix(h, w, factors),
    )
    return (out / (len(factors) + 1)).clamp_(0, 1)
