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
from robustlab.losses.introspective import (
    gradient_penalty,
    icn_evidence,
    kplus1_loss,
    one_vs_rest_loss,
    wasserstein_critic_loss,
    winn_loss,
    winn_score,
)
from robustlab.losses.mixing import (
    laplacian_loss,
    laplacian_pyramid,
    lsgan_discriminator_loss,
    lsgan_generator_loss,
    reconstruction_laplacian_loss,
    reconstruction_loss,
)
from robustlab.losses.mixing_labels import dominant_labels, mixed_cross_entropy
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
    "dominant_labels",
    "embedding_stability",
    "gradient_penalty",
    "icn_evidence",
    "kd_loss",
    "kd_per_sample",
    "kl_divergence",
    "kplus1_loss",
    "laplacian_loss",
    "laplacian_pyramid",
    "lsgan_discriminator_loss",
    "lsgan_generator_loss",
    "madry_loss",
    "mixed_cross_entropy",
    "one_vs_rest_loss",
    "random_triplets",
    "reconstruction_laplacian_loss",
    "reconstruction_loss",
    "stability_kl",
    "trades_loss",
    "triplet_ranking_loss",
    "wasserstein_critic_loss",
    "winn_loss",
    "winn_score",
]
