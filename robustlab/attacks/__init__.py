"""Adversarial attacks in [0, 1] pixel space, assembled from small parts.

Parts: :mod:`~robustlab.attacks.norms` (threat-model geometry), :mod:`~robustlab.attacks.objectives`
(what is maximised), :mod:`~robustlab.attacks.gradients` (input gradients in any grad mode).
Attacks: :func:`pgd`, :func:`fgsm`, :func:`autoattack`; config objects :class:`Attack`,
:class:`AutoAttack` and the registry :func:`build_attack`; :func:`sanity_flags` for a grid of
robust accuracies. Models map [0, 1] images to logits (normalisation inside the model).
"""

from __future__ import annotations

from robustlab.attacks.autoattack import autoattack, backend_provenance
from robustlab.attacks.config import ATTACKS, Attack, AutoAttack, build_attack, training_attack
from robustlab.attacks.evaluation import sanity_flags
from robustlab.attacks.gradients import input_gradient
from robustlab.attacks.norms import (
    NORMS,
    ascent_direction,
    clamp_images,
    perturbation_norm,
    project,
    project_l2,
    project_linf,
    random_init,
)
from robustlab.attacks.objectives import Objective, cross_entropy, resolve_objective, weighted_sum
from robustlab.attacks.pgd import fgsm, pgd

__all__ = [
    "ATTACKS",
    "NORMS",
    "Attack",
    "AutoAttack",
    "Objective",
    "ascent_direction",
    "autoattack",
    "backend_provenance",
    "build_attack",
    "training_attack",
    "clamp_images",
    "cross_entropy",
    "fgsm",
    "input_gradient",
    "perturbation_norm",
    "pgd",
    "project",
    "project_l2",
    "project_linf",
    "random_init",
    "resolve_objective",
    "sanity_flags",
    "weighted_sum",
]
