"""RGB ↔ HSV and RGB → grey in torch, following skimage.color (what the reference scripts call).

rgb_to_hsv: V = max(R,G,B), S = (V - min)/V, H = sector formula / 6 (mod 1), with H = S = 0 for
grey pixels; hsv_to_rgb: the inverse six-sector formula (Smith, SIGGRAPH 1978).
"""

from __future__ import annotations

import torch
from torch import Tensor

#: ITU-R BT.601 luma weights (also OpenCV's COLOR_RGB2GRAY and PIL's convert("L"))
LUMA_601 = (0.299, 0.587, 0.114)


def rgb_to_hsv(rgb: Tensor) -> Tensor:
    """(B, 3, H, W) RGB in [0, 1] -> HSV with every component in [0, 1] (skimage.color.rgb2hsv)."""
    r, g, b = rgb.unbind(1)
    v = rgb.amax(1)
    delta = v - rgb.amin(1)
    grey = delta == 0
    safe_delta = torch.where(grey, torch.ones_like(delta), delta)
    s = torch.where(grey, torch.zeros_like(v), delta / torch.where(v == 0, torch.ones_like(v), v))
    # skimage assigns red, then green, then blue: the last matching channel wins on ties
    h = torch.where(r == v, (g - b) / safe_delta, torch.zeros_like(v))
    h = torch.where(g == v, 2.0 + (b - r) / safe_delta, h)
    h = torch.where(b == v, 4.0 + (r - g) / safe_delta, h)
    h = torch.where(grey, torch.zeros_like(h), torch.remainder(h / 6.0, 1.0))
    return torch.stack((h, s, v), 1)


def hsv_to_rgb(hsv: Tensor) -> Tensor:
    """Inverse of :func:`rgb_to_hsv` (skimage.color.hsv2rgb)."""
    h, s, v = hsv.unbind(1)
    hi = torch.floor(h * 6)
    f = h * 6 - hi
    p = v * (1 - s)
    q = v * (1 - f * s)
    t = v * (1 - (1 - f) * s)
    sector = hi.long().remainder(6)
    # per sector: (R, G, B) drawn from (v, t, p, q)
    options = torch.stack((v, t, p, q), 0)  # 4 x (B, H, W)
    table = torch.tensor(
        [[0, 1, 2], [3, 0, 2], [2, 0, 1], [2, 3, 0], [1, 2, 0], [0, 2, 3]], device=hsv.device
    )
    pick = table[sector]  # (B, H, W, 3)
    out = options.gather(0, pick.permute(3, 0, 1, 2))  # (3, B, H, W)
    return out.permute(1, 0, 2, 3)


def rgb_to_gray(rgb: Tensor) -> Tensor:
    """Y = 0.299 R + 0.587 G + 0.114 B: (B, 3, H, W) -> (B, 1, H, W)."""
    w = torch.tensor(LUMA_601, dtype=rgb.dtype, device=rgb.device).view(1, 3, 1, 1)
    return (rgb * w).sum(1, keepdim=True)
