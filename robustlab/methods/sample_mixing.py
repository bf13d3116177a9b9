"""mixup and CutMix: ERM on images mixed from two training images, against both labels.

- ``method=mixup`` (Zhang, Cisse, Dauphin & Lopez-Paz, ICLR 2018): ``x̃ = λ x + (1 − λ) x_π``,
  ``λ ~ Beta(α, α)`` (α = 1: uniform), π a random permutation of the batch.
- ``method=cutmix`` (Yun et al., ICCV 2019): ``x̃`` is ``x`` with a box of ``x_π`` pasted in:
  sides ``⌊H √(1 − λ)⌋ x ⌊W √(1 − λ)⌋`` (rows ``[cy − ⌊h/2⌋, cy − ⌊h/2⌋ + h)``, columns alike)
  centred on a uniform pixel (cy, cx), cut at the border; then λ is set to the share of ``x``
  that is left, ``λ = 1 − (pasted area) / (H W)``. Applied to a batch with probability ``prob``
  (the authors' CIFAR setting: 0.5; otherwise plain cross-entropy).

Both train ``λ CE(f(x̃), y) + (1 − λ) CE(f(x̃), y_π)``
(:func:`robustlab.losses.mixing_labels.mixed_cross_entropy`), with one λ and one permutation
per batch as in both papers' code. The draws of a step come from a NumPy generator seeded by
(``method.seed``, method name, rank, epoch, batch index): reproducible and the same after a
resume. Pairs are formed inside a batch, so the mixed images depend on the batch by
construction (as in the papers). ``train/acc`` counts a prediction correct when it is the label
with the larger share (``y`` when λ >= 1/2, else ``y_π``); ``train/mix_lambda`` logs λ.
Validation and test are plain.
"""

from __future__ import annotations

import math
from typing import Any, ClassVar, NamedTuple

import numpy as np
import torch
from torch import Tensor, nn

from robustlab.data.seeding import derive_seed
from robustlab.errors import check
from robustlab.losses import dominant_labels, mixed_cross_entropy
from robustlab.methods.erm import ERM, TrainingOutput


class MixedBatch(NamedTuple):
    """Mixed images, the labels of both sources and the weight λ of ``labels_a`` (0-d)."""

    images: Tensor
    labels_a: Tensor
    labels_b: Tensor
    lam: Tensor


class Box(NamedTuple):
    """Rows ``[top, bottom)`` and columns ``[left, right)`` of an image."""

    top: int
    bottom: int
    left: int
    right: int

    @property
    def area(self) -> int:
        return (self.bottom - self.top) * (self.right - self.left)


def mixup_images(x: Tensor, partner: Tensor, lam: float) -> Tensor:
    """``λ x + (1 − λ) x[partner]``."""
    return lam * x + (1 - lam) * x[partner]


def cutmix_box(height: int, width: int, lam: float, centre: tuple[int, int]) -> Box:
    """The box of side ``⌊H √(1 − λ)⌋ x ⌊W √(1 − λ)⌋`` centred on ``centre`` (row, column),
    cut at the image border."""
    rows, cols = int(height * math.sqrt(1 - lam)), int(width * math.sqrt(1 - lam))
    top, left = centre[0] - rows // 2, centre[1] - cols // 2
    return Box(max(top, 0), min(top + rows, height), max(left, 0), min(left + cols, width))


def paste(x: Tensor, partner: Tensor, box: Box) -> Tensor:
    """``x`` with ``box`` of every row replaced by that of its partner row."""
    mixed = x.clone()
    region = (slice(None), slice(None), slice(box.top, box.bottom), slice(box.left, box.right))
    mixed[region] = x[partner][region]
    return mixed


