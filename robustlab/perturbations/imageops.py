"""Low-level batched image operations shared by corruptions, distortions and training views.

All functions take and return float tensors of shape (B, C, H, W) with values in [0, 1]
(C = 1 or 3) and keep the device of their input unless stated otherwise.
"""

from __future__ import annotations

import torch
from torch import Tensor
from torch.nn import functional as F

from robustlab.errors import ConfigError
from robustlab.randomness import RandomSource, randn_like


def check_images(images: object, *, who: str) -> None:
    """``images`` is a float tensor (B, C, H, W) with C = 1 or 3, else a :class:`ConfigError`
    saying what ``who`` (e.g. ``"corruptions"``) takes, what it got, and how to convert uint8."""
    if not isinstance(images, Tensor) or images.ndim != 4 or images.shape[1] not in (1, 3):
        got = tuple(images.shape) if isinstance(images, Tensor) else type(images).__name__
        raise ConfigError(
            f"{who} take float images of shape (B, C, H, W) with C = 1 or 3, got {got}"
        )
    if not images.is_floating_point():
        raise ConfigError(
            f"{who} take float images in [0, 1], got dtype {images.dtype}; convert uint8 with "
            "robustlab.perturbations.imageops.from_uint8"
        )


def to_uint8(images: Tensor) -> Tensor:
    """Quantise [0, 1] floats to uint8 the way PIL does when saving (round half up, clamp)."""
    return (images.clamp(0, 1) * 255).add_(0.5).floor_().to(torch.uint8)


def from_uint8(images: Tensor) -> Tensor:
    return images.to(torch.float32) / 255  # never in place: the input may already be float32


def jpeg_roundtrip(images: Tensor, quality: int) -> Tensor:
    """Encode every image as JPEG at ``quality`` (1..100) and decode it again.

    Uses libjpeg through ``torchvision.io`` on the CPU (a list call, so the batch is encoded in
    one native loop); the result is returned on the input's device.
    """
    from torchvision.io import decode_jpeg, encode_jpeg

    if not 1 <= int(quality) <= 100:
        raise ValueError(f"JPEG quality must be in 1..100, got {quality}")
    device = images.device
    quantised = list(to_uint8(images).cpu().unbind(0))
    encoded = encode_jpeg(quantised, quality=int(quality))
    decoded = decode_jpeg(encoded)
    return from_uint8(torch.stack(decoded)).to(device)


# --------------------------------------------------------------------------------------------
# Geometry and noise
# --------------------------------------------------------------------------------------------

_RESIZE_MODES = ("area", "bilinear", "bicubic", "nearest")


def resize(images: Tensor, size: int | tuple[int, int], mode: str = "bilinear") -> Tensor:
    """Resample to ``size`` = (H', W') with half-pixel centres (align_corners=False).

    ``area``: box average over each output cell (exact for integer downscale factors);
    ``bilinear`` / ``bicubic``: antialiased (PIL-style widened kernel) when downscaling, plain
    interpolation when upscaling; ``nearest``: nearest pixel centre (``nearest-exact``).
    """
    if mode not in _RESIZE_MODES:
        raise ValueError(f"resize mode must be one of {', '.join(_RESIZE_MODES)}, got {mode!r}")
    h, w = (size, size) if isinstance(size, int) else (int(size[0]), int(size[1]))
    if (h, w) == tuple(images.shape[-2:]):
        return images.clone()
    if mode == "area":
        return F.interpolate(images, size=(h, w), mode="area")
    if mode == "nearest":
        return F.interpolate(images, size=(h, w), mode="nearest-exact")
    downscale = h < images.shape[-2] or w < images.shape[-1]
    out = F.interpolate(images, size=(h, w), mode=mode, align_corners=False, antialias=downscale)
    return out.clamp_(0, 1) if mode == "bicubic" else out


def _per_sample(value: float | Tensor, batch: int, device: torch.device) -> Tensor:
    """Broadcast a scalar or a (B,) tensor of per-sample parameters to float64 (B,)."""
    t = torch.as_tensor(value, dtype=torch.float64, device=device)
    return t.expand(batch) if t.ndim == 0 else t.reshape(batch)


def _is_integral(value: float | Tensor) -> bool:
    t = torch.as_tensor(value)
    return bool(torch.all(t == torch.round(t)))


