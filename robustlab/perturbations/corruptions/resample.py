"""Resampling as the reference libraries do it: scipy ``zoom`` crops and PIL BOX / NEAREST resize.

All of them are separable: a 1-D map applied along H and then along W, batched over images and
channels (index selects, or a small fixed-point matrix for Pillow's BOX filter).
"""

from __future__ import annotations

import math
from functools import lru_cache

import torch
from torch import Tensor

PIL_PRECISION_BITS = 32 - 8 - 2  # Pillow's fixed-point precision for 8-bit resampling


@lru_cache(maxsize=256)
def clipped_zoom_taps(n: int, zoom: float) -> tuple[Tensor, Tensor, Tensor]:
    """1-D linear taps of the reference ``clipped_zoom`` (centre crop, scipy zoom, centre trim).

    Crop ch = ⌈n/z⌉ centred pixels (top = ⌊(n-ch)/2⌋), zoom them to round(ch·z) samples with
    ``scipy.ndimage.zoom(order=1)`` (output k reads input k·(ch-1)/(n_out-1)), keep the centre n.
    Output o = (1 - f[o])·x[i0[o]] + f[o]·x[i1[o]].
    """
    ch = int(math.ceil(n / zoom))
    top = (n - ch) // 2
    n_out = int(round(ch * zoom))
    trim = (n_out - n) // 2
    step = (ch - 1) / (n_out - 1) if n_out > 1 else 0.0
    i0, i1, frac = [], [], []
    for o in range(n):
        s = (trim + o) * step
        lo = min(int(math.floor(s)), ch - 1)
        i0.append(top + lo)
        i1.append(top + min(lo + 1, ch - 1))
        frac.append(s - lo)
    return (torch.tensor(i0), torch.tensor(i1), torch.tensor(frac, dtype=torch.float64))


def _interp(x: Tensor, taps: tuple[Tensor, Tensor, Tensor], dim: int) -> Tensor:
    i0, i1, frac = (t.to(x.device) for t in taps)
    frac = frac.to(x.dtype)
    if dim == -2:
        frac = frac[:, None]
    return torch.lerp(x.index_select(dim, i0), x.index_select(dim, i1), frac)


def clipped_zoom(x: Tensor, zoom: float) -> Tensor:
    """The reference ``clipped_zoom`` of every channel of (B, C, H, W) ``x`` (same size out)."""
    h, w = x.shape[-2:]
    return _interp(_interp(x, clipped_zoom_taps(h, zoom), -2), clipped_zoom_taps(w, zoom), -1)


@lru_cache(maxsize=64)
def clipped_zoom_matrices(n: int, zooms: tuple[float, ...]) -> Tensor:
    """(Z, n, n) float64 matrices of :func:`clipped_zoom_taps` for each zoom factor."""
    out = torch.zeros(len(zooms), n, n, dtype=torch.float64)
    rows = torch.arange(n)
    for k, zoom in enumerate(zooms):
        i0, i1, frac = clipped_zoom_taps(n, zoom)
        out[k].index_put_((rows, i0), 1 - frac, accumulate=True)
        out[k].index_put_((rows, i1), frac, accumulate=True)
    return out


def clipped_zoom_sum_matrix(h: int, w: int, zooms: tuple[float, ...]) -> Tensor:
    """(HW × HW) float64 M with clipped_zoom_sum(x, zooms).flatten() = x.flatten() @ M."""
    rows = clipped_zoom_matrices(h, zooms)  # (Z, H, H): out row o reads input row i
    cols = clipped_zoom_matrices(w, zooms)
    dense = torch.einsum("zoi,zpj->ijop", rows, cols)  # Σ_z A_z[o, i] B_z[p, j]
    return dense.reshape(h * w, h * w)


