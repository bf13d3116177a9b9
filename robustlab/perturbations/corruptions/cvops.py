"""Batched torch ports of the OpenCV operations the reference ``spatter`` corruption calls.

Each function documents the OpenCV call it reproduces; all work on (B, 1, H, W) tensors whose
values are uint8-valued (held in any dtype) unless stated otherwise.
"""

from __future__ import annotations

import torch
from torch import Tensor
from torch.nn import functional as F

from robustlab.perturbations.corruptions.filters import correlate2d

_SOBEL_X = torch.tensor([[-1.0, 0.0, 1.0], [-2.0, 0.0, 2.0], [-1.0, 0.0, 1.0]])
_TG22 = 13573  # round(tan(22.5°) · 2^15), OpenCV's fixed-point constant
_CANNY_SHIFT = 15


def canny(u8: Tensor, low: int, high: int) -> Tensor:
    """cv2.Canny(img, low, high) (3×3 Sobel, L1 magnitude |gx|+|gy|): bool edge map.

    Non-maximum suppression along the quantised gradient direction, then hysteresis: pixels with
    magnitude > low survive if 8-connected to one with magnitude > high.
    """
    x = u8.to(torch.float32)
    gx = correlate2d(x, _SOBEL_X, "replicate").round().to(torch.int32)
    gy = correlate2d(x, _SOBEL_X.t(), "replicate").round().to(torch.int32)
    mag = gx.abs() + gy.abs()
    m = F.pad(mag, (1, 1, 1, 1))  # outside the image the magnitude is 0

    def at(dr: int, dc: int) -> Tensor:
        h, w = mag.shape[-2:]
        return m[..., 1 + dr : 1 + dr + h, 1 + dc : 1 + dc + w]

    ax = gx.abs()
    ay = gy.abs() << _CANNY_SHIFT
    tg22x = ax * _TG22
    tg67x = tg22x + (ax << (_CANNY_SHIFT + 1))
    horizontal = ay < tg22x
    vertical = ~horizontal & (ay > tg67x)
    same_sign = (gx ^ gy) >= 0
    peak_h = (mag > at(0, -1)) & (mag >= at(0, 1))
    peak_v = (mag > at(-1, 0)) & (mag >= at(1, 0))
    peak_d = torch.where(
        same_sign, (mag > at(-1, -1)) & (mag > at(1, 1)), (mag > at(-1, 1)) & (mag > at(1, -1))
    )
    peak = torch.where(horizontal, peak_h, torch.where(vertical, peak_v, peak_d))
    candidate = peak & (mag > low)
    edges = candidate & (mag > high)
    h, w = edges.shape[-2:]
    while True:
        p = F.pad(edges, (1, 1, 1, 1))
        grown = edges.clone()
        for dr in range(3):
            for dc in range(3):
                grown |= p[..., dr : dr + h, dc : dc + w]
        grown &= candidate
        if torch.equal(grown, edges):
            return edges
        edges = grown


_CHAMFER_STEPS = [
    ((dr, dc), w)
    for dr in range(-2, 3)
    for dc in range(-2, 3)
    for w in [{1: 1.0, 2: 1.4, 5: 2.1969}.get(dr * dr + dc * dc)]
    if w is not None
]


def distance_transform_l2_mask5(zero: Tensor, cap: float) -> Tensor:
    """min(cv2.distanceTransform(src, DIST_L2, 5), cap), where ``zero`` marks src == 0 pixels.

    OpenCV's 5×5 chamfer metric: shortest paths with steps 1 (axial), 1.4 (diagonal) and 2.1969
    (knight), summed in float32 as OpenCV does. Computed by parallel relaxation
    d(p) <- min(d(p), d(q) + w(p - q)); ⌈cap⌉ + 1 rounds suffice because every step costs at
    least 1 and distances above ``cap`` are cut to it anyway.
    """
    inf = float("inf")
    d = torch.where(zero, 0.0, inf).to(torch.float32)
    h, w = d.shape[-2:]
    step = torch.empty_like(d)
    for _ in range(int(cap) + 2):
        p = F.pad(d, (2, 2, 2, 2), value=inf)
        best = d.clone()
        for (dr, dc), cost in _CHAMFER_STEPS:
            torch.add(p[..., 2 + dr : 2 + dr + h, 2 + dc : 2 + dc + w], cost, out=step)
            torch.minimum(best, step, out=best)
        if torch.equal(best, d):
            break
        d = best
    return d.clamp_(max=cap)


def equalize_hist(u8: Tensor) -> Tensor:
    """cv2.equalizeHist per image: lut[i] = round(255 · (cdf(i) - h[i0]) / (N - h[i0])).

    i0 is the lowest occupied bin; an image with a single grey level is returned unchanged.
    """
    b = u8.shape[0]
    values = u8.reshape(b, -1).long()
    total = values.shape[1]
    hist = torch.zeros(b, 256, dtype=torch.long, device=u8.device)
    hist.scatter_add_(1, values, torch.ones_like(values))
    first = (hist > 0).long().argmax(1, keepdim=True)
    h0 = hist.gather(1, first)
    scale = 255.0 / (total - h0).clamp(min=1).to(torch.float32)
    cum = (hist.cumsum(1) - h0).to(torch.float32)
    lut = torch.round(cum * scale).clamp_(0, 255)
    lut = torch.where(torch.arange(256, device=u8.device) <= first, 0.0, lut)
    out = lut.gather(1, values).view_as(u8).to(u8.dtype)
    return torch.where((h0 == total).view(b, 1, 1, 1), u8, out)


def filter2d_u8(u8: Tensor, kernel: Tensor) -> Tensor:
    """cv2.filter2D(img, cv2.CV_8U, kernel): correlation, BORDER_REFLECT_101, saturated 0..255."""
    out = correlate2d(u8.to(torch.float32), kernel.to(torch.float32), "reflect101")
    return out.round().clamp_(0, 255)


def box_blur3_f32(x: Tensor) -> Tensor:
    """cv2.blur(img, (3, 3)) on a float32 image: float32(Σ_3×3 · (1/9)), BORDER_REFLECT_101.

    OpenCV sums float32 pixels exactly in float64 and rounds once, so e.g. nine 20s give 20.0
    exactly (the reference then truncates to uint8, which makes this matter).
    """
    s = correlate2d(x.to(torch.float64), torch.ones(3, 3, dtype=torch.float64), "reflect101")
    return (s * (1.0 / 9.0)).to(torch.float32)


def box_blur3_u8(u8: Tensor) -> Tensor:
    """cv2.blur(img, (3, 3)) on a uint8 image: round(sum of the 3×3 neighbourhood / 9)."""
    s = correlate2d(u8.to(torch.float32), torch.ones(3, 3), "reflect101").round()
    return torch.div(s + 4, 9, rounding_mode="floor")
