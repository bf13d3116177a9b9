"""Projected gradient descent (PGD) and its one-step special case FGSM.

PGD (Madry et al., ICLR 2018) ascends an objective L inside the threat set around x:
``x_{t+1} = Π_{B_p(x, ε) ∩ [0,1]^d}(x_t + α · dir_p(∇ₓ L(x_t)))`` with ``dir_∞ = sign`` and
``dir_2 = g / ‖g‖₂``, from a uniform random start in the ball. FGSM (Goodfellow et al., ICLR 2015)
is one step of size ε from x itself.

All attacks work in [0, 1] pixel space on any ``nn.Module`` that maps images to logits (dataset
normalisation belongs inside the model). They do not change ``model.train()/eval()``: the
caller decides, and evaluation should run the model in eval mode (in train mode BatchNorm uses
batch statistics and every attack forward pass updates its running averages).
"""

from __future__ import annotations

import functools
import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from robustlab.attacks.gradients import as_autograd_tensor, gradient_context, input_gradient
from robustlab.attacks.norms import (
    ascent_direction,
    check_eps,
    check_norm,
    linf_bounds,
    project_images,
    random_init,
)
from robustlab.attacks.objectives import Objective, resolve_objective
from robustlab.errors import check


def madry_step_size(eps: float, steps: int) -> float:
    """Default PGD step ``α = 2.5 · ε / steps`` (Madry et al. 2018): the walk can cross the ball."""
    return 2.5 * eps / max(int(steps), 1)


def check_counts(steps: int, restarts: int, step_size: float | None) -> None:
    check(
        isinstance(steps, int) and not isinstance(steps, bool) and steps >= 0,
        f"attack steps must be an integer >= 0 (e.g. 10 for training, 20 for evaluation), "
        f"got {steps!r}",
    )
    check(
        isinstance(restarts, int) and not isinstance(restarts, bool) and restarts >= 1,
        f"attack restarts must be an integer >= 1, got {restarts!r}",
    )
    if step_size is not None:
        check(
            math.isfinite(float(step_size)) and float(step_size) > 0,
            f"attack step_size must be a number > 0 (e.g. 2/255) or None for 2.5*eps/steps, "
            f"got {step_size!r}",
        )


def _check_batch(x: Tensor, y: Tensor) -> None:
    check(
        x.is_floating_point() and x.dim() >= 2,
        "attacks take float images (B, C, H, W) in [0, 1]; "
        f"got dtype {x.dtype} and shape {tuple(x.shape)} (convert uint8 with imageops.from_uint8)",
    )
    check(
        y.shape == (x.shape[0],),
        f"attack labels must have shape ({x.shape[0]},), got {tuple(y.shape)}",
    )


def _fooled(model: nn.Module, x_adv: Tensor, y: Tensor, targeted: bool) -> Tensor:
    """Per-example success: prediction ≠ y (untargeted) or prediction = target y (targeted)."""
    with torch.no_grad():
        pred = model(x_adv).argmax(dim=1)
    return pred.eq(y) if targeted else pred.ne(y)


def _objective_values(objective: Objective, model: nn.Module, x_adv: Tensor, y: Tensor) -> Tensor:
    with torch.no_grad():
        return objective(model, x_adv, y)


def _single_run(
    model: nn.Module,
    x: Tensor,
    y: Tensor,
    objective: Objective,
    *,
    eps: float,
    step_size: float,
    steps: int,
    norm: str,
    random_start: bool,
    generator: torch.Generator | None,
) -> Tensor:
    """One PGD run from a random (or the clean) start; returns the last iterate."""
    bounds = linf_bounds(x, eps) if norm == "linf" else None
    x_adv = random_init(x, eps, norm, generator) if random_start else x.clone()
    for _ in range(steps):
        _, grad = input_gradient(objective, model, x_adv, y)
        x_adv = x_adv + step_size * ascent_direction(grad, norm)
        if bounds is not None:  # l∞ projection and [0, 1] clamp fused into one clamp
            x_adv = torch.clamp(x_adv, bounds[0], bounds[1])
        else:
            x_adv = project_images(x_adv, x, eps, norm)
    return x_adv


def _single_run_early_stop(
    model: nn.Module,
    x: Tensor,
    y: Tensor,
    *,
    eps: float,
    step_size: float,
    steps: int,
    norm: str,
    random_start: bool,
    targeted: bool,
    generator: torch.Generator | None,
) -> Tensor:
    """PGD on cross-entropy that freezes each example at the first iterate that fools the model
    and keeps attacking only the others (one forward-backward per step on the active set)."""
    x_adv = random_init(x, eps, norm, generator) if random_start else x.clone()
    active = torch.arange(x.shape[0], device=x.device)
    sign = -1.0 if targeted else 1.0
    for step in range(steps + 1):
        x_active = x_adv[active].detach().requires_grad_(True)
        logits = model(x_active)
        fooled = (logits.argmax(1) == y[active]) if targeted else (logits.argmax(1) != y[active])
        if fooled.all() or step == steps:  # the last pass only checks the final iterate
            break
        loss = sign * F.cross_entropy(logits, y[active], reduction="sum")
        (grad,) = torch.autograd.grad(loss, x_active)
        keep = ~fooled
        active, x_active, grad = active[keep], x_active[keep].detach(), grad[keep]
        stepped = x_active + step_size * ascent_direction(grad, norm)
        x_adv[active] = project_images(stepped, x[active], eps, norm)
    return x_adv.detach()


