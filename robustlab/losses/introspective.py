"""Losses and synthesis scores of introspective learning: ICN (Jin, Lazarow & Tu, "Introspective
Classification with Convolutional Nets", NeurIPS 2017, arXiv 1704.07816) and WINN (Lee, Xu, Fan &
Tu, "Wasserstein Introspective Neural Networks", CVPR 2018, arXiv 1711.08875).

ICN trains a classifier q on positives (real images) against pseudo-negatives it synthesised
itself; by Bayes, p(x | +) ∝ [q(+ | x) / q(− | x)] · p(x | −), so the log-ratio
``log q(+|x) − log q(−|x)`` is the *evidence* a synthesis step ascends. The paper's single-CNN
multi-class form is not confirmed (ASSUMPTION); two documented forms are offered:

- ``kplus1`` (ASSUMPTION): K class logits plus a (K+1)-th "synthesised" logit z_K.
  ``L = CE_ε(z(x), y) + w_neg · mean_i CE(z(x̃_i), K)`` over real images x and pseudo-negatives x̃;
  evidence for class k: ``z_k(x) − z_K(x)``.
- ``one_vs_rest`` (ASSUMPTION): the K logits are also K one-vs-rest logistic classifiers
  σ(z_k) = q(+_k | x); a pseudo-negative of class k is a negative for k only.
  ``L = CE_ε(z(x), y) + w_neg · [mean_j softplus(−z_{y_j}(x_j)) + mean_i softplus(z_{k_i}(x̃_i))]``
  (the positive logistic term anchors z_y, which the softmax CE leaves free up to a shift);
  evidence for class k: ``z_k(x)``.

WINN (facts from the authors' released code): a Wasserstein critic head W on the classifier;
``L = CE(z(x), y) + λ_W · (mean W(x̃) − mean W(x) + λ_gp · GP)`` with λ_W = 0.01, λ_gp = 10 and
the WGAN-GP penalty (Gulrajani et al., NeurIPS 2017) ``GP = mean((‖∇_x̂ W(x̂)‖₂ − 1)²)`` on
interpolates x̂ = u·x + (1 − u)·x̃, u ~ U[0, 1] per pair. Synthesis maximises
``−(|W(x) − thr| + 0.5 · CE(z(x), k))`` (the code uses the batch mean of W; here it is per image,
ASSUMPTION, so an image's synthesis never depends on its batch neighbours).
"""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import Tensor

#: The multi-class forms of ICN's classifier loss (both ASSUMPTIONS, see the module docstring).
ICN_FORMS = ("kplus1", "one_vs_rest")


def _mean_or_zero(values: Tensor, like: Tensor) -> Tensor:
    """The mean of ``values``; 0 (keeping the graph's dtype and device) when it is empty."""
    return values.mean() if values.numel() else like.new_zeros(())


def kplus1_loss(
    real_logits: Tensor,
    labels: Tensor,
    negative_logits: Tensor,
    negative_weight: float = 1.0,
    label_smoothing: float = 0.0,
) -> tuple[Tensor, Tensor, Tensor]:
    """ICN, K+1 form: ``CE_ε(z(x), y) + w_neg · mean CE(z(x̃), K)`` on (·, K+1) logits.

    Returns (loss, real CE, negative CE)."""
    synthesised = real_logits.shape[1] - 1
    real = F.cross_entropy(real_logits, labels, label_smoothing=label_smoothing)
    targets = torch.full((len(negative_logits),), synthesised, device=negative_logits.device)
    per_negative = F.cross_entropy(negative_logits, targets, reduction="none")
    negative = _mean_or_zero(per_negative, real)
    return real + negative_weight * negative, real, negative


