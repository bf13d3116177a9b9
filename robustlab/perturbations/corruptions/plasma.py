"""Diamond-square plasma fractal (the fog layer of Hendrycks & Dietterich 2019), batched.

Fournier, Fussell & Carpenter (1982) midpoint displacement on a periodic square grid: each level
sets square centres to the mean of their 4 corners, then diamond centres to the mean of their 4
neighbours, each plus U(-w, w)·w; the wibble w starts at 100 and is divided by ``decay`` per level.
The map is normalised to [0, 1]. Same update order and noise scale as the reference
``plasma_fractal`` (a modification of github.com/FLHerne/mapgen).
"""

from __future__ import annotations

import torch
from torch import Tensor

from robustlab import randomness
from robustlab.randomness import RandomSource


def next_power_of_two(n: int) -> int:
    return 1 << max(int(n) - 1, 0).bit_length()


def plasma_fractal(
    batch: int, mapsize: int, decay: float, generator: RandomSource, device: torch.device
) -> Tensor:
    """(batch, mapsize, mapsize) plasma maps in [0, 1]; ``mapsize`` must be a power of two."""
    if mapsize & (mapsize - 1):
        raise ValueError(f"mapsize must be a power of two, got {mapsize}")
    maps = torch.zeros(batch, mapsize, mapsize, device=device)
    step = mapsize
    wibble = 100.0

    def wibbled_mean(total: Tensor) -> Tensor:
        noise = randomness.uniform(tuple(total.shape), -wibble, wibble, generator, device)
        return total / 4 + wibble * noise

    while step >= 2:
        half = step // 2
        corners = maps[:, 0::step, 0::step]
        squares = corners + corners.roll(-1, 1)
        squares = squares + squares.roll(-1, 2)
        maps[:, half::step, half::step] = wibbled_mean(squares)
        centres = maps[:, half::step, half::step]
        corners = maps[:, 0::step, 0::step]
        left = centres + centres.roll(1, 1) + corners + corners.roll(-1, 2)
        maps[:, 0::step, half::step] = wibbled_mean(left)
        top = centres + centres.roll(1, 2) + corners + corners.roll(-1, 1)
        maps[:, half::step, 0::step] = wibbled_mean(top)
        step = half
        wibble /= decay
    low = maps.amin((1, 2), keepdim=True)
    maps = maps - low
    return maps / maps.amax((1, 2), keepdim=True)
