"""Entry point of the common corruptions: registries and :func:`corrupt`."""

from __future__ import annotations

from torch import Tensor

from robustlab.perturbations.corruptions import blur, digital, noise, weather  # noqa: F401  (registration)
from robustlab.perturbations.corruptions.registry import CORRUPTIONS, Corruption
from robustlab.randomness import RandomSource
from robustlab.registry import resolve

#: the 15 test corruptions, in the order of the paper and of the released data
TEST_CORRUPTIONS: tuple[str, ...] = (
    "gaussian_noise",
    "shot_noise",
    "impulse_noise",
    "defocus_blur",
    "glass_blur",
    "motion_blur",
    "zoom_blur",
    "snow",
    "frost",
    "fog",
    "brightness",
    "contrast",
    "elastic_transform",
    "pixelate",
    "jpeg_compression",
)
#: the 4 held-out (validation) corruptions
HELDOUT_CORRUPTIONS: tuple[str, ...] = ("speckle_noise", "gaussian_blur", "spatter", "saturate")
ALL_CORRUPTIONS: tuple[str, ...] = TEST_CORRUPTIONS + HELDOUT_CORRUPTIONS


def get_corruption(name: str) -> Corruption:
    """The corruption function registered under ``name``; ConfigError listing valid names."""
    return resolve(_IN_PAPER_ORDER, name, group="corruption", imports=False, ordered=True)


def corrupt(
    images: Tensor,
    name: str,
    severity: int,
    params: str | None = None,
    generator: RandomSource = None,
) -> Tensor:
    """Apply corruption ``name`` at ``severity`` 1..5 to float (B, C, H, W) images in [0, 1].

    ``params`` picks the parameter table ("cifar": CIFAR-10-C, "imagenet": ImageNet-C; None:
    by size, min(H, W) <= 64 -> cifar). Returns a tensor of the same shape, dtype and device,
    in [0, 1]; the same ``generator`` seed gives the same output (Hendrycks & Dietterich 2019).
    ``generator`` is a ``torch.Generator`` (one stream for the batch) or per-image streams
    (:class:`robustlab.randomness.ImageStreams`: each image's draws come from its own stream).
    """
    return get_corruption(name)(images, severity, params=params, generator=generator)


assert set(CORRUPTIONS) == set(ALL_CORRUPTIONS), "corruption registry out of sync"
_IN_PAPER_ORDER = {name: CORRUPTIONS[name] for name in ALL_CORRUPTIONS}
