"""Knowledge-distillation losses: a student's logits z_s against a frozen teacher's z_t.

- :func:`kd_per_sample` — ``T² · KL(softmax(z_t/T) ‖ softmax(z_s/T))`` per example (Hinton, Vinyals
  & Dean, "Distilling the Knowledge in a Neural Network", 2015).
- :func:`kd_loss` — ``λ_ce · CE(z_s, y) + λ_kd · mean_i KD_T``.
- :func:`dkd_per_sample` / :func:`dkd_loss` — decoupled KD: target-class (TCKD) and
  non-target-class (NCKD) parts (Zhao, Cui, Song, Qiu & Liang, "Decoupled Knowledge
  Distillation", CVPR 2022).
- :func:`confidence_mask` / :func:`cross_view_consistency` / :func:`crld_loss` — CRLD's
  within-view and cross-view terms between a weak and a strong view, gated by the teacher's
  confidence (Zhang et al., "Cross-View Consistency Regularisation for Knowledge
  Distillation", ACM MM 2024, arXiv 2412.16493).

Every KL is :func:`robustlab.losses.divergence.kl_divergence` on tempered logits. Teacher
logits are targets: pass them without gradient (the methods compute them under ``no_grad``).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import Tensor

from robustlab.losses.divergence import kl_divergence

#: A per-example distillation divergence ``D(z_s, z_t, y) -> (B,)`` (KD_T, DKD, ...).
Divergence = Callable[[Tensor, Tensor, Tensor], Tensor]


class KDLoss(NamedTuple):
    loss: Tensor  # λ_ce · ce + λ_kd · kd
    ce: Tensor  # CE(z_s, y)
    kd: Tensor  # mean_i KD_T(z_s, z_t)


class DKDLoss(NamedTuple):
    loss: Tensor  # λ_ce · ce + warmup · (α · tckd + β · nckd)
    ce: Tensor
    tckd: Tensor  # batch mean of the target-class part
    nckd: Tensor  # batch mean of the non-target-class part


class CRLDLoss(NamedTuple):
    loss: Tensor  # λ_ce · ce + λ_wv · within + λ_cv · cross
    ce: Tensor  # CE(z_s^w, y) + CE(z_s^s, y)
    within: Tensor  # mean_i m_w[i] · (D(z_s^w, z_t^w) + D(z_s^s, z_t^s))
    cross: Tensor  # mean_i m_s[i] · (D(z_s^s, z_t^w) + D(z_s^w, z_t^s))


def kd_per_sample(student: Tensor, teacher: Tensor, temperature: float) -> Tensor:
    """``KD_T(z_s, z_t)_i = T² · Σ_c p_c (log p_c − log q_c)`` (B,), with ``p = softmax(z_t/T)``
    and ``q = softmax(z_s/T)`` (Hinton et al. 2015; the T² keeps the gradient scale of the
    soft term independent of T)."""
    return temperature**2 * kl_divergence(teacher / temperature, student / temperature)


def kd_loss(
    student: Tensor,
    teacher: Tensor,
    y: Tensor,
    temperature: float,
    lambda_ce: float,
    lambda_kd: float,
    label_smoothing: float = 0.0,
) -> KDLoss:
    """Hinton KD: ``λ_ce · CE_ε(z_s, y) + λ_kd · mean_i KD_T(z_s, z_t)_i``."""
    ce = F.cross_entropy(student, y, label_smoothing=label_smoothing)
    kd = kd_per_sample(student, teacher, temperature).mean()
    return KDLoss(lambda_ce * ce + lambda_kd * kd, ce, kd)


def _target_mask(logits: Tensor, target: Tensor) -> Tensor:
    return F.one_hot(target, logits.shape[1]).bool()


def _binary_log_probs(logits: Tensor, target: Tensor) -> Tensor:
    """``[log p_y, log(1 − p_y)]`` (B, 2) of ``softmax(logits)``, from log-sum-exps (exact also
    when p_y rounds to 1, where ``log(1 − p_y)`` of the probabilities would be −inf)."""
    total = torch.logsumexp(logits, dim=1)
    log_p_target = logits.gather(1, target[:, None]).squeeze(1) - total
    log_rest = torch.logsumexp(logits.masked_fill(_target_mask(logits, target), -torch.inf), 1)
    return torch.stack([log_p_target, log_rest - total], dim=1)


def _non_target(logits: Tensor, target: Tensor) -> Tensor:
    """The (B, C − 1) logits of the classes other than each row's target."""
    keep = ~_target_mask(logits, target)
    return logits[keep].view(logits.shape[0], logits.shape[1] - 1)


def dkd_parts(
    student: Tensor, teacher: Tensor, y: Tensor, temperature: float
) -> tuple[Tensor, Tensor]:
    """Per-example ``(TCKD, NCKD)`` of Zhao et al. (CVPR 2022, eq. 5), both scaled by T²:

    - ``TCKD = T² · KL(b_t ‖ b_s)``, ``b = [p_y, 1 − p_y]`` the binary target / non-target
      probabilities of ``softmax(z/T)``;
    - ``NCKD = T² · KL(p̂_t ‖ p̂_s)``, ``p̂ = softmax`` of ``z/T`` over the non-target classes
      only (the target class removed exactly; the reference code subtracts 1000 from it).

    KD splits as ``KD_T = TCKD + (1 − p_y^t) · NCKD`` (eq. 4).
    """
    s, t = student / temperature, teacher / temperature
    scale = temperature**2
    tckd = scale * kl_divergence(_binary_log_probs(t, y), _binary_log_probs(s, y))
    nckd = scale * kl_divergence(_non_target(t, y), _non_target(s, y))
    return tckd, nckd


