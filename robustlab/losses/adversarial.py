"""Adversarial-training losses on the examples of an inner maximisation.

- :func:`madry_loss` — CE(f(x'), y) (Madry et al., ICLR 2018).
- :func:`trades_loss` — CE(f(x), y) + β · KL(f(x) ‖ f(x')) (Zhang et al., ICML 2019).
"""

from __future__ import annotations

import torch.nn.functional as F
from torch import Tensor

from robustlab.losses.divergence import kl_divergence


def madry_loss(logits_adv: Tensor, y: Tensor, label_smoothing: float = 0.0) -> Tensor:
    """``mean_i CE_ε(f(x'_i), y_i)``: cross-entropy (label smoothing ε) on the adversarial
    examples x' of the inner maximisation (Madry, Makelov, Schmidt, Tsipras & Vladu, "Towards
    Deep Learning Models Resistant to Adversarial Attacks", ICLR 2018)."""
    return F.cross_entropy(logits_adv, y, label_smoothing=label_smoothing)


def trades_loss(
    logits_clean: Tensor,
    logits_adv: Tensor,
    y: Tensor,
    beta: float,
    label_smoothing: float = 0.0,
) -> tuple[Tensor, Tensor, Tensor]:
    """TRADES: ``CE_ε(f(x), y) + β · mean_i KL(f(x_i) ‖ f(x'_i))`` (Zhang, Yu, Jiao, Xing,
    El Ghaoui & Jordan, "Theoretically Principled Trade-off between Robustness and Accuracy",
    ICML 2019, eq. 5).

    The clean prediction f(x) is the KL's target distribution and gets gradients from both
    terms (as in the reference code, whose ``KLDivLoss(reduction="sum") / batch_size`` is the
    batch mean used here). Returns ``(loss, ce, kl)``.
    """
    ce = F.cross_entropy(logits_clean, y, label_smoothing=label_smoothing)
    kl = kl_divergence(logits_clean, logits_adv).mean()
    return ce + beta * kl, ce, kl
