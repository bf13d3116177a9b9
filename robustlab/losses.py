"""Pure loss functions shared by training methods (each separately tested).

- :func:`kl_divergence` — per-example KL(softmax(a) ‖ softmax(b)) between two predictions, the
  one implementation behind the stability and TRADES terms.
- :func:`stability_kl` — KL(P(y|x) ‖ P(y|x')), the classification stability loss of
  Zheng, Song, Leung & Goodfellow, "Improving the Robustness of Deep Neural Networks via
  Stability Training", CVPR 2016 (arXiv 1604.04326).
- :func:`embedding_stability` — ‖f(x) − f(x')‖₂, the same paper's stability loss for
  feature embeddings.
- :func:`triplet_ranking_loss` — max(0, m + d(a, p) − d(a, n)), the hinge ranking loss the
  paper's embedding experiments use as L0.
- :func:`random_triplets` — (anchor, positive, negative) indices mined from class labels.
- :func:`madry_loss` — CE(f(x'), y) on adversarial examples (Madry et al., ICLR 2018).
- :func:`trades_loss` — CE(f(x), y) + β · KL(f(x) ‖ f(x')) (Zhang et al., ICML 2019).
"""

from __future__ import annotations

import torch
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


def stability_kl(clean_logits: Tensor, perturbed_logits: Tensor) -> Tensor:
    """KL(P(y|x) ‖ P(y|x')) = Σ_y p(y|x) (log p(y|x) − log p(y|x')), averaged over the batch.

    The clean prediction is the target distribution (the direction the paper uses); detach
    ``clean_logits`` beforehand to stop gradients into the clean branch.
    """
    return kl_divergence(clean_logits, perturbed_logits).mean()


def embedding_stability(clean: Tensor, perturbed: Tensor) -> Tensor:
    """‖f(x) − f(x')‖₂ per example, averaged over the batch (Zheng et al. 2016, eq. 8)."""
    return (clean - perturbed).norm(dim=1).mean()


def triplet_ranking_loss(
    anchor: Tensor, positive: Tensor, negative: Tensor, margin: float = 0.2
) -> Tensor:
    """Hinge ranking loss max(0, m + ‖a − p‖₂ − ‖a − n‖₂), averaged over the triplets."""
    d_pos = (anchor - positive).norm(dim=1)
    d_neg = (anchor - negative).norm(dim=1)
    return F.relu(margin + d_pos - d_neg).mean()


def random_triplets(
    labels: Tensor, generator: torch.Generator | None = None
) -> tuple[Tensor, Tensor, Tensor]:
    """Indices (anchor, positive, negative) mined at random within a batch from class labels.

    Every example that has another example of its class and one of a different class in the
    batch is an anchor; its positive is drawn uniformly from the *other* examples of its class,
    its negative uniformly from the examples of the other classes.
    """
    same = labels[:, None] == labels[None, :]
    eye = torch.eye(len(labels), dtype=torch.bool, device=labels.device)
    pos_mask, neg_mask = same & ~eye, ~same
    anchors = torch.nonzero(pos_mask.any(1) & neg_mask.any(1)).squeeze(1)
    if anchors.numel() == 0:
        empty = labels.new_zeros(0)
        return empty, empty, empty
    pos_w = pos_mask[anchors].float()
    neg_w = neg_mask[anchors].float()
    positives = torch.multinomial(pos_w, 1, generator=generator).squeeze(1)
    negatives = torch.multinomial(neg_w, 1, generator=generator).squeeze(1)
    return anchors, positives, negatives


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
