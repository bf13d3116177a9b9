"""Weather corruptions of Hendrycks & Dietterich (ICLR 2019): snow, frost, fog, spatter, batched.

Each follows the reference ``make_cifar_c.py`` / ``make_imagenet_c.py`` step by step (including
its intermediate uint8 quantisation), with one random layer per image.
"""

from __future__ import annotations

import torch
from torch import Tensor

from robustlab import randomness
from robustlab.perturbations.corruptions import cvops, filters, textures
from robustlab.perturbations.corruptions.color import rgb_to_gray
from robustlab.perturbations.corruptions.plasma import next_power_of_two, plasma_fractal
from robustlab.perturbations.corruptions.registry import register
from robustlab.perturbations.corruptions.resample import clipped_zoom
from robustlab.randomness import RandomSource


@register("snow", grey="rgb")
def snow(x: Tensor, c: tuple[float, ...], *, params: str, generator: RandomSource) -> Tensor:
    """Snow: a thresholded, zoomed N(μ, s) layer streaked by a motion blur at θ ~ U(-135°, -45°),
    added twice (as is and rotated 180°) to x whitened towards max(x, 1.5·gray(x) + 0.5)
    (Hendrycks & Dietterich 2019).

    The flakes go through uint8 as in the reference (truncated before ImageMagick's motion blur,
    rounded after it).
    """
    mean, std, zoom, threshold, radius, sigma, blend = c
    b, _, h, w = x.shape
    layer = randomness.normal((b, 1, h, w), mean, std, generator, x.device, x.dtype)
    layer = clipped_zoom(layer, zoom)
    layer = torch.where(layer < threshold, torch.zeros_like(layer), layer)
    layer = torch.floor(layer.clamp(0, 1) * 255) / 255  # .astype(np.uint8) truncates
    angles = randomness.uniform((b,), -135.0, -45.0, generator, x.device, torch.float64)
    layer = torch.floor(filters.motion_blur(layer, radius, sigma, angles) * 255 + 0.5) / 255
    whitened = torch.maximum(x, rgb_to_gray(x) * 1.5 + 0.5)
    x = blend * x + (1 - blend) * whitened
    return (x + layer + layer.flip(-2, -1)).clamp_(0, 1)


@register("frost", grey="rgb")
def frost(x: Tensor, c: tuple[float, float], *, params: str, generator: RandomSource) -> Tensor:
    """Frost: clip(a·x + b·F) with F a random crop of one of five real frost photographs
    (Hendrycks & Dietterich 2019; the photographs ship with ``imagecorruptions``).

    CIFAR parameters use the photographs shrunk by 0.2, as make_cifar_c.py does; photographs
    smaller than the image are first upscaled as ``imagecorruptions`` does.
    """
    image_weight, frost_weight = c
    b, _, h, w = x.shape
    frosts = textures.frost_textures(params, h, w)
    choice = randomness.randint((b,), 0, len(frosts), generator, x.device)
    u = randomness.uniform((b, 2), 0.0, 1.0, generator, x.device, torch.float64)
    layer = torch.empty_like(x)
    rows = torch.arange(h, device=x.device)
    cols = torch.arange(w, device=x.device)
    for k, texture in enumerate(frosts):
        sel = (choice == k).nonzero().flatten()
        if sel.numel() == 0:
            continue
        th, tw = texture.shape[-2:]
        tex = texture.to(device=x.device, dtype=x.dtype) / 255
        top = torch.floor(u[sel, 0] * (th - h)).long()  # np.random.randint(0, th - h)
        left = torch.floor(u[sel, 1] * (tw - w)).long()
        r = (top[:, None] + rows)[:, :, None]
        q = (left[:, None] + cols)[:, None, :]
        layer[sel] = tex[:, r, q].permute(1, 0, 2, 3)
    return (image_weight * x + frost_weight * layer).clamp_(0, 1)


@register("fog", grey="direct")
def fog(x: Tensor, c: tuple[float, float], *, params: str, generator: RandomSource) -> Tensor:
    """Fog: clip((x + s·P) · m / (m + s)), P a diamond-square plasma fractal with decay d and
    m = max(x) per image (Hendrycks & Dietterich 2019). The map side is the next power of two
    >= max(H, W) (32 for CIFAR, 256 for ImageNet), cropped to H × W."""
    strength, decay = c
    b, _, h, w = x.shape
    size = next_power_of_two(max(h, w))
    plasma = plasma_fractal(b, size, decay, generator, x.device).to(x.dtype)
    peak = x.amax((1, 2, 3), keepdim=True)
    out = x + strength * plasma[:, None, :h, :w]
    return (out * peak / (peak + strength)).clamp_(0, 1)


_EMBOSS = torch.tensor([[-2.0, -1.0, 0.0], [-1.0, 1.0, 1.0], [0.0, 1.0, 2.0]])
_WATER = (175 / 255, 238 / 255, 238 / 255)  # pale turquoise (R, G, B)
_MUD = (63 / 255, 42 / 255, 20 / 255)


def _colour(rgb: tuple[float, float, float], like: Tensor) -> Tensor:
    return torch.tensor(rgb, dtype=like.dtype, device=like.device).view(1, 3, 1, 1)


@register("spatter", grey="rgb")
def spatter(x: Tensor, c: tuple[float, ...], *, params: str, generator: RandomSource) -> Tensor:
    """Spatter: a blurred, thresholded N(μ, s) liquid layer L (Hendrycks & Dietterich 2019).

    Mode 0 (water): drops shaded by an embossed, equalised distance-to-edge map of L (Canny,
    distance transform, histogram equalisation — OpenCV ports in :mod:`cvops`), added in pale
    turquoise. Mode 1 (mud): the blurred mask of L > t, cut at 0.8, blends x towards mud brown.
    """
    mean, std, sigma, threshold, intensity, mode = c
    b, _, h, w = x.shape
    liquid = randomness.normal((b, 1, h, w), mean, std, generator, x.device, torch.float64)
    liquid = filters.gaussian_filter(liquid, sigma)
    liquid = torch.where(liquid < threshold, torch.zeros_like(liquid), liquid)
    if mode == 0:
        u8 = torch.remainder(torch.floor(liquid * 255), 256)  # .astype(np.uint8) wraps
        dist = cvops.distance_transform_l2_mask5(cvops.canny(u8, 50, 150), 20.0)
        dist = torch.floor(cvops.box_blur3_f32(dist))  # then .astype(np.uint8)
        dist = cvops.equalize_hist(dist)
        dist = cvops.box_blur3_u8(cvops.filter2d_u8(dist, _EMBOSS))
        m = u8 * dist
        peak = m.amax((2, 3), keepdim=True)
        m = torch.where(peak > 0, m / torch.where(peak > 0, peak, 1.0), 0.0) * intensity
        return (x + m.to(x.dtype) * _colour(_WATER, x)).clamp_(0, 1)
    mask = filters.gaussian_filter((liquid > threshold).to(torch.float32), intensity)
    mask = torch.where(mask < 0.8, torch.zeros_like(mask), mask).to(x.dtype)
    return (x * (1 - mask) + _colour(_MUD, x) * mask).clamp_(0, 1)
