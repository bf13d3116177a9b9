"""Cross-entropy of images mixed from two labelled images: mixup (Zhang, Cisse, Dauphin &
Lopez-Paz, ICLR 2018) and CutMix (Yun et al., ICCV 2019).

An image mixed with weight λ on image a (label y_a) and 1 − λ on image b (label y_b) is trained
against both labels, ``L = λ · CE(f(x̃), y_a) + (1 − λ) · CE(f(x̃), y_b)``, averaged over the
batch: the cross-entropy against the mixed target ``λ e_{y_a} + (1 − λ) e_{y_b}``, as both
papers' code computes it.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor


def mixed_cross_entropy(
    logits: Tensor,
    labels_a: Tensor,
    labels_b: Tensor,
    lam: float | Tensor,
    label_smoothing: float = 0.0,
) -> Tensor:
    """``mean_i [λ_i CE(logits_i, a_i) + (1 − λ_i) CE(logits_i, b_i)]``; ``lam`` one number for
    the batch or one per row (B,); each CE with ``label_smoothing``."""
    loss_a = F.cross_entropy(logits, labels_a, reduction="none", label_smoothing=label_smoothing)
    loss_b = F.cross_entropy(logits, labels_b, reduction="none", label_smoothing=label_smoothing)
    lam = torch.as_tensor(lam, dtype=logits.dtype, device=logits.device)
    return (lam * loss_a + (1 - lam) * loss_b).mean()


def dominant_labels(labels_a: Tensor, labels_b: Tensor, lam: float | Tensor) -> Tensor:
    """The label with the larger share of each mixed image: ``a`` where ``λ >= 1/2``, else
    ``b`` (what ``train/acc`` of a mixing method is counted against)."""
    lam = torch.as_tensor(lam, device=labels_a.device)
    return torch.where(lam >= 0.5, labels_a, labels_b)
