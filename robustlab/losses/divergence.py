"""Divergences between two predictions.

:func:`kl_divergence` is the one KL implementation behind the stability, TRADES and (later)
distillation terms.
"""

from __future__ import annotations

import torch.nn.functional as F
from torch import Tensor


def kl_divergence(target_logits: Tensor, logits: Tensor) -> Tensor:
    """Per-example ``KL(p ‖ q) = Σ_k p_k (log p_k − log q_k)`` (B,), with
    ``p = softmax(target_logits)`` the target distribution and ``q = softmax(logits)``.

    Computed from log-softmaxes, so classes with p_k = 0 contribute exactly 0. Gradients flow
    into both arguments; detach ``target_logits`` to make p a fixed target.
    """
    log_p = F.log_softmax(target_logits, dim=1)
    log_q = F.log_softmax(logits, dim=1)
    return (log_p.exp() * (log_p - log_q)).sum(dim=1)
