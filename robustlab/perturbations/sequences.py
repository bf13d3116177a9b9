"""ImageNet-P style perturbation sequences and the flip probability (Hendrycks & Dietterich 2019).

A sequence is a short "video" of one image under a perturbation whose strength grows frame by
frame; frame 0 is always the clean image. A stable model keeps its top-1 prediction across
neighbouring frames. This gives a frame-consistency test for stability training (Zheng et al.,
CVPR 2016) without video data.

Kinds (frame t = 0..T-1, ``step`` from ``DEFAULT_STEPS`` unless given; a negative step reverses
the direction):

- ``translate``: shift right by t·step pixels (default 1 px/frame), zero fill, as CIFAR-10-P's
  translate (which shifts horizontally with a black border). Integer steps are exact.
- ``rotate``: rotate counter-clockwise by t·step degrees (default 1°/frame, CIFAR-10-P uses 1°),
  bilinear, zero fill at the corners.
- ``zoom``: scale by 1 + t·step about the centre (default 0.02/frame, CIFAR-10-P's scale step),
  bilinear; zooming in leaves no border.
- ``brightness``: clip(x + t·step, 0, 1) on every channel (default 0.015/frame, CIFAR-10-P's step
  on the HSV value channel; we add in RGB, which is simpler and equal for grey pixels).
- ``gaussian_noise``: clip(x + t·step·ε_t, 0, 1) with a **fresh** ε_t ~ N(0, I) per frame, as
  ImageNet-P's noise sequences (default step 0.01, so σ grows 0.01 per frame; CIFAR-10-P keeps
  σ = 0.02 fixed). Frames are not temporally related, so ImageNet-P scores noise sequences
  against frame 0 — use ``reference="first"`` (``FLIP_REFERENCE`` records this per kind).

Only ``gaussian_noise`` draws random numbers; the geometric kinds are deterministic. With
per-image streams (:class:`~robustlab.randomness.ImageStreams`) frame t of image i draws the
t-th noise field of image i's stream.
The ImageNet-P flip probability is reported here without the AlexNet normalisation.
"""

from __future__ import annotations

import numbers
from collections.abc import Callable

import torch
from torch import Tensor, nn

from robustlab.errors import check
from robustlab.models.base import eval_mode
from robustlab.perturbations import imageops
from robustlab.randomness import ImageStreams, RandomSource
from robustlab.registry import resolve

DEFAULT_STEPS: dict[str, float] = {
    "translate": 1,
    "rotate": 1.0,
    "zoom": 0.02,
    "brightness": 0.015,
    "gaussian_noise": 0.01,
}

FLIP_REFERENCE: dict[str, str] = {
    "translate": "previous",
    "rotate": "previous",
    "zoom": "previous",
    "brightness": "previous",
    "gaussian_noise": "first",
}


def _translate(frames: Tensor, t: Tensor, step: float, generator: RandomSource) -> Tensor:
    shift = t * step
    if float(step) == int(step):
        shift = shift.round().long()
    return imageops.translate(frames, shift, 0, fill=0.0)


def _rotate(frames: Tensor, t: Tensor, step: float, generator: RandomSource) -> Tensor:
    return imageops.affine(frames, angle_deg=t * step, fill=0.0)


def _zoom(frames: Tensor, t: Tensor, step: float, generator: RandomSource) -> Tensor:
    return imageops.affine(frames, scale=1.0 + t * step, fill=0.0)


def _brightness(frames: Tensor, t: Tensor, step: float, generator: RandomSource) -> Tensor:
    return (frames + (t * step).to(frames.dtype)[:, None, None, None]).clamp_(0, 1)


def _noise(frames: Tensor, t: Tensor, step: float, generator: RandomSource) -> Tensor:
    return imageops.gaussian_noise(frames, t * step, generator)


