"""Batched training augmentation as tensor ops on the batch's device.

Random crop with zero padding and random horizontal flip, the standard CIFAR "weak view"
(He et al., CVPR 2016, Sec. 4.2): pad ``p`` zero pixels on every side and cut an H x W window at a
uniform offset in {0..2p}^2; flip the width axis with probability 1/2. Both work on any dtype
(uint8 or float) and on a whole (B, C, H, W) batch at once, without a Python loop over samples.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor


def random_crop_offsets(
    batch: int,
    padding: int,
    generator: torch.Generator | None = None,
    device: torch.device | str = "cpu",
) -> Tensor:
    """Per-sample (row, col) offsets into the padded image, uniform in {0..2p}: (B, 2) int64."""
    return torch.randint(0, 2 * padding + 1, (batch, 2), generator=generator, device=device)


def crop_at(x: Tensor, padding: int, offsets: Tensor) -> Tensor:
    """Zero-pad ``x`` by ``padding`` and cut each sample's H x W window at ``offsets`` (B, 2).

    ``out[b, :, i, j] = padded[b, :, i + offsets[b, 0], j + offsets[b, 1]]``: the windows are a
    strided view (``unfold``) indexed once per sample, so only the output is copied.
    """
    b, _, h, w = x.shape
    padded = F.pad(x, (padding, padding, padding, padding))
    windows = padded.unfold(2, h, 1).unfold(3, w, 1)  # (B, C, 2p+1, 2p+1, H, W)
    return windows[torch.arange(b, device=x.device), :, offsets[:, 0], offsets[:, 1]]


def random_crop(x: Tensor, padding: int, generator: torch.Generator | None = None) -> Tensor:
    """Random H x W crop of the zero-padded batch ``x`` (B, C, H, W); ``padding=0``: ``x``."""
    if padding < 0:
        raise ValueError(f"padding must be >= 0, got {padding}")
    if padding == 0:
        return x
    return crop_at(x, padding, random_crop_offsets(x.shape[0], padding, generator, x.device))


def random_flip(x: Tensor, generator: torch.Generator | None = None) -> Tensor:
    """Reverse the width axis of each sample independently with probability 1/2."""
    flip = torch.rand(x.shape[0], generator=generator, device=x.device) < 0.5
    return torch.where(flip.view(-1, 1, 1, 1), x.flip(3), x)


def crop_and_flip(
    x: Tensor, padding: int, flip: bool, generator: torch.Generator | None = None
) -> Tensor:
    """``random_flip(random_crop(x, padding))`` with the flip skipped when ``flip`` is false."""
    x = random_crop(x, padding, generator)
    return random_flip(x, generator) if flip else x