def clipped_zoom_sum(x: Tensor, zooms: tuple[float, ...]) -> Tensor:
    """Σ_z clipped_zoom(x, z) over the factors ``zooms``.

    Small images use two GEMMs, Σ_z A_z X B_zᵀ = [A_1 … A_Z] · stack_z(X B_zᵀ); larger ones
    (where the dense matrices would cost more than they save) sum the separable taps.
    """
    h, w = x.shape[-2:]
    if max(h, w) > 64:
        return torch.stack([clipped_zoom(x, z) for z in zooms]).sum(0)
    rows = clipped_zoom_matrices(h, zooms).to(device=x.device, dtype=x.dtype)  # (Z, H, H)
    cols = clipped_zoom_matrices(w, zooms).to(device=x.device, dtype=x.dtype)  # (Z, W, W)
    z = len(zooms)
    lead = x.shape[:-2]
    flat = x.reshape(-1, h, w)
    right = torch.matmul(flat, cols.permute(2, 0, 1).reshape(w, z * w))  # (N, H, Z·W)
    right = right.view(-1, h, z, w).transpose(1, 2).reshape(-1, z * h, w)  # (N, Z·H, W)
    out = torch.matmul(rows.permute(1, 0, 2).reshape(h, z * h), right)  # (N, H, W)
    return out.view(*lead, h, w)


@lru_cache(maxsize=256)
def pil_box_coefficients(n_in: int, n_out: int) -> Tensor:
    """Pillow's BOX resampling weights in its 8-bit fixed point, as a (n_out × n_in) matrix.

    Output pixel j averages the input pixels whose centres fall in the box of width s = n_in/n_out
    around (j + ½)·s; weights are normalised, then rounded to integers of 2^-22.
    """
    scale = n_in / n_out
    filterscale = max(scale, 1.0)
    support = 0.5 * filterscale
    matrix = torch.zeros(n_out, n_in, dtype=torch.float64)
    for xx in range(n_out):
        center = (xx + 0.5) * scale
        xmin = max(int(center - support + 0.5), 0)
        xmax = min(int(center + support + 0.5), n_in)
        weights = []
        for x in range(xmin, xmax):
            t = (x - center + 0.5) / filterscale
            weights.append(1.0 if -0.5 < t <= 0.5 else 0.0)
        total = sum(weights)
        for x, wgt in zip(range(xmin, xmax), weights, strict=True):
            k = wgt / total if total else wgt
            matrix[xx, x] = math.floor(0.5 + k * (1 << PIL_PRECISION_BITS))
    return matrix


def _pil_pass(u8: Tensor, coeffs: Tensor, dim: int) -> Tensor:
    """One Pillow 8-bit resampling pass: ⌊(Σ k·p + 2^21) / 2^22⌋ clipped to 0..255."""
    coeffs = coeffs.to(device=u8.device, dtype=torch.float64)
    x = u8.to(torch.float64)
    out = torch.matmul(coeffs, x) if dim == -2 else torch.matmul(x, coeffs.transpose(0, 1))
    out = torch.floor((out + (1 << (PIL_PRECISION_BITS - 1))) / (1 << PIL_PRECISION_BITS))
    return out.clamp_(0, 255)


def pil_box_resize(u8: Tensor, height: int, width: int) -> Tensor:
    """``PIL.Image.resize((width, height), Image.BOX)`` of uint8-valued (…, H, W) images, exact.

    Pillow resamples horizontally first, rounding to 8 bits, then vertically.
    """
    h, w = u8.shape[-2:]
    out = u8
    if width != w:
        out = _pil_pass(out, pil_box_coefficients(w, width), dim=-1)
    if height != h:
        out = _pil_pass(out, pil_box_coefficients(h, height), dim=-2)
    return out.to(u8.dtype)


@lru_cache(maxsize=256)
def pil_nearest_index(n_in: int, n_out: int) -> Tensor:
    """Source index of each output pixel of Pillow's NEAREST resize (its affine scan, exact)."""
    a = n_in / n_out
    xo = a * 0.5
    index = []
    for _ in range(n_out):  # Pillow accumulates the coordinate, so do we (bit-identical floors)
        index.append(min(int(xo) if xo >= 0 else -1, n_in - 1))
        xo += a
    return torch.tensor(index, dtype=torch.long)


def pil_nearest_resize(x: Tensor, height: int, width: int) -> Tensor:
    """``PIL.Image.resize((width, height), Image.NEAREST)`` of (…, H, W) images."""
    h, w = x.shape[-2:]
    rows = pil_nearest_index(h, height).to(x.device)
    cols = pil_nearest_index(w, width).to(x.device)
    return x.index_select(-2, rows).index_select(-1, cols)