def one_vs_rest_loss(
    real_logits: Tensor,
    labels: Tensor,
    negative_logits: Tensor,
    negative_classes: Tensor,
    negative_weight: float = 1.0,
    label_smoothing: float = 0.0,
) -> tuple[Tensor, Tensor, Tensor]:
    """ICN, one-vs-rest form: ``CE_ε(z(x), y) + w_neg · (mean softplus(−z_y(x)) + mean
    softplus(z_k(x̃)))`` with k the class each pseudo-negative x̃ was synthesised for.

    Returns (loss, real CE, logistic term)."""
    real = F.cross_entropy(real_logits, labels, label_smoothing=label_smoothing)
    positive = F.softplus(-real_logits.gather(1, labels[:, None])).mean()
    chosen = negative_logits.gather(1, negative_classes[:, None].long())
    logistic = positive + _mean_or_zero(F.softplus(chosen), real)
    return real + negative_weight * logistic, real, logistic


def gradient_penalty(
    critic: Callable[[Tensor], Tensor], real: Tensor, fake: Tensor, mix: Tensor
) -> Tensor:
    """WGAN-GP: ``mean_i (‖∇_x̂ W(x̂_i)‖₂ − 1)²`` at ``x̂_i = mix_i · real_i + (1 − mix_i) ·
    fake_i``; ``critic`` maps images (n, ...) to scores (n,), ``mix`` is (n,) in [0, 1].
    Differentiable (the gradient is taken with ``create_graph``) so it can be minimised."""
    weights = mix.view(-1, *([1] * (real.dim() - 1))).to(real.dtype)
    interpolates = (weights * real.detach() + (1 - weights) * fake.detach()).requires_grad_(True)
    with torch.enable_grad():
        scores = critic(interpolates)
        (grad,) = torch.autograd.grad(scores.sum(), interpolates, create_graph=True)
    return ((grad.flatten(1).norm(dim=1) - 1) ** 2).mean()


def wasserstein_critic_loss(
    real_scores: Tensor, fake_scores: Tensor, penalty: Tensor, gp_weight: float = 10.0
) -> Tensor:
    """The critic's loss ``mean W(x̃) − mean W(x) + λ_gp · GP`` (an estimate of the negative
    Wasserstein-1 distance, plus the penalty)."""
    return fake_scores.mean() - real_scores.mean() + gp_weight * penalty


def winn_loss(
    real_logits: Tensor,
    labels: Tensor,
    real_scores: Tensor,
    fake_scores: Tensor,
    penalty: Tensor,
    critic_weight: float = 0.01,
    gp_weight: float = 10.0,
    label_smoothing: float = 0.0,
) -> tuple[Tensor, Tensor, Tensor]:
    """WINN's classifier loss ``CE_ε(z(x), y) + λ_W · critic loss``. Returns (loss, CE,
    critic loss)."""
    real = F.cross_entropy(real_logits, labels, label_smoothing=label_smoothing)
    critic = wasserstein_critic_loss(real_scores, fake_scores, penalty, gp_weight)
    return real + critic_weight * critic, real, critic


def icn_evidence(logits: Tensor, classes: Tensor, form: str) -> Tensor:
    """Per-image evidence for class ``classes[i]``, the log-ratio log q(+|x)/q(−|x) ICN's
    synthesis ascends: ``z_k − z_K`` (``kplus1``, logits (B, K+1)) or ``z_k``
    (``one_vs_rest``, logits (B, K))."""
    chosen = logits.gather(1, classes[:, None].long()).squeeze(1)
    if form == "kplus1":
        return chosen - logits[:, -1]
    if form == "one_vs_rest":
        return chosen
    raise ValueError(f"unknown ICN form {form!r}; expected one of {ICN_FORMS}")


def winn_score(
    logits: Tensor,
    critic_scores: Tensor,
    classes: Tensor,
    threshold: Tensor | float,
    ce_weight: float = 0.5,
) -> Tensor:
    """Per-image WINN synthesis score ``−(|W(x) − thr| + 0.5 · CE(z(x), k))`` (to ascend)."""
    ce = F.cross_entropy(logits, classes.long(), reduction="none")
    return -((critic_scores - threshold).abs() + ce_weight * ce)


__all__ = [
    "ICN_FORMS",
    "gradient_penalty",
    "icn_evidence",
    "kplus1_loss",
    "one_vs_rest_loss",
    "wasserstein_critic_loss",
    "winn_loss",
    "winn_score",
]
