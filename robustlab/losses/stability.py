"""Stability-training losses (Zheng, Song, Leung & Goodfellow, "Improving the Robustness of Deep
Neural Networks via Stability Training", CVPR 2016, arXiv 1604.04326).

- :func:`stability_kl` — KL(P(y|x) ‖ P(y|x')), the classification stability loss (eq. 7).
- :func:`embedding_stability` — ‖f(x) − f(x')‖₂, the stability loss for feature embeddings (eq. 8).
- :func:`triplet_ranking_loss` — max(0, m + d(a, p) − d(a, n)), the hinge ranking loss the
  paper's embedding experiments use as L0.
- :func:`random_triplets` — (anchor, positive, negative) indices mined from class labels.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from robustlab.losses.divergence import kl_divergence


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
