"""RandAugment and Cutout as batched tensor ops with per-row parameters: CRLD's strong view.

RandAugment (Cubuk et al., "RandAugment: Practical automated data augmentation with a reduced
search space", NeurIPS-W 2020) applies ``N`` operations drawn uniformly *with replacement* from a
fixed pool. The pool and ranges here are those of CRLD's strong view (Zhang et al., ACM MM 2024,
inherited from FixMatch, Sohn et al., NeurIPS 2020): 14 ops, ``N = 2``, and every op's magnitude
drawn uniformly from its own range (:data:`OPS`), each op always applied; then Cutout (DeVries &
Taylor, 2017) with a square side ``U(0, 0.5) * width`` filled with ``(125, 123, 114) / 255``.

Every function works on a float batch (B, C, H, W) in [0, 1] (C = 1 or 3) with one parameter per
row, on the batch's device, with no Python loop over images. The random numbers come in as
uniforms in [0, 1) (:func:`rand_augment`, :func:`random_cutout`), so each op is a deterministic
function of its inputs; :mod:`robustlab.data.views` draws them from the view's generator.

Semantics follow PIL's (which the reference code applies to 8-bit images): the colour ops blend
``degenerate + f * (x - degenerate)`` with PIL's degenerate images (black, luma grey, mean-luma
grey, 3x3 smoothed); Posterize, Solarize and Equalize act on the 8-bit levels; the geometric ops
sample the nearest pixel and fill uncovered pixels with black.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import NamedTuple

import torch
from torch import Tensor

from robustlab.perturbations.imageops import affine, to_uint8, translate

#: ``op(images (B, C, H, W) in [0, 1], magnitude (B,)) -> images``.
Op = Callable[[Tensor, Tensor], Tensor]

#: ITU-R 601-2 luma weights, PIL's RGB -> L conversion.
LUMA = (0.299, 0.587, 0.114)
#: Cutout's fill colour (the CIFAR mean in 8-bit levels) in [0, 1] units.
CUTOUT_FILL = (125 / 255, 123 / 255, 114 / 255)
#: Ops per image (RandAugment's N) and Cutout's largest side as a fraction of the width.
NUM_OPS = 2
CUTOUT_MAX_FRACTION = 0.5


def _per_row(values: Tensor, images: Tensor) -> Tensor:
    """(B,) parameters as (B, 1, 1, 1) in the images' dtype, for broadcasting."""
    return values.to(images.dtype).view(-1, 1, 1, 1)


def blend(degenerate: Tensor, images: Tensor, factor: Tensor) -> Tensor:
    """``degenerate + f * (images - degenerate)`` clipped to [0, 1] (PIL ImageEnhance)."""
    f = _per_row(factor, images)
    return (degenerate + f * (images - degenerate)).clamp_(0, 1)


def luma(images: Tensor) -> Tensor:
    """Grey level (B, 1, H, W): ``0.299 R + 0.587 G + 0.114 B``; one-channel images as they are."""
    if images.shape[1] == 1:
        return images
    weights = images.new_tensor(LUMA).view(1, 3, 1, 1)
    return (images * weights).sum(1, keepdim=True)


# ------------------------------------------------------------------ colour ops
def identity(images: Tensor, magnitude: Tensor) -> Tensor:
    """The images unchanged."""
    return images


def auto_contrast(images: Tensor, magnitude: Tensor) -> Tensor:
    """Per image and channel, stretch [min, max] linearly to [0, 1]; a flat channel is kept."""
    low = images.amin(dim=(-2, -1), keepdim=True)
    high = images.amax(dim=(-2, -1), keepdim=True)
    spread = high - low
    stretched = (images - low) / spread.clamp_min(1e-12)
    return torch.where(spread > 0, stretched, images).clamp_(0, 1)


def brightness(images: Tensor, factor: Tensor) -> Tensor:
    """Blend with black: ``f * x``."""
    return blend(torch.zeros_like(images), images, factor)


def color(images: Tensor, factor: Tensor) -> Tensor:
    """Blend with the image's own grey (luma) version: f = 0 is grey, f = 1 the image."""
    return blend(luma(images).expand_as(images), images, factor)


def contrast(images: Tensor, factor: Tensor) -> Tensor:
    """Blend with a flat image at the mean luma of the image."""
    mean = luma(images.mean(dim=(-2, -1), keepdim=True))  # luma is linear: mean of the luma
    return blend(mean.expand_as(images), images, factor)


def smooth(images: Tensor) -> Tensor:
    """PIL's SMOOTH filter: 3x3 kernel [[1, 1, 1], [1, 5, 1], [1, 1, 1]] / 13 on the interior,
    border pixels copied from the input (a 3x3 box sum from shifted slices, plus 4 x centre)."""
    rows = images[..., :-2] + images[..., 1:-1] + images[..., 2:]
    box = rows[..., :-2, :] + rows[..., 1:-1, :] + rows[..., 2:, :]
    out = images.clone()
    out[..., 1:-1, 1:-1] = (box + 4 * images[..., 1:-1, 1:-1]) / 13
    return out


