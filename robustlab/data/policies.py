"""Augmentation policies of a training batch (``data.augment.policy``), batched on the device.

A policy runs after the crop/flip of ``x`` (:mod:`robustlab.data.augment`) on the float batch
(B, C, H, W) in [0, 1] on the training device, one independent draw per row: every random number
comes from :func:`robustlab.data.views.row_uniforms`, so row i's result depends only on image i,
on i and on the generator's seed, never on the batch size or the other images. The data module
seeds policy ``name`` by (data seed, "policy", name, rank, epoch, step)
(:meth:`~robustlab.data.base.ImageDataModule.apply_policies`); a list of policies runs in order.
The image ops are those of :mod:`robustlab.data.randaugment` (PIL's semantics, which torchvision
applies to PIL images); this module adds Invert and translations by whole pixels.

- ``cutout`` (DeVries & Taylor, arXiv 1708.04552, 2017): a ``size`` x ``size`` square centred on
  a uniformly drawn pixel (rows ``[cy - size // 2, cy - size // 2 + size)``, columns alike), cut at
  the image border, filled with ``fill``. The paper's sides: 16 at 32 px for CIFAR-10, 8 for
  CIFAR-100, 20 for SVHN, 32 for STL-10. Default fill ``mean``: the dataset's mean colour, i.e. zero
  after the model's normalisation, where the authors' code zeroes it (their Cutout runs after
  Normalize); ``fill=0`` zeroes the [0, 1] pixels instead.
- ``random_erasing`` (Zhong et al., AAAI 2020): with probability ``p`` a rectangle of area
  ``s H W`` with ``s ~ U(scale)`` and aspect ratio ``r``, ``log r ~ U(log ratio)``, sides
  ``h = round(sqrt(s H W r))``, ``w = round(sqrt(s H W / r))``; the first of ``attempts`` draws
  with ``h < H`` and ``w < W`` is placed uniformly inside the image (torchvision's
  ``RandomErasing`` sampling), none: the image is kept. ``value``: ``random`` = one U[0, 1)
  number per pixel and channel (the paper's "random value in [0, 255]"; torchvision's
  ``value='random'`` draws N(0, 1) on the normalised tensor instead), ``mean``, or a number.
- ``autoaugment`` (Cubuk et al., CVPR 2019): the CIFAR-10 policy, 25 sub-policies of two steps
  (op, probability, magnitude bin of 10); per image one sub-policy drawn uniformly, each step
  applied with its probability, a signed magnitude negated with probability 1/2; the magnitude
  ranges of torchvision's ``AutoAugment(AutoAugmentPolicy.CIFAR10)``.
- ``trivialaugment`` (Müller & Hutter, ICCV 2021): TrivialAugmentWide, per image one of 14 ops
  drawn uniformly at a magnitude bin drawn uniformly from ``bins`` (31), a signed magnitude negated
  with probability 1/2; the wide ranges of torchvision's ``TrivialAugmentWide``.

Geometric ops sample the nearest pixel and fill with black (torchvision's default ``fill``). The
images are quantised to 8-bit levels after every op, as PIL images are between the reference's
steps: an image equals torchvision's for the same (op, magnitude) on a PIL image, the colour
blends to within PIL's integer rounding (one level).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from typing import Any, NamedTuple, Protocol

import torch
from torch import Tensor

from robustlab.data import randaugment as ra
from robustlab.data.views import row_uniforms
from robustlab.errors import check
from robustlab.perturbations.imageops import to_uint8, translate
from robustlab.registry import construct, resolve

#: ``op(images (B, C, H, W) in [0, 1], magnitude (B,) in torchvision's units) -> images``.
Op = Callable[[Tensor, Tensor], Tensor]
#: The dataset's per-channel mean in [0, 1] units, asked for only by a policy that fills with it.
MeanColour = Callable[[], Sequence[float]]


class Policy(Protocol):
    """``policy(images, generator, mean) -> images``: one independent draw per row."""

    def __call__(self, images: Tensor, generator: torch.Generator, mean: MeanColour) -> Tensor: ...


# ------------------------------------------------------------------ ops, torchvision's magnitudes
def invert(images: Tensor, magnitude: Tensor) -> Tensor:
    """``1 - x`` (PIL's ImageOps.invert: level ``255 - v``)."""
    return 1 - images


def translate_x_pixels(images: Tensor, pixels: Tensor) -> Tensor:
    """Content moves right by ``trunc(pixels)`` whole pixels (torchvision's ``int(m)``);
    black fill."""
    return translate(images, pixels.to(torch.float64).trunc(), 0.0)


def translate_y_pixels(images: Tensor, pixels: Tensor) -> Tensor:
    """Content moves down by ``trunc(pixels)`` whole pixels, black fill."""
    return translate(images, 0.0, pixels.to(torch.float64).trunc())


def _factor_op(blend: Op) -> Op:
    """The enhance op at factor ``1 + m`` (torchvision's Brightness/Color/Contrast/Sharpness)."""

    def op(images: Tensor, magnitude: Tensor) -> Tensor:
        return blend(images, 1 + magnitude)

    op.__name__ = f"{blend.__name__}_by"
    return op


#: The ops by name, each taking torchvision's magnitude (shear factor, pixels, degrees, factor
#: offset m of the enhance factor 1 + m, bits, threshold level).
OPS: dict[str, Op] = {
    "identity": ra.identity,
    "shear_x": ra.shear_x,
    "shear_y": ra.shear_y,
    "translate_x": translate_x_pixels,
    "translate_y": translate_y_pixels,
    "rotate": ra.rotate,
    "brightness": _factor_op(ra.brightness),
    "color": _factor_op(ra.color),
    "contrast": _factor_op(ra.contrast),
    "sharpness": _factor_op(ra.sharpness),
    "posterize": ra.posterize,
    "solarize": ra.solarize,
    "auto_contrast": ra.auto_contrast,
    "equalize": ra.equalize,
    "invert": invert,
}
OP_NAMES: tuple[str, ...] = tuple(OPS)
#: Ops whose magnitude is negated with probability 1/2.
SIGNED = frozenset(
    {"shear_x", "shear_y", "translate_x", "translate_y", "rotate"}
    | {"brightness", "color", "contrast", "sharpness"}
)


def quantise(images: Tensor) -> Tensor:
    """Round to 8-bit levels (PIL's rounding), as an image is between PIL ops."""
    return to_uint8(images).to(images.dtype) / 255


def apply_per_row(images: Tensor, op_index: Tensor, magnitude: Tensor) -> Tensor:
    """Row i gets ``OPS[OP_NAMES[op_index[i]]]`` at ``magnitude[i]`` (``op_index < 0``: kept);
    each op runs once, on all its rows, and its output is quantised to 8-bit levels."""
    out = images
    for index in torch.unique(op_index).tolist():
        if index < 0:
            continue
        rows = (op_index == index).nonzero().squeeze(1)
        changed = OPS[OP_NAMES[index]](images.index_select(0, rows), magnitude[rows])
        out = out.index_copy(0, rows, quantise(changed))
    return out


# ------------------------------------------------------------------ magnitude bins
def magnitude_bins(name: str, bins: int, image_size: Sequence[int], wide: bool) -> Tensor:
    """The ``bins`` magnitudes of op ``name``: AutoAugment's ranges (``wide=False``; translation
    up to 150/331 of the side) or TrivialAugmentWide's; torchvision's float32 ``linspace`` (so a
    truncated pixel shift is the same), as float64. Ops without a magnitude: zeros."""
    height, width = (int(s) for s in image_size)
    top = {
        "shear_x": 0.99 if wide else 0.3,
        "shear_y": 0.99 if wide else 0.3,
        "translate_x": 32.0 if wide else 150.0 / 331.0 * width,
        "translate_y": 32.0 if wide else 150.0 / 331.0 * height,
        "rotate": 135.0 if wide else 30.0,
        **dict.fromkeys(("brightness", "color", "contrast", "sharpness"), 0.99 if wide else 0.9),
    }
    if name in top:
        values = torch.linspace(0.0, top[name], bins)
    elif name == "posterize":  # bits 8 down to 2 (wide) or 4, rounded half to even
        values = 8 - (torch.arange(bins) / ((bins - 1) / (6 if wide else 4))).round()
    elif name == "solarize":
        values = torch.linspace(255.0, 0.0, bins)
    else:
        values = torch.zeros(bins)
    return values.to(torch.float64)


def magnitude_table(
    names: Sequence[str], bins: int, image_size: Sequence[int], wide: bool
) -> Tensor:
    """(len(OPS), bins) magnitudes, row k for ``OP_NAMES[k]`` (zeros for ops not in ``names``)."""
    table = torch.zeros(len(OPS), bins, dtype=torch.float64)
    for name in names:
        table[OP_NAMES.index(name)] = magnitude_bins(name, bins, image_size, wide)
    return table


def signed_magnitudes(op_index: Tensor, magnitude: Tensor, uniform: Tensor) -> Tensor:
    """``-magnitude`` where the op is signed and ``uniform < 1/2``."""
    signed = torch.tensor([name in SIGNED for name in OP_NAMES], device=op_index.device)
    negate = signed[op_index.clamp(min=0)] & (uniform < 0.5)
    return torch.where(negate, -magnitude, magnitude)


# ------------------------------------------------------------------ the policies
class Step(NamedTuple):
    """One step of an AutoAugment sub-policy: op, probability, magnitude bin (None: none)."""

    op: str
    probability: float
    bin: int | None


#: AutoAugment's CIFAR-10 policy (Cubuk et al., CVPR 2019, appendix; torchvision's order).
CIFAR10_POLICY: tuple[tuple[Step, Step], ...] = tuple(
    (Step(*first), Step(*second))
    for first, second in (
        (("invert", 0.1, None), ("contrast", 0.2, 6)),
        (("rotate", 0.7, 2), ("translate_x", 0.3, 9)),
        (("sharpness", 0.8, 1), ("sharpness", 0.9, 3)),
        (("shear_y", 0.5, 8), ("translate_y", 0.7, 9)),
        (("auto_contrast", 0.5, None), ("equalize", 0.9, None)),
        (("shear_y", 0.2, 7), ("posterize", 0.3, 7)),
        (("color", 0.4, 3), ("brightness", 0.6, 7)),
        (("sharpness", 0.3, 9), ("brightness", 0.7, 9)),
        (("equalize", 0.6, None), ("equalize", 0.5, None)),
        (("contrast", 0.6, 7), ("sharpness", 0.6, 5)),
        (("color", 0.7, 7), ("translate_x", 0.5, 8)),
        (("equalize", 0.3, None), ("auto_contrast", 0.4, None)),
        (("translate_y", 0.4, 3), ("sharpness", 0.2, 6)),
        (("brightness", 0.9, 6), ("color", 0.2, 8)),
        (("solarize", 0.5, 2), ("invert", 0.0, None)),
        (("equalize", 0.2, None), ("auto_contrast", 0.6, None)),
        (("equalize", 0.2, None), ("equalize", 0.6, None)),
        (("color", 0.9, 9), ("equalize", 0.6, None)),
        (("auto_contrast", 0.8, None), ("solarize", 0.2, 8)),
        (("brightness", 0.1, 3), ("color", 0.7, 0)),
        (("solarize", 0.4, 5), ("auto_contrast", 0.9, None)),
        (("translate_y", 0.9, 9), ("translate_y", 0.7, 9)),
        (("auto_contrast", 0.9, None), ("solarize", 0.8, 3)),
        (("equalize", 0.8, None), ("invert", 0.1, None)),
        (("translate_y", 0.7, 9), ("auto_contrast", 0.9, None)),
    )
)
AUTOAUGMENT_POLICIES: dict[str, tuple[tuple[Step, Step], ...]] = {"cifar10": CIFAR10_POLICY}
AUTOAUGMENT_BINS = 10
#: TrivialAugmentWide's 14 ops, in torchvision's order.
TRIVIALAUGMENT_OPS: tuple[str, ...] = (
    "identity",
    "shear_x",
    "shear_y",
    "translate_x",
    "translate_y",
    "rotate",
    "brightness",
    "color",
    "contrast",
    "sharpness",
    "posterize",
    "solarize",
    "auto_contrast",
    "equalize",
)


def _uniform_index(u: Tensor, count: int) -> Tensor:
    """``floor(u * count)`` as int64 in [0, count)."""
    return (u * count).floor().to(torch.int64).clamp_(0, count - 1)


class AutoAugment:
    """AutoAugment with a learned policy (``policy=cifar10``), per row: 5 uniforms (sub-policy,
    then per step: apply, sign)."""

    def __init__(self, policy: str = "cifar10") -> None:
        steps = resolve(
            AUTOAUGMENT_POLICIES, policy, group="data.augment.autoaugment.policy", imports=False
        )
        self.op_index = torch.tensor([[OP_NAMES.index(s.op) for s in pair] for pair in steps])
        self.probability = torch.tensor(
            [[s.probability for s in pair] for pair in steps], dtype=torch.float64
        )
        self.bin = torch.tensor([[s.bin or 0 for s in pair] for pair in steps])

    def __call__(self, images: Tensor, generator: torch.Generator, mean: MeanColour) -> Tensor:
        u = row_uniforms(len(images), 5, generator).to(images.device, torch.float64)
        device = images.device
        table = magnitude_table(OP_NAMES, AUTOAUGMENT_BINS, images.shape[-2:], wide=False)
        choice = _uniform_index(u[:, 0], len(self.op_index)).to(device)
        for slot in range(2):
            op = self.op_index.to(device)[choice, slot]
            applied = u[:, 1 + 2 * slot] < self.probability.to(device)[choice, slot]
            magnitude = table.to(device)[op, self.bin.to(device)[choice, slot]]
            magnitude = signed_magnitudes(op, magnitude, u[:, 2 + 2 * slot])
            images = apply_per_row(images, torch.where(applied, op, -1), magnitude)
        return images


class TrivialAugmentWide:
    """TrivialAugmentWide with ``bins`` magnitude bins, per row: 3 uniforms (op, bin, sign)."""

    def __init__(self, bins: int = 31) -> None:
        check(
            isinstance(bins, int) and not isinstance(bins, bool) and bins >= 2,
            f"data.augment.trivialaugment.bins must be an integer >= 2, got {bins!r}",
        )
        self.bins = bins
        self.op_index = torch.tensor([OP_NAMES.index(name) for name in TRIVIALAUGMENT_OPS])

    def __call__(self, images: Tensor, generator: torch.Generator, mean: MeanColour) -> Tensor:
        u = row_uniforms(len(images), 3, generator).to(images.device, torch.float64)
        table = magnitude_table(TRIVIALAUGMENT_OPS, self.bins, images.shape[-2:], wide=True)
        op = self.op_index.to(images.device)[_uniform_index(u[:, 0], len(TRIVIALAUGMENT_OPS))]
        magnitude = table.to(images.device)[op, _uniform_index(u[:, 1], self.bins)]
        return apply_per_row(images, op, signed_magnitudes(op, magnitude, u[:, 2]))


def fill_colour(fill: str | float | Sequence[float], channels: int, mean: MeanColour) -> Tensor:
    """The fill (C,) in [0, 1] units: ``"mean"`` (the dataset's mean colour), one number for
    every channel, or one per channel."""
    if fill == "mean":
        colour = torch.tensor([float(m) for m in mean()])
    elif isinstance(fill, int | float):
        colour = torch.full((channels,), float(fill))
    else:
        colour = torch.tensor([float(f) for f in fill])
    check(
        colour.shape == (channels,),
        f"data.augment fill {fill!r} gives {colour.numel()} values for {channels}-channel images",
    )
    return colour


def _check_fill(fill: Any, where: str, *words: str) -> None:
    """``fill`` is one of ``words``, ``mean``, a number or a list of numbers."""
    numbers = fill if isinstance(fill, Sequence) and not isinstance(fill, str) else [fill]
    named = " or ".join(repr(w) for w in (*words, "mean"))
    check(
        fill in (*words, "mean")
        or all(isinstance(v, int | float) and not isinstance(v, bool) for v in numbers),
        f"{where} must be {named}, a number or a list of numbers (one per channel), got {fill!r}",
    )


class Cutout:
    """Cutout (DeVries & Taylor 2017): a ``size``-pixel square at a uniform centre, cut at the
    border, filled with ``fill``; per row: 2 uniforms (centre row, centre column)."""

    def __init__(self, size: int = 16, fill: str | float | list[float] = "mean") -> None:
        check(
            isinstance(size, int) and not isinstance(size, bool) and size >= 1,
            f"data.augment.cutout.size must be an integer >= 1 (pixels), got {size!r}",
        )
        _check_fill(fill, "data.augment.cutout.fill")
        self.size, self.fill = size, fill

    def __call__(self, images: Tensor, generator: torch.Generator, mean: MeanColour) -> Tensor:
        b, c, h, w = images.shape
        u = row_uniforms(b, 2, generator).to(images.device, torch.float64)
        top = _uniform_index(u[:, 0], h) - self.size // 2
        left = _uniform_index(u[:, 1], w) - self.size // 2
        side = torch.full_like(top, self.size)
        return ra.cutout(images, side, top, left, fill_colour(self.fill, c, mean))


def box_mask(
    height: int, width: int, top: Tensor, left: Tensor, rows: Tensor, cols: Tensor
) -> Tensor:
    """(B, 1, H, W) bool: the pixels in rows ``[top, top + rows)`` and columns
    ``[left, left + cols)`` of each row's box."""
    device = top.device
    y = torch.arange(height, device=device).view(1, height, 1)
    x = torch.arange(width, device=device).view(1, 1, width)
    top, left, rows, cols = (t.view(-1, 1, 1) for t in (top, left, rows, cols))
    return ((y >= top) & (y < top + rows) & (x >= left) & (x < left + cols)).unsqueeze(1)


class RandomErasing:
    """Random Erasing (Zhong et al., AAAI 2020); per row: 1 + 2 ``attempts`` + 2 uniforms (apply,
    areas, log-ratios, position), then C·H·W for ``value=random``."""

    def __init__(
        self,
        p: float = 0.5,
        scale: tuple[float, float] | list[float] = (0.02, 0.33),
        ratio: tuple[float, float] | list[float] = (0.3, 3.3),
        value: str | float | list[float] = "random",
        attempts: int = 10,
    ) -> None:
        where = "data.augment.random_erasing"
        check(0 <= p <= 1, f"{where}.p must be in [0, 1], got {p!r}")
        check(
            len(scale) == 2 and 0 < scale[0] <= scale[1] <= 1,
            f"{where}.scale must be [low, high] with 0 < low <= high <= 1, got {scale!r}",
        )
        check(
            len(ratio) == 2 and 0 < ratio[0] <= ratio[1],
            f"{where}.ratio must be [low, high] with 0 < low <= high, got {ratio!r}",
        )
        check(
            isinstance(attempts, int) and not isinstance(attempts, bool) and attempts >= 1,
            f"{where}.attempts must be an integer >= 1, got {attempts!r}",
        )
        _check_fill(value, f"{where}.value", "random")
        self.p, self.value, self.attempts = float(p), value, attempts
        self.scale = (float(scale[0]), float(scale[1]))
        self.log_ratio = (math.log(ratio[0]), math.log(ratio[1]))

    def __call__(self, images: Tensor, generator: torch.Generator, mean: MeanColour) -> Tensor:
        b, c, h, w = images.shape
        k = self.attempts
        noise = c * h * w if self.value == "random" else 0
        u = row_uniforms(b, 1 + 2 * k + 2 + noise, generator).to(images.device)
        draws = u[:, : 1 + 2 * k + 2].to(torch.float64)
        low, high = self.scale
        area = h * w * (low + (high - low) * draws[:, 1 : 1 + k])
        low, high = self.log_ratio
        aspect = torch.exp(low + (high - low) * draws[:, 1 + k : 1 + 2 * k])
        rows = torch.sqrt(area * aspect).round().to(torch.int64)
        cols = torch.sqrt(area / aspect).round().to(torch.int64)
        fits = (rows < h) & (cols < w)
        first = fits.to(torch.int64).argmax(1, keepdim=True)  # the first attempt that fits
        rows, cols = rows.gather(1, first).squeeze(1), cols.gather(1, first).squeeze(1)
        top = (draws[:, 1 + 2 * k] * (h - rows + 1)).floor().to(torch.int64)
        left = (draws[:, 2 + 2 * k] * (w - cols + 1)).floor().to(torch.int64)
        erase = (draws[:, 0] < self.p) & fits.any(1)
        mask = box_mask(h, w, top, left, rows, cols) & erase.view(-1, 1, 1, 1)
        if noise:
            fill = u[:, -noise:].reshape(b, c, h, w).to(images.dtype)
        else:
            fill = fill_colour(self.value, c, mean).to(images).view(1, c, 1, 1)
        return torch.where(mask, fill, images)


POLICIES: dict[str, type] = {
    "cutout": Cutout,
    "random_erasing": RandomErasing,
    "autoaugment": AutoAugment,
    "trivialaugment": TrivialAugmentWide,
}
#: ``data.augment`` keys of the policies: ``policy`` (null, a name or a list of names, applied
#: in order) and each policy's options (empty: its defaults).
POLICY_DEFAULTS: dict[str, Any] = {"policy": None, **{name: {} for name in POLICIES}}


def build_policies(augment: Mapping[str, Any]) -> dict[str, Policy]:
    """``{name: policy}`` for ``augment["policy"]`` (null, a name or a list), each built from its
    options ``augment[name]``; unknown names, repeated names or options are a ConfigError."""
    chosen = augment.get("policy")
    names = [] if chosen is None else [chosen] if isinstance(chosen, str) else chosen
    check(
        isinstance(names, Sequence) and all(isinstance(n, str) for n in names),
        f"data.augment.policy must be null, a policy name or a list of them, got {chosen!r}",
    )
    policies: dict[str, Policy] = {}
    for name in names:
        check(name not in policies, f"data.augment.policy names {name!r} twice; list it once")
        resolve(POLICIES, name, group="data.augment.policy", imports=False)
        options = augment.get(name) or {}
        check(
            isinstance(options, Mapping),
            f"data.augment.{name} must be a mapping of options, got {options!r}",
        )
        policies[name] = construct(POLICIES[name], f"data.augment.{name}", **dict(options))
    return policies


def apply_policies(
    images: Tensor,
    policies: Mapping[str, Policy],
    generators: Mapping[str, torch.Generator],
    mean: MeanColour,
) -> Tensor:
    """Every policy in order, policy ``name`` drawing from ``generators[name]``."""
    for name, policy in policies.items():
        images = policy(images, generators[name], mean)
    return images
