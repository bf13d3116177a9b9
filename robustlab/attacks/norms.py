"""Geometry of the l∞ and l2 threat models in [0, 1] pixel space.

The feasible set around a clean batch x is ``{x' : ‖x' − x‖_p ≤ ε, x' ∈ [0, 1]}`` per example.
This module holds the pieces every gradient attack is assembled from: validation of the threat
model, projection onto the ε-ball, a random start drawn uniformly inside the ball, the steepest
ascent direction of a gradient for the norm, and the clamp to valid pixels (Madry et al., ICLR
2018, "Towards Deep Learning Models Resistant to Adversarial Attacks").
"""

from __future__ import annotations

import math

from torch import Tensor

from robustlab import randomness
from robustlab.errors import check
from robustlab.randomness import RandomSource
from robustlab.registry import resolve

NORMS: tuple[str, ...] = ("linf", "l2")
_ALIASES = {"linf": "linf", "inf": "linf", "l_inf": "linf", "l2": "l2", "l_2": "l2"}
_TINY = 1e-12  # guards divisions by a zero norm


def check_norm(norm: str) -> str:
    """Return the canonical norm name (``"linf"`` or ``"l2"``); accepts ``"Linf"``, ``"L2"``."""
    return resolve(_ALIASES, str(norm).strip().lower(), group="attack norm", imports=False)


def check_eps(eps: float) -> float:
    """Return ``eps`` as a float after checking that it is finite and ≥ 0."""
    value = float(eps)
    check(
        math.isfinite(value) and value >= 0,
        f"attack eps must be a finite number >= 0 (e.g. 8/255 for l∞ on CIFAR), got {eps!r}",
    )
    return value


def perturbation_norm(delta: Tensor, norm: str) -> Tensor:
    """Per-example size ``‖δ_i‖_p`` of a perturbation batch, shape (B,)."""
    norm = check_norm(norm)
    flat = delta.flatten(1)
    return flat.abs().amax(dim=1) if norm == "linf" else flat.norm(p=2, dim=1)


def _flat_l2(t: Tensor) -> Tensor:
    """Per-example l2 norm, shaped (B, 1, ..., 1) to broadcast against ``t``."""
    return perturbation_norm(t, "l2").view(-1, *([1] * (t.dim() - 1)))


def project_linf(delta: Tensor, eps: float) -> Tensor:
    """Project onto the l∞ ball: ``clip(δ, −ε, ε)`` element-wise."""
    return delta.clamp(-eps, eps)


def project_l2(delta: Tensor, eps: float) -> Tensor:
    """Project onto the l2 ball: ``δ · min(1, ε / ‖δ‖₂)`` per example (zero stays zero)."""
    scale = (eps / _flat_l2(delta).clamp_min(_TINY)).clamp(max=1.0)
    return delta * scale


def project(delta: Tensor, eps: float, norm: str) -> Tensor:
    """Project a perturbation batch onto the ε-ball of ``norm``."""
    return project_linf(delta, eps) if check_norm(norm) == "linf" else project_l2(delta, eps)


def clamp_images(x: Tensor) -> Tensor:
    """Clamp to the valid pixel range [0, 1]."""
    return x.clamp(0.0, 1.0)


def linf_bounds(x: Tensor, eps: float) -> tuple[Tensor, Tensor]:
    """Per-pixel box ``[max(x − ε, 0), min(x + ε, 1)]``: l∞ projection and clamp in one step."""
    return (x - eps).clamp_(min=0.0), (x + eps).clamp_(max=1.0)


def project_images(x_adv: Tensor, x: Tensor, eps: float, norm: str) -> Tensor:
    """Map ``x_adv`` into the feasible set: project ``x_adv − x`` onto the ball, then clamp."""
    return clamp_images(x + project(x_adv - x, eps, norm))


def _draw(kind: str, like: Tensor, generator: RandomSource) -> Tensor:
    """Uniform [0, 1) or standard normal noise shaped like ``like``, on its device and dtype,
    from a ``torch.Generator`` or per-image streams (:mod:`robustlab.randomness`)."""
    draw = randomness.uniform if kind == "uniform" else randomness.normal
    return draw(tuple(like.shape), 0.0, 1.0, generator, like.device, like.dtype)


def random_init(x: Tensor, eps: float, norm: str, generator: RandomSource = None) -> Tensor:
    """A random starting point uniformly distributed in the ε-ball around ``x``, clamped to [0, 1].

    l∞: δ ~ U[−ε, ε]^d.  l2: δ = ε · U^{1/d} · g / ‖g‖₂ with g ~ N(0, I_d), U ~ U[0, 1]
    (uniform in the ball of dimension d). Clamping can only shrink δ, so it stays in the ball.
    """
    norm = check_norm(norm)
    if norm == "linf":
        delta = (2 * _draw("uniform", x, generator) - 1) * eps
    else:
        direction = _draw("normal", x, generator)
        direction = direction / _flat_l2(direction).clamp_min(_TINY)
        dim = x[0].numel()
        radius = _draw("uniform", x.new_empty((x.shape[0],) + (1,) * (x.dim() - 1)), generator)
        delta = direction * (eps * radius.pow(1.0 / dim))
    return clamp_images(x + delta)


def ascent_direction(grad: Tensor, norm: str) -> Tensor:
    """Steepest-ascent direction of unit norm: ``sign(g)`` for l∞, ``g / ‖g‖₂`` for l2.

    A zero gradient gives a zero direction (the attack stays put instead of producing NaN).
    """
    if check_norm(norm) == "linf":
        return grad.sign()
    return grad / _flat_l2(grad).clamp_min(_TINY)
