"""Training losses as pure functions of logits, features and labels, one module per family.

Each function states its formula and cites its paper; methods (:mod:`robustlab.methods`) only
compose them. :mod:`.divergence` holds the one KL between predictions that the others reuse.
"""

from robustlab.losses.adversarial import madry_loss, trades_loss
from robustlab.losses.distillation import (
    confidence_mask,
    crld_loss,
    cross_view_consistency,
    dkd_loss,
    dkd_parts,
    dkd_per_sample,
    dkd_warmup,
    kd_loss,
    kd_per_sample,
)
from robustlab.losses.divergence import kl_divergence
from robustlab.losses.stability import (
    embedding_stability,
    random_triplets,
    stability_kl,
    triplet_ranking_loss,
)

__all__ = [
    "confidence_mask",
    "crld_loss",
    "cross_view_consistency",
    "dkd_loss",
    "dkd_parts",
    "dkd_per_sample",
    "dkd_warmup",
    "embedding_stability",
    "kd_loss",
    "kd_per_sample",
    "kl_divergence",
    "madry_loss",
    "random_triplets",
    "stability_kl",
    "trades_loss",
    "triplet_ranking_loss",
]
