"""Gradients of a per-example objective with respect to the input images only.

Attacks run inside training steps, ``torch.no_grad()`` evaluation loops and Lightning's
``inference_mode`` test loops alike, so gradients are switched on locally here. Parameters never
receive a ``.grad`` (``torch.autograd.grad`` differentiates w.r.t. the input alone) and the
model's train/eval mode is left exactly as the caller set it.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import torch
from torch import Tensor, nn

from robustlab.attacks.objectives import Objective
from robustlab.errors import check


@contextmanager
def gradient_context() -> Iterator[None]:
    """Context in which autograd records, even inside ``no_grad`` or ``inference_mode``."""
    with torch.inference_mode(False), torch.enable_grad():
        yield


def as_autograd_tensor(t: Tensor) -> Tensor:
    """A detached copy usable by autograd (inference-mode tensors cannot be; call under
    :func:`gradient_context`)."""
    return t.detach().clone() if t.is_inference() else t.detach()


def input_gradient(
    objective: Objective, model: nn.Module, x: Tensor, y: Tensor
) -> tuple[Tensor, Tensor]:
    """Per-example objective values ``L_i`` (B,) and ``∂ Σ_i L_i / ∂x`` (shape of ``x``).

    Examples are independent in eval mode, so the gradient of the sum is each example's own
    gradient. An objective that does not depend on ``x`` yields a zero gradient.
    """
    with gradient_context():
        x = as_autograd_tensor(x).requires_grad_(True)
        loss = objective(model, x, y)
        check(
            isinstance(loss, Tensor) and loss.shape == (x.shape[0],),
            "an attack objective must return one loss per example, shape "
            f"({x.shape[0]},), got {getattr(loss, 'shape', type(loss))}; "
            "use reduction='none' in the loss",
        )
        if loss.requires_grad:
            (grad,) = torch.autograd.grad(loss.sum(), x, allow_unused=True)
        else:
            grad = None
    if grad is None:
        grad = torch.zeros_like(x)
    return loss.detach(), grad.detach()