def pgd(
    model: nn.Module,
    x: Tensor,
    y: Tensor,
    *,
    eps: float,
    step_size: float | None = None,
    steps: int = 10,
    norm: str = "linf",
    random_start: bool = True,
    restarts: int = 1,
    targeted: bool = False,
    objective: Objective | None = None,
    generator: torch.Generator | None = None,
    stop_on_success: bool = False,
) -> Tensor:
    """Projected gradient ascent on ``objective`` within ‖x' − x‖_p ≤ ε, x' ∈ [0, 1] (Madry 2018).

    Args:
        model: maps [0, 1] images to logits; its train/eval mode and parameters' ``.grad`` are
            left untouched (use eval mode for evaluation).
        x, y: clean images (B, C, H, W) in [0, 1] and labels (B,) — target labels if ``targeted``.
        eps: radius of the threat ball (8/255 l∞ or 0.5 l2 on CIFAR); 0 returns ``x`` unchanged.
        step_size: α; default ``2.5 · eps / steps`` (Madry); the common CIFAR l∞ setting is
            ``eps=8/255, step_size=2/255``.
        steps: number of gradient steps (0 with ``random_start`` returns the random start).
        norm: ``"linf"`` (sign steps) or ``"l2"`` (normalised-gradient steps).
        random_start: start from a uniform point in the ball instead of ``x``.
        restarts: independent random starts; per example the result keeps the restart that
            fools the model (prediction ≠ y, or = y when targeted), and among equally
            successful restarts the one with the highest objective. The first restart is the
            1-restart run, so more restarts never lower attack success.
        targeted: minimise the objective towards the labels ``y`` instead of maximising it.
        objective: ``objective(model, x_adv, y) -> (B,)`` to maximise; default cross-entropy.
        generator: source of the random starts (same seed ⇒ same result): a
            ``torch.Generator`` or per-image streams (:mod:`robustlab.randomness`; each
            restart draws the next start from every image's own stream).
        stop_on_success: evaluation mode: an example is frozen at the first iterate that
            fools the model (it is then a valid adversarial example) and only the others are
            attacked further. Robust accuracy becomes "no iterate fooled the model", at least
            as strong as the last iterate and much cheaper on models that break early.
            Cross-entropy objective only.

    Returns:
        Adversarial images with the dtype and device of ``x``, detached.
    """
    norm = check_norm(norm)
    eps = check_eps(eps)
    check_counts(steps, restarts, step_size)
    _check_batch(x, y)
    if eps == 0:
        return x.detach().clone()
    alpha = float(step_size) if step_size is not None else madry_step_size(eps, steps)
    ascent = resolve_objective(objective, targeted)
    with gradient_context():
        x, y = as_autograd_tensor(x), as_autograd_tensor(y)
        run = dict(eps=eps, step_size=alpha, steps=steps, norm=norm, random_start=random_start)
        if stop_on_success:
            check(objective is None, "stop_on_success works with the cross-entropy objective only")
            single = functools.partial(_single_run_early_stop, model, x, y, targeted=targeted)
        else:
            single = functools.partial(_single_run, model, x, y, ascent)
        best = single(generator=generator, **run)
        if restarts == 1:
            return best
        best_fooled = _fooled(model, best, y, targeted)
        best_loss = _objective_values(ascent, model, best, y)
        for _ in range(restarts - 1):
            cand = single(generator=generator, **run)
            fooled = _fooled(model, cand, y, targeted)
            loss = _objective_values(ascent, model, cand, y)
            better = (fooled & ~best_fooled) | ((fooled == best_fooled) & (loss > best_loss))
            mask = better.view(-1, *([1] * (x.dim() - 1)))
            best = torch.where(mask, cand, best)
            best_fooled = best_fooled | fooled
            best_loss = torch.where(better, loss, best_loss)
        return best


def fgsm(
    model: nn.Module,
    x: Tensor,
    y: Tensor,
    *,
    eps: float,
    norm: str = "linf",
    targeted: bool = False,
    objective: Objective | None = None,
) -> Tensor:
    """Fast gradient sign method: ``x' = clip(x + ε · sign(∇ₓ L(x)), 0, 1)`` (Goodfellow 2015).

    With ``norm="l2"`` this is the fast gradient method ``x + ε · g / ‖g‖₂``. Equivalent to
    :func:`pgd` with one step of size ε and no random start.
    """
    eps = check_eps(eps)
    return pgd(
        model,
        x,
        y,
        eps=eps,
        step_size=eps if eps > 0 else None,
        steps=1,
        norm=norm,
        random_start=False,
        targeted=targeted,
        objective=objective,
    )
