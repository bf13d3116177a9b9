"""Linear filters with the boundary rules of the libraries the reference scripts call.

Boundary modes (names as in the libraries, all exact for any padding width):

- ``"replicate"``: a a a | a b c d | d d d  (scipy ``nearest``, skimage ``gaussian`` default,
  OpenCV ``BORDER_REPLICATE``)
- ``"symmetric"``: c b a | a b c d | d c b  (scipy ``reflect``)
- ``"reflect101"``: d c b | a b c d | c b a  (OpenCV ``BORDER_REFLECT_101``, its default;
  scipy ``mirror``)
"""

from __future__ import annotations

import math
from collections.abc import Callable
from functools import lru_cache

import torch
from torch import Tensor

_MODES = ("replicate", "symmetric", "reflect101")


def border_index(n: int, before: int, after: int, mode: str, device: torch.device) -> Tensor:
    """Source index (into 0..n-1) of each of the ``before + n + after`` padded positions."""
    i = torch.arange(-before, n + after, device=device)
    if mode == "replicate" or n == 1:
        return i.clamp(0, n - 1)
    if mode == "symmetric":
        r = i.remainder(2 * n)
        return torch.where(r < n, r, 2 * n - 1 - r)
    if mode == "reflect101":
        r = i.remainder(2 * n - 2)
        return torch.where(r < n, r, 2 * n - 2 - r)
    raise ValueError(f"unknown boundary mode {mode!r}; valid: {_MODES}")


def pad(x: Tensor, top: int, bottom: int, left: int, right: int, mode: str) -> Tensor:
    """Pad the last two dimensions of ``x`` with boundary rule ``mode``."""
    h, w = x.shape[-2:]
    if top or bottom:
        x = x.index_select(-2, border_index(h, top, bottom, mode, x.device))
    if left or right:
        x = x.index_select(-1, border_index(w, left, right, mode, x.device))
    return x


@lru_cache(maxsize=256)
def filter_matrix(n: int, kernel: tuple[float, ...], mode: str) -> Tensor:
    """(n × n) float64 matrix of 1-D correlation with odd-length ``kernel`` under boundary
    ``mode``: (M @ v)[o] = Σ_t kernel[t] · v_padded[o + t], the padding folded into M."""
    r = len(kernel) // 2
    source = border_index(n, r, r, mode, torch.device("cpu"))
    rows = torch.arange(n).view(-1, 1).expand(n, len(kernel))
    cols = source[rows + torch.arange(len(kernel)).view(1, -1)]
    weights = torch.tensor(kernel, dtype=torch.float64).expand(n, len(kernel))
    matrix = torch.zeros(n, n, dtype=torch.float64)
    return matrix.index_put_((rows, cols), weights, accumulate=True)


def _as_matrix(n: int, kernel: Tensor, mode: str, like: Tensor) -> Tensor:
    key = tuple(float(v) for v in kernel.flatten())
    return filter_matrix(n, key, mode).to(device=like.device, dtype=like.dtype)


def correlate_separable(x: Tensor, kernel_y: Tensor, kernel_x: Tensor, mode: str) -> Tensor:
    """Correlate every channel of (…, H, W) ``x`` with ``kernel_y ⊗ kernel_x`` (odd lengths).

    Computed as M_y @ x @ M_xᵀ with the boundary folded into the banded matrices: two GEMMs,
    much faster than a one-channel convolution on the CPU.
    """
    h, w = x.shape[-2:]
    out = x
    if kernel_x.numel() > 1:
        out = torch.matmul(out, _as_matrix(w, kernel_x, mode, x).t())
    if kernel_y.numel() > 1:
        out = torch.matmul(_as_matrix(h, kernel_y, mode, x), out)
    return out if out is not x else x.clone()


