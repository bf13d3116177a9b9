"""The frost photographs of ImageNet-C, taken from the installed ``imagecorruptions`` package.

Hendrycks & Dietterich (2019) blend real frost photographs; the six images ship inside
``imagecorruptions`` (PyPI). We locate its ``frost/`` folder with ``importlib.util.find_spec``
(without importing the package, whose ``__init__`` needs ``pkg_resources``) and never substitute
a synthetic texture: if the files are missing, a :class:`RobustlabError` says how to get them.
"""

from __future__ import annotations

import importlib.util
from functools import lru_cache
from pathlib import Path

import numpy as np
import torch
from torch import Tensor
from torch.nn import functional as F

from robustlab.errors import RobustlabError

FROST_FILES = ("frost1.png", "frost2.png", "frost3.png", "frost4.jpg", "frost5.jpg", "frost6.jpg")
#: the reference draws ``np.random.randint(5)``, so frost6 is never used
FROST_USED = 5
#: make_cifar_c.py shrinks the photographs with cv2.resize(fx=0.2, fy=0.2) before cropping 32x32
CIFAR_FROST_SCALE = 0.2


def frost_dir() -> Path:
    """The ``frost/`` folder of the installed ``imagecorruptions`` package."""
    spec = importlib.util.find_spec("imagecorruptions")
    folders = list(spec.submodule_search_locations or []) if spec is not None else []
    for folder in folders:
        path = Path(folder) / "frost"
        if all((path / name).is_file() for name in FROST_FILES[:FROST_USED]):
            return path
    raise RobustlabError(
        "the frost corruption blends the real frost photographs of ImageNet-C, "
        "which ship with the imagecorruptions package; install it with "
        "`pip install imagecorruptions`"
    )


@lru_cache(maxsize=4)
def _load(params: str) -> tuple[Tensor, ...]:
    from PIL import Image

    textures = []
    for name in FROST_FILES[:FROST_USED]:
        with Image.open(frost_dir() / name) as image:  # cv2.imread drops alpha the same way
            rgb = np.asarray(image.convert("RGB"), dtype=np.uint8)
        tex = torch.from_numpy(rgb.copy()).permute(2, 0, 1).float()
        if params == "cifar":
            # cv2 INTER_LINEAR with scale 5 reads source pixel 5i + 2 exactly (half-pixel centres)
            tex = F.interpolate(
                tex[None],
                scale_factor=CIFAR_FROST_SCALE,
                mode="bilinear",
                align_corners=False,
                recompute_scale_factor=False,
            )[0]
        textures.append(tex.round().clamp(0, 255).to(torch.uint8))
    return tuple(textures)


def fit(texture: Tensor, height: int, width: int) -> Tensor:
    """Upscale a texture smaller than the image as ``imagecorruptions`` does (1.1 × the needed
    factor, bicubic); textures that are large enough are returned unchanged."""
    th, tw = texture.shape[-2:]
    if th > height and tw > width:
        return texture
    factor = 1.1 * max(height / th, width / tw, 1.0)
    size = (int(np.ceil(th * factor)), int(np.ceil(tw * factor)))
    out = F.interpolate(texture[None].float(), size=size, mode="bicubic", align_corners=False)
    return out[0].round().clamp(0, 255).to(torch.uint8)


def frost_textures(params: str, height: int, width: int) -> tuple[Tensor, ...]:
    """The 5 frost textures as uint8 (3, h, w) CPU tensors, each larger than height × width."""
    return tuple(fit(t, height, width) for t in _load(params))