def sharpness(images: Tensor, factor: Tensor) -> Tensor:
    """Blend with the smoothed image: f < 1 blurs, f > 1 sharpens."""
    return blend(smooth(images), images, factor)


def posterize(images: Tensor, bits: Tensor) -> Tensor:
    """Keep the top ``floor(bits)`` bits (1..8) of every 8-bit level, zero the others."""
    keep = bits.floor().clamp(1, 8).to(torch.int64)
    mask = (256 - 2 ** (8 - keep)).to(torch.uint8).view(-1, 1, 1, 1)
    return (to_uint8(images) & mask).to(images.dtype) / 255


def solarize(images: Tensor, threshold: Tensor) -> Tensor:
    """Invert (``1 - x``) every pixel whose 8-bit level is >= ``threshold`` (in [0, 256])."""
    above = images * 255 >= _per_row(threshold, images)
    return torch.where(above, 1 - images, images)


def equalize(images: Tensor, magnitude: Tensor) -> Tensor:
    """Histogram equalisation per image and channel on the 8-bit levels (PIL's rule): with
    ``step = (N - n_last) // 255`` (``n_last`` the count of the highest level present), level
    ``i`` maps to ``(step // 2 + #pixels below i) // step``; ``step = 0`` leaves it unchanged."""
    b, c, h, w = images.shape
    levels = to_uint8(images).view(b * c, h * w).to(torch.int64)
    hist = torch.zeros(b * c, 256, dtype=torch.int64, device=images.device)
    hist.scatter_add_(1, levels, torch.ones_like(levels))
    last = 255 - (hist.flip(1) > 0).to(torch.int64).argmax(1, keepdim=True)
    step = (h * w - hist.gather(1, last)) // 255  # (B*C, 1)
    below = hist.cumsum(1) - hist
    lut = ((below + step // 2) // step.clamp_min(1)).clamp_(max=255)
    lut = torch.where(step > 0, lut, torch.arange(256, device=images.device))
    return lut.gather(1, levels).view(b, c, h, w).to(images.dtype) / 255


# ------------------------------------------------------------------ geometric ops
def rotate(images: Tensor, degrees: Tensor) -> Tensor:
    """Rotate counter-clockwise about the centre by ``degrees``, nearest pixel, black fill."""
    return affine(images, angle_deg=degrees, mode="nearest")


def _shear(images: Tensor, factor: Tensor, horizontal: bool) -> Tensor:
    """PIL's affine shear about the top-left corner, nearest pixel: ShearX reads
    ``out[y, x] = in[y, floor(x + 0.5 + f (y + 0.5))]`` (ShearY with x and y swapped);
    pixels read from outside the image are black."""
    _, c, h, w = images.shape
    ys = torch.arange(h, device=images.device, dtype=torch.float64).view(1, h, 1)
    xs = torch.arange(w, device=images.device, dtype=torch.float64).view(1, 1, w)
    f = factor.to(torch.float64).view(-1, 1, 1)
    along, across, size, dim = (xs, ys, w, 3) if horizontal else (ys, xs, h, 2)
    source = torch.floor(along + 0.5 + f * (across + 0.5)).to(torch.int64)  # (B, H, W)
    inside = (source >= 0) & (source < size)
    index = source.clamp(0, size - 1).unsqueeze(1).expand(-1, c, -1, -1)
    return torch.where(inside.unsqueeze(1), images.gather(dim, index), images.new_zeros(()))


def shear_x(images: Tensor, factor: Tensor) -> Tensor:
    """Horizontal shear: row y moves left by ``factor * (y + 1/2)`` pixels."""
    return _shear(images, factor, horizontal=True)


def shear_y(images: Tensor, factor: Tensor) -> Tensor:
    """Vertical shear: column x moves up by ``factor * (x + 1/2)`` pixels."""
    return _shear(images, factor, horizontal=False)


def translate_x(images: Tensor, fraction: Tensor) -> Tensor:
    """PIL's ``out[x] = in[x + fraction * W]`` at the nearest pixel: content moves left by
    ``floor(fraction * W + 1/2)`` pixels, black fill."""
    shift = torch.floor(fraction.to(torch.float64) * images.shape[-1] + 0.5)
    return translate(images, -shift, 0.0)


def translate_y(images: Tensor, fraction: Tensor) -> Tensor:
    """Content moves up by ``floor(fraction * H + 1/2)`` pixels, black fill."""
    shift = torch.floor(fraction.to(torch.float64) * images.shape[-2] + 0.5)
    return translate(images, 0.0, -shift)


class Operation(NamedTuple):
    """One op of the pool and the range its magnitude is drawn from, uniformly."""

    name: str
    apply: Op
    low: float
    high: float


#: CRLD's RandAugment pool and magnitude ranges, in the reference code's order.
OPS: tuple[Operation, ...] = (
    Operation("auto_contrast", auto_contrast, 0.0, 1.0),
    Operation("brightness", brightness, 0.05, 0.95),
    Operation("color", color, 0.05, 0.95),
    Operation("contrast", contrast, 0.05, 0.95),
    Operation("equalize", equalize, 0.0, 1.0),
    Operation("identity", identity, 0.0, 1.0),
    Operation("posterize", posterize, 4.0, 8.0),
    Operation("rotate", rotate, -30.0, 30.0),
    Operation("sharpness", sharpness, 0.05, 0.95),
    Operation("shear_x", shear_x, -0.3, 0.3),
    Operation("shear_y", shear_y, -0.3, 0.3),
    Operation("solarize", solarize, 0.0, 256.0),
    Operation("translate_x", translate_x, -0.3, 0.3),
    Operation("translate_y", translate_y, -0.3, 0.3),
)
OP_NAMES: tuple[str, ...] = tuple(op.name for op in OPS)


def apply_grouped(images: Tensor, choice: Tensor, magnitude: Tensor) -> Tensor:
    """Row i gets ``OPS[choice[i]]`` at ``magnitude[i]``, for rows sorted by ``choice``: every
    op runs once, on its contiguous block of rows."""
    counts = torch.bincount(choice.cpu(), minlength=len(OPS)).tolist()
    blocks, start = [], 0
    for op, count in zip(OPS, counts, strict=True):
        if count:
            blocks.append(op.apply(images[start : start + count], magnitude[start : start + count]))
            start += count
    return torch.cat(blocks) if blocks else images


def magnitudes(choice: Tensor, uniform: Tensor) -> Tensor:
    """``low + (high - low) * u`` with each row's op range."""
    low = torch.tensor([op.low for op in OPS], dtype=torch.float64, device=choice.device)
    high = torch.tensor([op.high for op in OPS], dtype=torch.float64, device=choice.device)
    return low[choice] + (high - low)[choice] * uniform.to(torch.float64)


def rand_augment(images: Tensor, uniforms: Tensor) -> Tensor:
    """RandAugment with ``N = uniforms.shape[1] // 2`` ops per row: op ``j`` of row i is
    ``OPS[floor(14 u[i, 2j])]`` at magnitude ``low + (high - low) u[i, 2j + 1]``. The batch is
    regrouped by op once per slot and put back in order once at the end."""
    u = uniforms.to(images.device)
    rows = torch.arange(len(images), device=images.device)  # current position -> original row
    for slot in range(u.shape[1] // 2):
        choice = (u[:, 2 * slot] * len(OPS)).floor().to(torch.int64).clamp_(0, len(OPS) - 1)
        magnitude = magnitudes(choice, u[:, 2 * slot + 1])
        regroup = torch.argsort(choice[rows].cpu(), stable=True).to(images.device)
        rows = rows[regroup]
        images = apply_grouped(images.index_select(0, regroup), choice[rows], magnitude[rows])
    return images.index_select(0, torch.argsort(rows))


def cutout(images: Tensor, side: Tensor, top: Tensor, left: Tensor, fill: Tensor) -> Tensor:
    """Fill rows ``[top, top + side)`` x columns ``[left, left + side)`` (cut at the image edge)
    of every image with ``fill`` (C,); ``side``, ``top``, ``left`` are (B,) integers."""
    _, _, h, w = images.shape
    rows = torch.arange(h, device=images.device).view(1, h)
    cols = torch.arange(w, device=images.device).view(1, w)
    side, top, left = (t.to(images.device).view(-1, 1) for t in (side, top, left))
    in_rows = (rows >= top) & (rows < top + side)
    in_cols = (cols >= left) & (cols < left + side)
    inside = (in_rows[:, :, None] & in_cols[:, None, :]).unsqueeze(1)
    return torch.where(inside, fill.to(images).view(1, -1, 1, 1), images)


def cutout_fill(channels: int) -> Tensor:
    """:data:`CUTOUT_FILL` for RGB images, its luma for one-channel images."""
    fill = torch.tensor(CUTOUT_FILL)
    return fill if channels == 3 else (fill * torch.tensor(LUMA)).sum().view(1)


def random_cutout(
    images: Tensor, uniforms: Tensor, max_fraction: float = CUTOUT_MAX_FRACTION
) -> Tensor:
    """Cutout from uniforms (B, 3): side ``s = round(u0 * max_fraction * W)`` pixels, centre
    ``(u1 W, u2 H)``, top-left corner ``max(0, floor(centre - s / 2))`` (the reference's rule, so
    a square reaching past the left/top edge is shifted, one past the right/bottom edge cut)."""
    _, c, h, w = images.shape
    u = uniforms.to(device=images.device, dtype=torch.float64)
    side = torch.floor(u[:, 0] * max_fraction * w + 0.5)
    left = torch.floor(u[:, 1] * w - side / 2).clamp_(min=0)
    top = torch.floor(u[:, 2] * h - side / 2).clamp_(min=0)
    as_int = [t.to(torch.int64) for t in (side, top, left)]
    return cutout(images, *as_int, cutout_fill(c))
