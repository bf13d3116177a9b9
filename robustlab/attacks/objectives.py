"""Attack objectives: what an attack maximises.

An objective is any callable ``objective(model, x_adv, y) -> Tensor`` of shape (B,) holding one
loss value per example; attacks ascend its gradient with respect to ``x_adv`` and assume nothing
else about it. Methods plug in their own (e.g. CE + w · rotation-SSL loss for the "attacked SSL"
variant of Hendrycks et al., NeurIPS 2019 / Kucer et al., 2021).
"""

from __future__ import annotations

from collections.abc import Callable

import torch.nn.functional as F
from torch import Tensor, nn

Objective = Callable[[nn.Module, Tensor, Tensor], Tensor]


def cross_entropy(model: nn.Module, x: Tensor, y: Tensor) -> Tensor:
    """Per-example cross-entropy ``−log softmax(model(x))_y`` (the default PGD objective)."""
    return F.cross_entropy(model(x), y, reduction="none")


def negated(objective: Objective) -> Objective:
    """``−objective``: maximising it minimises the loss towards ``y`` (targeted attacks)."""

    def negated_objective(model: nn.Module, x: Tensor, y: Tensor) -> Tensor:
        return -objective(model, x, y)

    return negated_objective


def weighted_sum(*terms: tuple[float, Objective]) -> Objective:
    """``Σ_k w_k · objective_k``, e.g. ``weighted_sum((1, cross_entropy), (1/8, rotation_ce))``."""

    def summed(model: nn.Module, x: Tensor, y: Tensor) -> Tensor:
        return sum(weight * term(model, x, y) for weight, term in terms)

    return summed


def resolve_objective(objective: Objective | None = None, targeted: bool = False) -> Objective:
    """The objective an attack ascends: ``objective`` (default cross-entropy), negated if targeted.

    With ``targeted=True`` the labels passed to the attack are the target classes.
    """
    base = cross_entropy if objective is None else objective
    return negated(base) if targeted else base