# Each entry maps (frames (T·B, C, H, W), frame index per row (T·B,), step, generator) -> frames.
SEQUENCES: dict[str, Callable[[Tensor, Tensor, float, RandomSource], Tensor]] = {
    "translate": _translate,
    "rotate": _rotate,
    "zoom": _zoom,
    "brightness": _brightness,
    "gaussian_noise": _noise,
}


def make_sequence(
    images: Tensor,
    kind: str,
    frames: int = 10,
    step: float | None = None,
    generator: RandomSource = None,
) -> Tensor:
    """Build a (T, B, C, H, W) perturbation sequence; frame t has strength t·step, frame 0 = x."""
    make_frames = resolve(SEQUENCES, kind, group="perturbation sequence", imports=False)
    imageops.check_images(images, who="perturbation sequences")
    check(
        isinstance(frames, int) and frames >= 2, f"frames must be an integer >= 2, got {frames!r}"
    )
    step = DEFAULT_STEPS[kind] if step is None else step
    check(
        isinstance(step, numbers.Real) and not isinstance(step, bool),
        f"step must be a number, got {step!r}",
    )
    check(kind != "gaussian_noise" or step >= 0, f"gaussian_noise step must be >= 0, got {step}")
    check(kind != "zoom" or 1 + (frames - 1) * step > 0, "zoom scale 1 + t·step must stay > 0")
    b = images.shape[0]
    rest = images.shape[1:]
    flat = images.unsqueeze(0).expand(frames - 1, *images.shape).reshape(-1, *rest)
    t = torch.arange(1, frames, device=images.device, dtype=torch.float64).repeat_interleave(b)
    if isinstance(generator, ImageStreams):  # row (t-1)·B + i is frame t of image i
        generator = generator.tile(frames - 1)
    perturbed = make_frames(flat, t, step, generator).reshape(frames - 1, b, *rest)
    return torch.cat([images.unsqueeze(0), perturbed], dim=0)


#: flip reference -> the frames each frame t >= 1 is compared with
_FLIP_REFERENCES: dict[str, Callable[[Tensor], Tensor]] = {
    "previous": lambda p: p[:-1],
    "first": lambda p: p[:1],
}


def flip_probability(predictions: Tensor, reference: str = "previous") -> float:
    """Fraction of frame pairs whose top-1 prediction differs (ImageNet-P FP, no AlexNet norm).

    ``predictions`` is (T, B) of class indices. ``reference="previous"`` compares frames t and
    t+1 (mean over the T-1 pairs and B sequences); ``"first"`` compares each frame t >= 1 with
    frame 0, as ImageNet-P does for noise sequences.
    """
    p = torch.as_tensor(predictions)
    check(
        p.ndim == 2 and p.shape[0] >= 2 and p.shape[1] >= 1,
        f"predictions must be (T, B) with T >= 2 frames, got shape {tuple(p.shape)}",
    )
    compared_with = resolve(_FLIP_REFERENCES, reference, group="flip reference", imports=False)
    return (p[1:] != compared_with(p)).double().mean().item()


@torch.no_grad()
def sequence_predictions(model: nn.Module, sequence: Tensor, batch_size: int = 256) -> Tensor:
    """Top-1 predictions (T, B) on the CPU of ``model`` on every frame (eval mode, no grad).

    Chunks of ``batch_size`` images go to the model's device; the model's train/eval mode is
    restored afterwards.
    """
    check(sequence.ndim == 5, f"sequence must be (T, B, C, H, W), got {tuple(sequence.shape)}")
    check(batch_size >= 1, f"batch_size must be >= 1, got {batch_size}")
    param = next(iter(model.parameters()), None)
    device = param.device if param is not None else sequence.device
    t, b = sequence.shape[:2]
    flat = sequence.reshape(t * b, *sequence.shape[2:])
    with eval_mode(model):
        preds = [model(chunk.to(device)).argmax(dim=1).cpu() for chunk in flat.split(batch_size)]
    return torch.cat(preds).reshape(t, b)
