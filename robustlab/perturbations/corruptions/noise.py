"""Pixel-noise corruptions of Hendrycks & Dietterich (ICLR 2019), batched.

Noise is drawn independently per pixel and channel, as in the reference ``make_*_c.py``; values
are clipped to [0, 1].
"""

from __future__ import annotations

import torch
from torch import Tensor

from robustlab import randomness
from robustlab.perturbations.corruptions.registry import register
from robustlab.randomness import RandomSource


@register("gaussian_noise", grey="direct")
def gaussian_noise(x: Tensor, sigma: float, *, params: str, generator: RandomSource) -> Tensor:
    """Additive Gaussian noise: clip(x + σ·ε), ε ~ N(0, 1) (Hendrycks & Dietterich 2019)."""
    noise = randomness.normal(tuple(x.shape), 0.0, sigma, generator, x.device, x.dtype)
    return (x + noise).clamp_(0, 1)


@register("shot_noise", grey="direct")
def shot_noise(x: Tensor, lam: float, *, params: str, generator: RandomSource) -> Tensor:
    """Photon (shot) noise: clip(Poisson(λ·x) / λ), so Var = x/λ (Hendrycks & Dietterich 2019)."""
    return (randomness.poisson(x * lam, generator) / lam).clamp_(0, 1)


@register("impulse_noise", grey="direct")
def impulse_noise(x: Tensor, amount: float, *, params: str, generator: RandomSource) -> Tensor:
    """Salt-and-pepper noise: each value becomes 0 or 1 (equally likely) with probability
    ``amount`` (skimage ``random_noise(mode='s&p')``; Hendrycks & Dietterich 2019)."""
    u = randomness.uniform((x.shape[0], 2, *x.shape[1:]), 0.0, 1.0, generator, x.device, x.dtype)
    flipped = u[:, 0] < amount
    salt = (u[:, 1] < 0.5).to(x.dtype)
    return torch.where(flipped, salt, x)


@register("speckle_noise", grey="direct")
def speckle_noise(x: Tensor, sigma: float, *, params: str, generator: RandomSource) -> Tensor:
    """Multiplicative speckle: clip(x + x·σ·ε), ε ~ N(0, 1) (Hendrycks & Dietterich 2019)."""
    noise = randomness.normal(tuple(x.shape), 0.0, sigma, generator, x.device, x.dtype)
    return (x + x * noise).clamp_(0, 1)
