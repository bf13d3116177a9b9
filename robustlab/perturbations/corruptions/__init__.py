"""Common corruptions of Hendrycks & Dietterich (ICLR 2019) as batched tensor operations.

15 test corruptions + 4 held-out ones at severities 1..5, with both parameter tables
(CIFAR-10-C, ``params="cifar"``; ImageNet-C, ``params="imagenet"``), running on the images'
device::

    from robustlab.perturbations.corruptions import corrupt
    out = corrupt(images, "glass_blur", severity=3, params="cifar",
                  generator=torch.Generator().manual_seed(0))

Module map: :mod:`params` (both tables), :mod:`noise`, :mod:`blur`, :mod:`weather`,
:mod:`digital` (the corruptions), :mod:`color` (HSV), :mod:`filters`, :mod:`resample`,
:mod:`swaps` (glass-blur shuffling), :mod:`plasma` (fog), :mod:`textures` (frost),
:mod:`cvops` (OpenCV ports for spatter), :mod:`registry` (wrapper, grey-image rule),
:mod:`api` (registries, :func:`corrupt`), :mod:`release` (official CIFAR-10-C files).

Faithfulness. Each corruption follows ``make_cifar_c.py`` / ``make_imagenet_c.py``
(github.com/hendrycks/robustness) step by step, including boundary modes and intermediate uint8
quantisation; given the same random draws the outputs agree with the reference code to float
rounding (checked during development against the reference functions, scipy, PIL and OpenCV).
Where we knowingly differ:

- random numbers come from torch (seeded per call), so the released arrays, generated without a
  seed, cannot be regenerated bit for bit;
- glass_blur reproduces the reference's numpy-view "swap", which copies the neighbour into
  (h, w) instead of exchanging the pixels (see :mod:`swaps`); it is exact, not approximated;
- motion_blur / snow: ImageMagick's motion blur, as re-implemented in numpy by imagecorruptions
  (edge pixels repeat beyond the border; imagecorruptions instead drops taps that leave the
  image, which only matters for ImageNet radii on tiny images);
- zoom_blur uses the reference's ``np.arange`` factors, whose float rounding adds one more factor
  than the nominal range for some severities (e.g. CIFAR severity 1 zooms up to 1.06);
- pixelate upsamples with PIL NEAREST (the reference's BOX upsampling selects the same pixels);
- impulse_noise flips each value with probability ``amount`` (current skimage); the 2018 skimage
  the release used placed ⌈amount·N/2⌉ salt and pepper values at random positions;
- spatter's distance transform sums chamfer steps in float32 like current OpenCV; ties between
  equally short paths can differ from OpenCV's scan order by 1 ulp;
- elastic_transform scales its pixel parameters linearly with min(H, W) for sizes other than the
  reference's (32 CIFAR, 224 ImageNet); frost shrinks the photographs by 0.2 for CIFAR parameters
  and upscales them (as imagecorruptions does) only when they are smaller than the image;
- images that are not 32×32 (CIFAR) or 224×224 (ImageNet) use the reference's formulas with the
  sizes generalised (fog's plasma side = next power of two >= max(H, W)).
"""

from robustlab.perturbations.corruptions.api import (
    ALL_CORRUPTIONS,
    HELDOUT_CORRUPTIONS,
    TEST_CORRUPTIONS,
    corrupt,
    get_corruption,
)
from robustlab.perturbations.corruptions.params import PARAM_SETS, TABLES, corruption_params
from robustlab.perturbations.corruptions.registry import CORRUPTIONS
from robustlab.perturbations.corruptions.release import load_corrupted_release

__all__ = [
    "ALL_CORRUPTIONS",
    "CORRUPTIONS",
    "HELDOUT_CORRUPTIONS",
    "PARAM_SETS",
    "TABLES",
    "TEST_CORRUPTIONS",
    "corrupt",
    "corruption_params",
    "get_corruption",
    "load_corrupted_release",
]
