"""Random draws for the corruptions that honour an optional ``torch.Generator``.

Numbers are drawn on the generator's device (the default generator: the images' device) and
moved to the images' device, so a CPU generator gives the same corruption on CPU and CUDA
inputs, and the same seed always gives the same output. Pass a CUDA generator for CUDA inputs
to avoid the host-to-device copy.
"""

from __future__ import annotations

import torch
from torch import Tensor


def _source(generator: torch.Generator | None, device: torch.device) -> torch.device:
    return generator.device if generator is not None else device


def uniform(
    shape: tuple[int, ...],
    low: float | Tensor,
    high: float | Tensor,
    generator: torch.Generator | None,
    device: torch.device,
    dtype: torch.dtype = torch.float32,
) -> Tensor:
    """U[low, high) samples of ``shape``."""
    u = torch.rand(shape, generator=generator, device=_source(generator, device), dtype=dtype)
    return low + (high - low) * u.to(device)


def normal(
    shape: tuple[int, ...],
    mean: float,
    std: float,
    generator: torch.Generator | None,
    device: torch.device,
    dtype: torch.dtype = torch.float32,
) -> Tensor:
    """N(mean, std²) samples of ``shape``."""
    z = torch.randn(shape, generator=generator, device=_source(generator, device), dtype=dtype)
    return z.to(device).mul_(std).add_(mean)


def randint(
    shape: tuple[int, ...],
    low: int,
    high: int,
    generator: torch.Generator | None,
    device: torch.device,
) -> Tensor:
    """Integers uniform in [low, high) (numpy's ``randint`` convention)."""
    src = _source(generator, device)
    return torch.randint(low, high, shape, generator=generator, device=src).to(device)


def poisson(rates: Tensor, generator: torch.Generator | None) -> Tensor:
    """Poisson(rates) samples, same shape and device as ``rates``."""
    src = _source(generator, rates.device)
    return torch.poisson(rates.to(src), generator=generator).to(rates.device)