def correlate2d(x: Tensor, kernel: Tensor, mode: str) -> Tensor:
    """Correlate every channel of (…, H, W) ``x`` with the odd-sized 2-D ``kernel`` (anchor at
    its centre): out[y, x] = Σ_ij k[i, j] · x_padded[y + i, x + j].

    Kernels up to 5×5 sum shifted slices; larger ones use the FFT of the padded image (no wrap
    reaches the kept H × W window, so it is the same linear correlation up to rounding).
    """
    h, w = x.shape[-2:]
    kh, kw = kernel.shape
    padded = pad(x, kh // 2, kh // 2, kw // 2, kw // 2, mode)
    kernel = kernel.to(device=x.device, dtype=x.dtype)
    if kh * kw <= 25:
        out = torch.zeros_like(x)
        for i in range(kh):
            for j in range(kw):
                out.add_(padded[..., i : i + h, j : j + w], alpha=float(kernel[i, j]))
        return out
    size = padded.shape[-2:]
    spectrum = torch.fft.rfft2(padded) * torch.fft.rfft2(kernel, s=size).conj()
    return torch.fft.irfft2(spectrum, s=size)[..., :h, :w].to(x.dtype)


DENSE_MAX_PIXELS = 32 * 32  # images up to this size apply fixed linear maps as one GEMM


_DENSE_CACHE: dict[tuple, Tensor] = {}
_DENSE_CACHE_SIZE = 16


def apply_linear(
    x: Tensor,
    op: Callable[[Tensor], Tensor],
    key: tuple,
    dense: Callable[[int, int], Tensor],
) -> Tensor:
    """``op(x)`` for a fixed linear, channel-wise ``op`` on (…, H, W) images.

    Small images (H·W <= DENSE_MAX_PIXELS) use the op's (HW × HW) matrix M — ``dense(H, W)``,
    with op(x).flatten() = x.flatten() @ M, built once per ``key`` — in one GEMM, which beats
    many small kernels on the CPU; larger images call ``op``. The GEMM accumulates in float64:
    a float32 GEMM rounds each row differently depending on the rows beside it, which would make
    an image's result depend on its batch.
    """
    h, w = x.shape[-2:]
    if h * w > DENSE_MAX_PIXELS:
        return op(x)
    key = (*key, h, w)
    if key not in _DENSE_CACHE:
        if len(_DENSE_CACHE) >= _DENSE_CACHE_SIZE:
            _DENSE_CACHE.pop(next(iter(_DENSE_CACHE)))
        _DENSE_CACHE[key] = dense(h, w).to(torch.float64)
    matrix = _DENSE_CACHE[key].to(device=x.device)
    flat = x.reshape(*x.shape[:-2], h * w).to(torch.float64)
    return torch.matmul(flat, matrix).to(x.dtype).view_as(x)


def correlate2d_matrix(h: int, w: int, kernel: Tensor, mode: str) -> Tensor:
    """(HW × HW) float64 M with correlate2d(x, kernel, mode).flatten() = x.flatten() @ M."""
    kh, kw = kernel.shape
    rows = border_index(h, kh // 2, kh // 2, mode, torch.device("cpu"))
    cols = border_index(w, kw // 2, kw // 2, mode, torch.device("cpu"))
    y = torch.arange(h).view(h, 1, 1, 1)
    x = torch.arange(w).view(1, w, 1, 1)
    i = torch.arange(kh).view(1, 1, kh, 1)
    j = torch.arange(kw).view(1, 1, 1, kw)
    source = rows[y + i] * w + cols[x + j]  # (H, W, kh, kw)
    target = (y * w + x).expand_as(source)
    weights = kernel.to(torch.float64).expand_as(source)
    matrix = torch.zeros(h * w, h * w, dtype=torch.float64)
    return matrix.index_put_((source.flatten(), target.flatten()), weights.flatten(), True)


@lru_cache(maxsize=64)
def _gaussian_kernel1d(sigma: float, truncate: float) -> Tensor:
    radius = int(truncate * float(sigma) + 0.5)
    if sigma <= 0 or radius == 0:
        return torch.ones(1, dtype=torch.float64)
    t = torch.arange(-radius, radius + 1, dtype=torch.float64)
    k = torch.exp(-0.5 * t**2 / float(sigma) ** 2)
    return k / k.sum()


def gaussian_filter(
    x: Tensor, sigma: float, truncate: float = 4.0, mode: str = "replicate"
) -> Tensor:
    """scipy.ndimage.gaussian_filter over H and W (what skimage.filters.gaussian calls).

    g(t) ∝ exp(-t²/2σ²) on t = -r..r with r = ⌊truncate·σ + ½⌋, normalised to sum 1.
    """
    k = _gaussian_kernel1d(float(sigma), float(truncate))
    if k.numel() == 1:
        return x.clone()
    return correlate_separable(x, k, k, mode)


def opencv_gaussian_kernel1d(size: int, sigma: float) -> Tensor:
    """cv2.getGaussianKernel(size, sigma): exp(-(i-(size-1)/2)²/2σ²), normalised."""
    t = torch.arange(size, dtype=torch.float64) - (size - 1) / 2
    k = torch.exp(-(t**2) / (2 * float(sigma) ** 2))
    return k / k.sum()


def motion_blur_taps(
    radius: float, sigma: float, angles_deg: Tensor
) -> tuple[Tensor, Tensor, Tensor]:
    """ImageMagick's MotionBlurImage kernel (re-implemented in numpy by ``imagecorruptions``).

    width = 2⌈radius⌉ + 1 taps with weights ∝ exp(-i²/2σ²), i = 0..width-1; tap i samples the
    pixel at offset (⌈i·sinθ - ½⌉, ⌈i·cosθ - ½⌉) (rows, cols). Returns weights (K,) and integer
    row/col offsets (B, K) for the per-image angles θ (degrees).
    """
    width = 2 * math.ceil(radius) + 1
    i = torch.arange(width, dtype=torch.float64)
    weights = torch.exp(-(i**2) / (2 * float(sigma) ** 2))
    weights = weights / weights.sum()
    theta = torch.deg2rad(angles_deg.to(torch.float64))[:, None]
    dy = torch.ceil(i * torch.sin(theta) - 0.5).long()
    dx = torch.ceil(i * torch.cos(theta) - 0.5).long()
    return weights, dy, dx


def motion_blur(x: Tensor, radius: float, sigma: float, angles_deg: Tensor) -> Tensor:
    """Σ_i w_i · x(y + dy_i, x + dx_i) with edge replication, one angle per image.

    The reference blurs whole images; taps whose offset leaves the image read the edge pixel
    (ImageMagick's default virtual-pixel method).
    """
    b, c, h, w = x.shape
    weights, dy, dx = motion_blur_taps(radius, sigma, angles_deg.cpu())
    weights = weights.tolist()
    dy, dx = dy.to(x.device), dx.to(x.device)
    rows = torch.arange(h, device=x.device)
    cols = torch.arange(w, device=x.device)
    flat = x.reshape(b, c, h * w)
    out = torch.zeros_like(flat)
    for k, weight in enumerate(weights):
        r = (rows[None, :] + dy[:, k, None]).clamp_(0, h - 1)  # (B, H)
        q = (cols[None, :] + dx[:, k, None]).clamp_(0, w - 1)  # (B, W)
        idx = (r[:, :, None] * w + q[:, None, :]).reshape(b, 1, h * w).expand(b, c, h * w)
        out.add_(flat.gather(2, idx), alpha=weight)
    return out.reshape(b, c, h, w)