class SampleMixing(ERM):
    """ERM on mixed pairs of a batch; subclasses draw the mix (:meth:`mix`).

    Args (beyond :class:`ERM`'s):
        alpha: α of ``λ ~ Beta(α, α)`` (0: λ = 1, no mixing).
        prob: probability that a batch is mixed.
        seed: seed of the mixing draws (the run's ``seed``).
    """

    mixing: ClassVar[str] = ""

    def __init__(
        self, model: nn.Module, *, alpha: float = 1.0, prob: float = 1.0, seed: int = 0, **erm: Any
    ):
        name = self.mixing
        check(
            isinstance(alpha, int | float) and alpha >= 0,
            f"method.alpha of {name} must be >= 0 (Beta(alpha, alpha); 0 = no mixing), got "
            f"{alpha!r}",
        )
        check(
            isinstance(prob, int | float) and 0 <= prob <= 1,
            f"method.prob of {name} must be in [0, 1], got {prob!r}",
        )
        check(
            isinstance(seed, int) and not isinstance(seed, bool) and seed >= 0,
            f"method.seed must be an integer >= 0, got {seed!r}",
        )
        super().__init__(model, **erm)
        self.alpha, self.prob, self.seed = float(alpha), float(prob), seed

    def draws(self, batch_idx: int) -> np.random.Generator:
        """The step's generator, seeded by (seed, method, rank, epoch, batch index)."""
        key = (self.mixing, self.global_rank, self.current_epoch, batch_idx)
        return np.random.default_rng(derive_seed(self.seed, *key))

    def mixing_weight(self, rng: np.random.Generator) -> float:
        """λ ~ Beta(α, α) when the batch mixes (probability ``prob``), else 1; both numbers
        are always drawn, so the later draws do not depend on the outcome."""
        apply = rng.random() < self.prob
        lam = float(rng.beta(self.alpha, self.alpha)) if self.alpha > 0 else 1.0
        return lam if apply else 1.0

    def mix(self, x: Tensor, y: Tensor, rng: np.random.Generator) -> MixedBatch:
        """The mixed batch of ``(x, y)`` from the step's draws ``rng``."""
        raise NotImplementedError

    def training_step(self, batch: tuple, batch_idx: int) -> Tensor:
        x, y, *_ = batch
        mixed = self.mix(x, y, self.draws(batch_idx))
        dominant = dominant_labels(mixed.labels_a, mixed.labels_b, mixed.lam)
        return super().training_step((mixed.images, dominant, mixed), batch_idx)

    def training_objective(self, batch: tuple) -> TrainingOutput:
        """``λ CE(f(x̃), y_a) + (1 − λ) CE(f(x̃), y_b)`` on the batch :meth:`training_step`
        mixed, ``(x̃, dominant labels, MixedBatch)``."""
        x, _, mixed = batch
        logits = self(x)
        loss = mixed_cross_entropy(
            logits, mixed.labels_a, mixed.labels_b, mixed.lam, self.label_smoothing
        )
        return TrainingOutput(loss, logits, {"mix_lambda": mixed.lam})


def _partner(rng: np.random.Generator, batch: int, device: torch.device) -> Tensor:
    return torch.as_tensor(rng.permutation(batch), device=device)


class Mixup(SampleMixing):
    """mixup (Zhang et al., ICLR 2018): ``λ x + (1 − λ) x_π`` against both labels."""

    mixing = "mixup"

    def mix(self, x: Tensor, y: Tensor, rng: np.random.Generator) -> MixedBatch:
        lam = self.mixing_weight(rng)
        partner = _partner(rng, len(x), x.device)
        images = mixup_images(x, partner, lam)
        return MixedBatch(images, y, y[partner], torch.tensor(lam, device=x.device))


class CutMix(SampleMixing):
    """CutMix (Yun et al., ICCV 2019): a box of ``x_π`` pasted into ``x``, λ = the share of
    ``x`` left."""

    mixing = "cutmix"

    def mix(self, x: Tensor, y: Tensor, rng: np.random.Generator) -> MixedBatch:
        lam = self.mixing_weight(rng)
        partner = _partner(rng, len(x), x.device)
        height, width = x.shape[-2:]
        centre = (int(rng.integers(height)), int(rng.integers(width)))
        box = cutmix_box(height, width, lam, centre)
        images = paste(x, partner, box)
        lam = 1 - box.area / (height * width)
        return MixedBatch(images, y, y[partner], torch.tensor(lam, device=x.device))