def translate(images: Tensor, dx: float | Tensor, dy: float | Tensor, fill: float = 0.0) -> Tensor:
    """Shift content by (dx, dy) pixels: out[y, x] = in[y - dy, x - dx], uncovered pixels = fill.

    ``dx``/``dy`` are scalars or per-sample (B,) tensors (positive = right / down). Integer
    shifts are exact (index gather); sub-pixel shifts use bilinear resampling via :func:`affine`.
    """
    if not (_is_integral(dx) and _is_integral(dy)):
        b = images.shape[0]
        shift = torch.stack(
            [_per_sample(dx, b, images.device), _per_sample(dy, b, images.device)], dim=1
        )
        return affine(images, translate=shift, fill=fill)
    b, _, h, w = images.shape
    sx = _per_sample(dx, b, images.device).long()
    sy = _per_sample(dy, b, images.device).long()
    ys = torch.arange(h, device=images.device)[None, :] - sy[:, None]  # (B, H) source rows
    xs = torch.arange(w, device=images.device)[None, :] - sx[:, None]  # (B, W) source cols
    valid = ((ys >= 0) & (ys < h))[:, :, None] & ((xs >= 0) & (xs < w))[:, None, :]  # (B, H, W)
    rows = ys.clamp(0, h - 1)[:, None, :, None].expand(-1, images.shape[1], -1, w)
    gathered = images.gather(2, rows)
    cols = xs.clamp(0, w - 1)[:, None, None, :].expand(-1, images.shape[1], h, -1)
    gathered = gathered.gather(3, cols)
    return torch.where(valid[:, None], gathered, gathered.new_tensor(fill))


def affine(
    images: Tensor,
    angle_deg: float | Tensor = 0.0,
    scale: float | Tensor = 1.0,
    translate: tuple[float | Tensor, float | Tensor] | Tensor = (0.0, 0.0),
    fill: float = 0.0,
    mode: str = "bilinear",
) -> Tensor:
    """Similarity warp about the image centre: p_out = s·R(θ)·p_in + t (θ counter-clockwise).

    Parameters are scalars or per-sample (B,) tensors; ``translate`` is (dx, dy) in pixels or a
    (B, 2) tensor. Implemented by inverse mapping with affine_grid/grid_sample (``mode`` bilinear
    or nearest, align_corners=False); points sampled outside the image take ``fill``.
    """
    b, _, h, w = images.shape
    dev = images.device
    theta_rad = torch.deg2rad(_per_sample(angle_deg, b, dev))
    s = _per_sample(scale, b, dev)
    if isinstance(translate, Tensor) and translate.ndim == 2:
        tx, ty = translate[:, 0], translate[:, 1]
    else:
        tx, ty = translate
    tx, ty = _per_sample(tx, b, dev), _per_sample(ty, b, dev)
    # Inverse map in pixel units about the centre (y axis points down, so a visually
    # counter-clockwise rotation is [[c, s], [-s, c]] and its inverse is [[c, -s], [s, c]]).
    cos, sin = torch.cos(theta_rad) / s, torch.sin(theta_rad) / s
    m = torch.stack([torch.stack([cos, -sin], -1), torch.stack([sin, cos], -1)], -2)  # (B,2,2)
    c = -(m @ torch.stack([tx, ty], -1)[..., None])[..., 0]  # (B, 2)
    # Convert to affine_grid's normalised coordinates: n = D^-1 u with D = diag(W/2, H/2).
    d = torch.tensor([w / 2, h / 2], dtype=torch.float64, device=dev)
    m_n = m * d[None, None, :] / d[None, :, None]
    theta = torch.cat([m_n, (c / d)[..., None]], dim=2).to(images.dtype)
    grid = F.affine_grid(theta, list(images.shape), align_corners=False)
    out = F.grid_sample(images - fill, grid, mode=mode, padding_mode="zeros", align_corners=False)
    return out + fill if fill != 0 else out


def gaussian_noise(
    images: Tensor,
    sigma: float | Tensor,
    generator: RandomSource = None,
    clip: bool = True,
) -> Tensor:
    """Additive white noise x + σ·ε, ε ~ N(0, I) per pixel, clipped to [0, 1] when ``clip``.

    ``sigma`` is a scalar or a per-sample (B,) tensor; ε comes from ``generator`` (a
    ``torch.Generator`` or per-image streams, :mod:`robustlab.randomness`).
    """
    s = _per_sample(sigma, images.shape[0], images.device).to(images.dtype)
    out = images + s[:, None, None, None] * randn_like(images, generator)
    return out.clamp_(0, 1) if clip else out
