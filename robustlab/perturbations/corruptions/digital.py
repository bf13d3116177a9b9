"""Digital corruptions of Hendrycks & Dietterich (ICLR 2019), batched: contrast, brightness,
saturate, JPEG, pixelate, elastic transform.
"""

from __future__ import annotations

import torch
from torch import Tensor
from torch.nn import functional as F

from robustlab import randomness
from robustlab.perturbations import imageops
from robustlab.perturbations.corruptions import filters
from robustlab.perturbations.corruptions.color import hsv_to_rgb, rgb_to_hsv
from robustlab.perturbations.corruptions.params import ELASTIC_REFERENCE_SIZE
from robustlab.perturbations.corruptions.registry import register
from robustlab.perturbations.corruptions.resample import pil_box_resize, pil_nearest_resize
from robustlab.randomness import RandomSource


@register("contrast", grey="direct")
def contrast(x: Tensor, c: float, *, params: str, generator: RandomSource) -> Tensor:
    """Contrast: clip((x - μ)·c + μ), μ the per-image, per-channel mean
    (Hendrycks & Dietterich 2019)."""
    mean = x.mean((2, 3), keepdim=True)
    return ((x - mean) * c + mean).clamp_(0, 1)


@register("brightness", grey="rgb")
def brightness(x: Tensor, c: float, *, params: str, generator: RandomSource) -> Tensor:
    """Brightness: V <- clip(V + c) in HSV (Hendrycks & Dietterich 2019)."""
    hsv = rgb_to_hsv(x)
    hsv[:, 2] = (hsv[:, 2] + c).clamp_(0, 1)
    return hsv_to_rgb(hsv).clamp_(0, 1)


@register("saturate", grey="rgb")
def saturate(x: Tensor, c: tuple[float, float], *, params: str, generator: RandomSource) -> Tensor:
    """Saturate: S <- clip(S·a + b) in HSV (Hendrycks & Dietterich 2019)."""
    scale, shift = c
    hsv = rgb_to_hsv(x)
    hsv[:, 1] = (hsv[:, 1] * scale + shift).clamp_(0, 1)
    return hsv_to_rgb(hsv).clamp_(0, 1)


@register("jpeg_compression", grey="rgb_uint8")
def jpeg_compression(x: Tensor, quality: int, *, params: str, generator: RandomSource) -> Tensor:
    """JPEG: encode at ``quality`` and decode with libjpeg (Hendrycks & Dietterich 2019)."""
    return imageops.jpeg_roundtrip(x, quality).to(x.dtype)


@register("pixelate", grey="direct")
def pixelate(x: Tensor, factor: float, *, params: str, generator: RandomSource) -> Tensor:
    """Pixelate: PIL BOX downscale to ⌊factor·size⌋, then NEAREST upscale back, on uint8
    (Hendrycks & Dietterich 2019; the reference's BOX upscale picks the same pixels)."""
    h, w = x.shape[-2:]
    small = pil_box_resize(imageops.to_uint8(x).to(torch.float64), int(h * factor), int(w * factor))
    return (pil_nearest_resize(small, h, w) / 255).to(x.dtype)


def _affine_source(h: int, w: int, jitter: Tensor) -> Tensor:
    """Source (x, y) of every output pixel for the affine map taking the 3 reference points
    p_k to p_k + jitter_k (cv2.getAffineTransform + warpAffine); jitter: (B, 3, 2)."""
    cx, cy, side = w // 2, h // 2, min(h, w) // 3
    pts = torch.tensor(
        [[cx + side, cy + side], [cx + side, cy - side], [cx - side, cy - side]],
        dtype=torch.float64,
        device=jitter.device,
    )
    moved = pts + jitter.to(torch.float64)
    ones = torch.ones(jitter.shape[0], 3, 1, dtype=torch.float64, device=jitter.device)
    # inverse map: solve [moved, 1] @ Mᵀ = pts for the (3 × 2) Mᵀ of each image
    inverse = torch.linalg.solve(torch.cat((moved, ones), 2), pts.expand_as(moved))
    ys, xs = torch.meshgrid(
        torch.arange(h, dtype=torch.float64, device=jitter.device),
        torch.arange(w, dtype=torch.float64, device=jitter.device),
        indexing="ij",
    )
    grid = torch.stack((xs, ys, torch.ones_like(xs)), -1).view(1, h * w, 3)
    return torch.matmul(grid, inverse).view(-1, h, w, 2)


@register("elastic_transform", grey="direct")
def elastic_transform(
    x: Tensor, c: tuple[float, float, float], *, params: str, generator: RandomSource
) -> Tensor:
    """Elastic: a random affine warp (3 points jittered by U(-a, a)), then displacement by
    α · (g_σ * U(-1, 1)) per axis, both bilinear (Hendrycks & Dietterich 2019, after Simard et
    al. 2003). Pixel parameters scale with min(H, W) / reference size (32 CIFAR, 224 ImageNet).
    """
    b, _, h, w = x.shape
    alpha, sigma, affine = (v * min(h, w) / ELASTIC_REFERENCE_SIZE[params] for v in c)
    jitter = randomness.uniform((b, 3, 2), -affine, affine, generator, x.device, torch.float32)
    src = _affine_source(h, w, jitter)
    scale = torch.tensor(
        [2.0 / max(w - 1, 1), 2.0 / max(h - 1, 1)], dtype=torch.float64, device=x.device
    )
    grid = (src * scale - 1).to(x.dtype)  # cv2 BORDER_REFLECT_101 = reflection about centres
    warped = F.grid_sample(x, grid, mode="bilinear", padding_mode="reflection", align_corners=True)
    fields = randomness.uniform((b, 2, h, w), -1.0, 1.0, generator, x.device, x.dtype)
    fields = filters.gaussian_filter(fields, sigma, truncate=3.0, mode="symmetric") * alpha
    ys, xs = torch.meshgrid(
        torch.arange(h, device=x.device, dtype=x.dtype),
        torch.arange(w, device=x.device, dtype=x.dtype),
        indexing="ij",
    )
    gx = (2 * (xs + fields[:, 0]) + 1) / w - 1  # scipy map_coordinates(mode="reflect") reflects
    gy = (2 * (ys + fields[:, 1]) + 1) / h - 1  # about the pixel edges: align_corners=False
    out = F.grid_sample(
        warped,
        torch.stack((gx, gy), -1),
        mode="bilinear",
        padding_mode="reflection",
        align_corners=False,
    )
    return out.clamp_(0, 1)
