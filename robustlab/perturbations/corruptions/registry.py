"""The corruption registry and the wrapper every corruption shares.

A corruption is written once as a *core* ``core(x, c, params=..., generator=...)`` on float
(B, C, H, W) images, ``c`` being its reference parameter at the requested severity. ``register``
turns it into the public ``fn(images, severity=1, params=None, generator=None)``: validation,
table choice by image size, dtype handling, the grey-image rule and clipping to [0, 1].

Grey images (C = 1) are treated as the RGB image with R = G = B, and the corrupted RGB result is
mapped back with ITU-R 601 luma Y = 0.299 R + 0.587 G + 0.114 B (what PIL's ``convert("L")`` and
OpenCV's RGB2GRAY do). For corruptions that treat the channels alike (blurs, geometric warps,
fog, contrast, pixelate: ``grey="direct"``) that equals applying them to the single channel,
which is what we do. The pixel-noise corruptions draw independent noise per channel; mapping
three noisy channels back through luma would shrink the noise (σ by a factor 0.67), so they
draw one noise field for the grey channel instead: σ, λ and the impulse fraction keep their
meaning. Colour corruptions (brightness, saturate, JPEG, snow, frost, spatter) really do go
through RGB; results of uint8 reference operations (JPEG) are re-quantised after the luma step.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
from torch import Tensor

from robustlab.perturbations import imageops
from robustlab.perturbations.corruptions.color import rgb_to_gray
from robustlab.perturbations.corruptions.params import (
    check_param_set,
    check_severity,
    corruption_params,
    param_set_for_size,
)
from robustlab.randomness import RandomSource

Corruption = Callable[..., Tensor]
Core = Callable[..., Tensor]

CORRUPTIONS: dict[str, Corruption] = {}
GREY_MODES = ("direct", "rgb", "rgb_uint8")


def resolve_params(params: str | None, images: Tensor) -> str:
    """The table to use: ``params`` if given, else by image size (min(H, W) <= 64 -> cifar)."""
    if params is None:
        return param_set_for_size(*images.shape[-2:])
    return check_param_set(params)


def register(name: str, *, grey: str) -> Callable[[Core], Corruption]:
    """Register ``core`` under ``name`` with grey-image handling ``grey`` (see module doc)."""
    if grey not in GREY_MODES:
        raise ValueError(f"grey must be one of {GREY_MODES}")

    def decorate(core: Core) -> Corruption:
        def corruption(
            images: Tensor,
            severity: int = 1,
            params: str | None = None,
            generator: RandomSource = None,
        ) -> Tensor:
            imageops.check_images(images, who="corruptions")
            check_severity(severity)
            table = resolve_params(params, images)
            c: Any = corruption_params(name, severity, table)
            work = images if images.dtype in (torch.float32, torch.float64) else images.float()
            work = work.contiguous()  # e.g. NHWC arrays permuted to NCHW
            if work.shape[1] == 1 and grey != "direct":
                out = rgb_to_gray(
                    core(work.expand(-1, 3, -1, -1), c, params=table, generator=generator).clamp(
                        0, 1
                    )
                )
                if grey == "rgb_uint8":
                    out = imageops.from_uint8(imageops.to_uint8(out)).to(work.dtype)
            else:
                out = core(work, c, params=table, generator=generator)
            return out.clamp(0, 1).to(images.dtype)

        corruption.__name__ = corruption.__qualname__ = core.__name__
        corruption.__module__ = core.__module__
        corruption.__doc__ = core.__doc__
        corruption.core = core  # type: ignore[attr-defined]
        CORRUPTIONS[name] = corruption
        return corruption

    return decorate
