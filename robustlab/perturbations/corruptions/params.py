"""Parameter tables of the common corruptions (Hendrycks & Dietterich, ICLR 2019).

CIFAR-10-C and ImageNet-C were generated with different parameters (``make_cifar_c.py`` and
``make_imagenet_c.py`` in github.com/hendrycks/robustness); both tables are kept here, the only
place that holds corruption parameters. ``TABLES[params][name][severity - 1]`` is the value the
reference script uses at that severity; the tuple layouts are documented per entry.

Notes on entries that are not a plain number:

- ``zoom_blur``: the arguments ``(start, stop, step)`` of the reference's ``np.arange``. Because
  of floating-point rounding ``np.arange(1, 1.06, 0.01)`` ends at 1.06 (7 factors), so the
  reference zooms slightly further than the "1 to 1.05" its stop value suggests; we keep the
  reference's behaviour by evaluating the same ``np.arange`` (see :func:`zoom_factors`).
- ``elastic_transform``: ``(alpha, sigma, affine)`` in pixels *at the reference image size*
  (:data:`ELASTIC_REFERENCE_SIZE`: 32 for CIFAR, 224 for ImageNet; the ImageNet script multiplies
  by 244 where 224 was meant, which we keep). Other image sizes scale all three linearly.
- ``snow``: ``(mean, std, zoom, threshold, blur radius, blur sigma, blend)``.
- ``spatter``: ``(mean, std, sigma, threshold, intensity or mud sigma, mode)``; mode 0 = water
  drops, 1 = mud.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from robustlab.errors import ConfigError
from robustlab.registry import resolve

PARAM_SETS: tuple[str, ...] = ("cifar", "imagenet")

#: image size the elastic-transform pixel values refer to
ELASTIC_REFERENCE_SIZE: dict[str, int] = {"cifar": 32, "imagenet": 224}

_C = 32  # IMSIZE in make_cifar_c.py
_I = 244  # make_imagenet_c.py: "244 should have been 224, but ultimately nothing is incorrect"

CIFAR: dict[str, tuple[Any, ...]] = {
    "gaussian_noise": (0.04, 0.06, 0.08, 0.09, 0.10),
    "shot_noise": (500, 250, 100, 75, 50),
    "impulse_noise": (0.01, 0.02, 0.03, 0.05, 0.07),
    "speckle_noise": (0.06, 0.1, 0.12, 0.16, 0.2),
    "gaussian_blur": (0.4, 0.6, 0.7, 0.8, 1),
    # (sigma, max shift, iterations)
    "glass_blur": ((0.05, 1, 1), (0.25, 1, 1), (0.4, 1, 1), (0.25, 1, 2), (0.4, 1, 2)),
    # (disk radius, alias blur)
    "defocus_blur": ((0.3, 0.4), (0.4, 0.5), (0.5, 0.6), (1, 0.2), (1.5, 0.1)),
    # (radius, sigma)
    "motion_blur": ((6, 1), (6, 1.5), (6, 2), (8, 2), (9, 2.5)),
    # np.arange(start, stop, step)
    "zoom_blur": (
        (1, 1.06, 0.01),
        (1, 1.11, 0.01),
        (1, 1.16, 0.01),
        (1, 1.21, 0.01),
        (1, 1.26, 0.01),
    ),
    "snow": (
        (0.1, 0.2, 1, 0.6, 8, 3, 0.95),
        (0.1, 0.2, 1, 0.5, 10, 4, 0.9),
        (0.15, 0.3, 1.75, 0.55, 10, 4, 0.9),
        (0.25, 0.3, 2.25, 0.6, 12, 6, 0.85),
        (0.3, 0.3, 1.25, 0.65, 14, 12, 0.8),
    ),
    # (image weight, frost weight)
    "frost": ((1, 0.2), (1, 0.3), (0.9, 0.4), (0.85, 0.4), (0.75, 0.45)),
    # (strength, plasma decay)
    "fog": ((0.2, 3), (0.5, 3), (0.75, 2.5), (1, 2), (1.5, 1.75)),
    "brightness": (0.05, 0.1, 0.15, 0.2, 0.3),
    "contrast": (0.75, 0.5, 0.4, 0.3, 0.15),
    "elastic_transform": (
        (_C * 0, _C * 0, _C * 0.08),
        (_C * 0.05, _C * 0.2, _C * 0.07),
        (_C * 0.08, _C * 0.06, _C * 0.06),
        (_C * 0.1, _C * 0.04, _C * 0.05),
        (_C * 0.1, _C * 0.03, _C * 0.03),
    ),
    "pixelate": (0.95, 0.9, 0.85, 0.75, 0.65),
    "jpeg_compression": (80, 65, 58, 50, 40),
    "spatter": (
        (0.62, 0.1, 0.7, 0.7, 0.5, 0),
        (0.65, 0.1, 0.8, 0.7, 0.5, 0),
        (0.65, 0.3, 1, 0.69, 0.5, 0),
        (0.65, 0.1, 0.7, 0.69, 0.6, 1),
        (0.65, 0.1, 0.5, 0.68, 0.6, 1),
    ),
    # (saturation scale, saturation shift)
    "saturate": ((0.3, 0), (0.1, 0), (1.5, 0), (2, 0.1), (2.5, 0.2)),
}

IMAGENET: dict[str, tuple[Any, ...]] = {
    "gaussian_noise": (0.08, 0.12, 0.18, 0.26, 0.38),
    "shot_noise": (60, 25, 12, 5, 3),
    "impulse_noise": (0.03, 0.06, 0.09, 0.17, 0.27),
    "speckle_noise": (0.15, 0.2, 0.35, 0.45, 0.6),
    "gaussian_blur": (1, 2, 3, 4, 6),
    "glass_blur": ((0.7, 1, 2), (0.9, 2, 1), (1, 2, 3), (1.1, 3, 2), (1.5, 4, 2)),
    "defocus_blur": ((3, 0.1), (4, 0.5), (6, 0.5), (8, 0.5), (10, 0.5)),
    "motion_blur": ((10, 3), (15, 5), (15, 8), (15, 12), (20, 15)),
    "zoom_blur": (
        (1, 1.11, 0.01),
        (1, 1.16, 0.01),
        (1, 1.21, 0.02),
        (1, 1.26, 0.02),
        (1, 1.31, 0.03),
    ),
    "snow": (
        (0.1, 0.3, 3, 0.5, 10, 4, 0.8),
        (0.2, 0.3, 2, 0.5, 12, 4, 0.7),
        (0.55, 0.3, 4, 0.9, 12, 8, 0.7),
        (0.55, 0.3, 4.5, 0.85, 12, 8, 0.65),
        (0.55, 0.3, 2.5, 0.85, 12, 12, 0.55),
    ),
    "frost": ((1, 0.4), (0.8, 0.6), (0.7, 0.7), (0.65, 0.7), (0.6, 0.75)),
    "fog": ((1.5, 2), (2.0, 2), (2.5, 1.7), (2.5, 1.5), (3.0, 1.4)),
    "brightness": (0.1, 0.2, 0.3, 0.4, 0.5),
    "contrast": (0.4, 0.3, 0.2, 0.1, 0.05),
    "elastic_transform": (
        (_I * 2, _I * 0.7, _I * 0.1),
        (_I * 2, _I * 0.08, _I * 0.2),
        (_I * 0.05, _I * 0.01, _I * 0.02),
        (_I * 0.07, _I * 0.01, _I * 0.02),
        (_I * 0.12, _I * 0.01, _I * 0.02),
    ),
    "pixelate": (0.6, 0.5, 0.4, 0.3, 0.25),
    "jpeg_compression": (25, 18, 15, 10, 7),
    "spatter": (
        (0.65, 0.3, 4, 0.69, 0.6, 0),
        (0.65, 0.3, 3, 0.68, 0.6, 0),
        (0.65, 0.3, 2, 0.68, 0.5, 0),
        (0.65, 0.3, 1, 0.65, 1.5, 1),
        (0.67, 0.4, 1, 0.65, 1.5, 1),
    ),
    "saturate": ((0.3, 0), (0.1, 0), (2, 0), (5, 0.1), (20, 0.2)),
}

TABLES: dict[str, dict[str, tuple[Any, ...]]] = {"cifar": CIFAR, "imagenet": IMAGENET}


def check_param_set(params: str) -> str:
    """Validate a table name ('cifar' or 'imagenet')."""
    if params not in TABLES:
        raise ConfigError(
            f"corruption params must be one of {list(PARAM_SETS)} (or None to "
            f"choose by image size), got {params!r}"
        )
    return params


def param_set_for_size(height: int, width: int) -> str:
    """'cifar' for images with min(H, W) <= 64, else 'imagenet'."""
    return "cifar" if min(height, width) <= 64 else "imagenet"


def corruption_params(name: str, severity: int, params: str = "cifar") -> Any:
    """The reference parameter (number or tuple) of corruption ``name`` at ``severity`` 1..5."""
    table = TABLES[check_param_set(params)]
    values = resolve(table, name, group="corruption", imports=False, ordered=True)
    return values[check_severity(severity) - 1]


def check_severity(severity: int) -> int:
    """Validate a severity: an integer 1..5."""
    valid = isinstance(severity, int | np.integer) and not isinstance(severity, bool)
    if not valid or not 1 <= severity <= 5:
        raise ConfigError(f"severity must be 1..5, got {severity!r}")
    return int(severity)


def zoom_factors(arange: tuple[float, float, float]) -> list[float]:
    """The zoom factors of the reference: ``np.arange(start, stop, step)``, evaluated alike."""
    return [float(z) for z in np.arange(*arange)]