def dkd_per_sample(
    student: Tensor, teacher: Tensor, y: Tensor, alpha: float, beta: float, temperature: float
) -> Tensor:
    """``α · TCKD_i + β · NCKD_i`` (B,) (:func:`dkd_parts`)."""
    tckd, nckd = dkd_parts(student, teacher, y, temperature)
    return alpha * tckd + beta * nckd


def dkd_warmup(epoch: int, warmup_epochs: int) -> float:
    """Linear warm-up factor of the DKD term: ``min(epoch / warmup_epochs, 1)`` with ``epoch``
    counted from 1 (as in the reference code: 1/20 in the first of 20 warm-up epochs)."""
    return 1.0 if warmup_epochs <= 0 else min(epoch / warmup_epochs, 1.0)


def dkd_loss(
    student: Tensor,
    teacher: Tensor,
    y: Tensor,
    alpha: float,
    beta: float,
    temperature: float,
    lambda_ce: float = 1.0,
    warmup: float = 1.0,
    label_smoothing: float = 0.0,
) -> DKDLoss:
    """DKD: ``λ_ce · CE_ε(z_s, y) + w · mean_i(α · TCKD_i + β · NCKD_i)`` with w the warm-up
    factor (:func:`dkd_warmup`)."""
    ce = F.cross_entropy(student, y, label_smoothing=label_smoothing)
    tckd, nckd = (part.mean() for part in dkd_parts(student, teacher, y, temperature))
    return DKDLoss(lambda_ce * ce + warmup * (alpha * tckd + beta * nckd), ce, tckd, nckd)


def confidence_mask(teacher: Tensor, threshold: float) -> Tensor:
    """``1[max_c softmax(z_t)_c ≥ τ]`` (B,) as floats: the teacher's confidence at temperature
    1 (CRLD's gate on which examples are distilled)."""
    return (F.softmax(teacher.detach(), dim=1).amax(dim=1) >= threshold).to(teacher.dtype)


def cross_view_consistency(
    divergence: Divergence,
    student_weak: Tensor,
    student_strong: Tensor,
    teacher_weak: Tensor,
    teacher_strong: Tensor,
    y: Tensor,
    tau_w: float,
    tau_s: float,
) -> tuple[Tensor, Tensor]:
    """CRLD's two consistency terms for any per-example distillation divergence D:

    - within-view ``mean_i m_w[i] · (D(z_s^w, z_t^w) + D(z_s^s, z_t^s))``,
    - cross-view ``mean_i m_s[i] · (D(z_s^s, z_t^w) + D(z_s^w, z_t^s))``,

    with ``m_w = confidence_mask(z_t^w, τ_w)``, ``m_s = confidence_mask(z_t^s, τ_s)``; the
    means run over the WHOLE batch (examples the mask drops count as 0, not renormalised).
    """
    m_w = confidence_mask(teacher_weak, tau_w)
    m_s = confidence_mask(teacher_strong, tau_s)
    within = divergence(student_weak, teacher_weak, y) + divergence(
        student_strong, teacher_strong, y
    )
    cross = divergence(student_strong, teacher_weak, y) + divergence(
        student_weak, teacher_strong, y
    )
    return (m_w * within).mean(), (m_s * cross).mean()


def crld_loss(
    student_weak: Tensor,
    student_strong: Tensor,
    teacher_weak: Tensor,
    teacher_strong: Tensor,
    y: Tensor,
    temperature: float = 4.0,
    lambda_ce: float = 1.0,
    lambda_wv: float = 2.0,
    lambda_cv: float = 0.5,
    tau_w: float = 0.9,
    tau_s: float = 0.2,
    label_smoothing: float = 0.0,
) -> CRLDLoss:
    """CRLD (Zhang et al., ACM MM 2024)::

        L = λ_ce · [CE(z_s^w, y) + CE(z_s^s, y)]
          + λ_wv · mean_i(m_w[i] · (KD_T(z_s^w, z_t^w) + KD_T(z_s^s, z_t^s)))
          + λ_cv · mean_i(m_s[i] · (KD_T(z_s^s, z_t^w) + KD_T(z_s^w, z_t^s)))

    w / s the weak / strong view, masks from the teacher at temperature 1
    (:func:`cross_view_consistency` with D = :func:`kd_per_sample`).
    """
    ce = F.cross_entropy(student_weak, y, label_smoothing=label_smoothing) + F.cross_entropy(
        student_strong, y, label_smoothing=label_smoothing
    )

    def kd(student: Tensor, teacher: Tensor, _: Tensor) -> Tensor:
        return kd_per_sample(student, teacher, temperature)

    within, cross = cross_view_consistency(
        kd, student_weak, student_strong, teacher_weak, teacher_strong, y, tau_w, tau_s
    )
    return CRLDLoss(lambda_ce * ce + lambda_wv * within + lambda_cv * cross, ce, within, cross)
