"""Composable objective terms: regularisers of one method family added to any method by config.

``method.terms: {stability: {alpha: 0.1, sigma: 0.04}}`` turns a method's objective ``L`` into
``L + Σ_t w_t · R_t(f, x_used, z_used, y)``, where x_used are the images the method's trained
prediction was made on (the PGD examples for Madry adversarial training, the clean images for
ERM, TRADES or self-supervision) and z_used = f(x_used) those logits, with their graph
(:attr:`~robustlab.methods.erm.TrainingOutput.inputs` / ``input_logits``). Each term is a small
object built from the pure losses in :mod:`robustlab.losses`; ``TERMS`` maps config names to
them, and an import path ``package.module:Class`` plugs in a user's own.

A term has ``weight`` (its w), ``log_name`` (logged unweighted as ``train/<log_name>``) and
``__call__(model, x_used, logits, y) -> Tensor`` (a scalar).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Protocol, runtime_checkable

import torch
from torch import Tensor, nn

from robustlab.errors import check
from robustlab.losses import stability_kl
from robustlab.methods.consistency import AdversarialTerm
from robustlab.perturbations import imageops
from robustlab.perturbations.distortions import DEFAULT_LEVELS, DISTORTIONS, random_distortion
from robustlab.registry import accepted_keywords, check_known, construct, resolve

#: ``gaussian``: x + N(0, σ²) (the paper's training noise); a distortion name: that
#: distortion at a level drawn per example from ``levels``; ``mix``: a random distortion of
#: ``mix`` per example.
PERTURBATIONS = ("gaussian", *sorted(DISTORTIONS), "mix")


@dataclass(frozen=True)
class StabilityDefaults:
    """The stability options' defaults, written once for :class:`StabilityTerm`
    (``method.terms.stability``) and :class:`~robustlab.methods.stability.StabilityTraining`
    (``method=stability``); α and σ are open in the paper (reimplementations' values)."""

    alpha: float = 0.01
    sigma: float = 0.04
    perturbation: str = "gaussian"
    levels: Mapping[str, Sequence[float]] | None = None
    mix: Sequence[str] = ("gaussian_noise", "jpeg", "thumbnail", "crop")
    clip: bool = False
    detach_clean: bool = True


STABILITY = StabilityDefaults()


@runtime_checkable
class ObjectiveTerm(Protocol):
    """What ``method.terms`` entries build: ``weight · term(model, x_used, logits, y)``."""

    weight: float
    log_name: str

    def __call__(self, model: nn.Module, x: Tensor, logits: Tensor, y: Tensor) -> Tensor: ...


class StabilityTerm:
    """The classification stability term of Zheng, Song, Leung & Goodfellow, "Improving the
    Robustness of Deep Neural Networks via Stability Training", CVPR 2016 (arXiv 1604.04326):
    ``α · KL(P(y|x) ‖ P(y|x'))`` with x' a perturbed copy of x drawn per example and step
    (:func:`robustlab.losses.stability_kl`).

    Args:
        alpha: α ≥ 0, the term's weight.
        sigma: σ ≥ 0 of the Gaussian pixel noise (``perturbation=gaussian``), [0, 1] scale.
        perturbation: how x' is made, one of ``PERTURBATIONS``.
        levels: ``{distortion: [levels]}`` for distortion / ``mix`` perturbations (a level is
            drawn uniformly per example); defaults to
            ``robustlab.perturbations.distortions.DEFAULT_LEVELS``.
        mix: the distortion names ``perturbation=mix`` draws from (uniformly per example).
        clip: clip x + ε to [0, 1] (off by default: the paper's x' = x + ε is unclipped;
            clipping on mostly-black images such as MNIST makes the noise non-zero-mean).
        detach_clean: stop gradients through the clean branch (default on): the clean
            prediction is then a fixed target that the perturbed prediction is pulled to, and
            only the task loss shapes it, so the term cannot "stabilise" by flattening the clean
            prediction towards the noisy one.
        where: the config path named in error messages.

    As a composed term, x' goes through the model in a forward of its own (BatchNorm statistics
    of x' alone); :class:`~robustlab.methods.stability.StabilityTraining` can instead run x and
    x' as one batch (``joint_forward``) and uses this object for x' and the KL.
    """

    log_name = "stab_loss"

    def __init__(
        self,
        alpha: float = STABILITY.alpha,
        sigma: float = STABILITY.sigma,
        perturbation: str = STABILITY.perturbation,
        levels: Mapping[str, Sequence[float]] | None = STABILITY.levels,
        mix: Sequence[str] = STABILITY.mix,
        clip: bool = STABILITY.clip,
        detach_clean: bool = STABILITY.detach_clean,
        *,
        where: str = "method.terms.stability",
    ):
        check(alpha >= 0, f"{where}.alpha must be >= 0 (stability loss weight), got {alpha}")
        check(sigma >= 0, f"{where}.sigma must be >= 0 (noise std on [0, 1] pixels), got {sigma}")
        check(
            perturbation in PERTURBATIONS,
            f"{where}.perturbation={perturbation!r} is unknown; valid: {', '.join(PERTURBATIONS)}",
        )
        levels = {**DEFAULT_LEVELS, **dict(levels or {})}
        check_known(
            [*levels, *mix],
            DISTORTIONS,
            group="distortion(s)",
            where=f"{where}.levels / {where}.mix",
        )
        check(len(mix) > 0, f"{where}.mix must name at least one distortion")
        self.weight = float(alpha)
        self.sigma = float(sigma)
        self.perturbation = perturbation
        self.levels = {k: list(v) for k, v in levels.items()}
        self.mix = list(mix)
        self.clip = bool(clip)
        self.detach_clean = bool(detach_clean)

    def perturb(self, x: Tensor, generator: torch.Generator | None = None) -> Tensor:
        """x' (a fresh draw per example)."""
        if self.perturbation == "gaussian":
            return imageops.gaussian_noise(x, self.sigma, generator, clip=self.clip)
        names = self.mix if self.perturbation == "mix" else [self.perturbation]
        return random_distortion(x, names, self.levels, generator)

    def penalty(self, logits: Tensor, perturbed_logits: Tensor) -> Tensor:
        """``KL(P(y|x) ‖ P(y|x'))`` averaged over the batch (unweighted)."""
        return stability_kl(logits.detach() if self.detach_clean else logits, perturbed_logits)

    def __call__(self, model: nn.Module, x: Tensor, logits: Tensor, y: Tensor) -> Tensor:
        return self.penalty(logits, model(self.perturb(x)))


TERMS: dict[str, type] = {"stability": StabilityTerm, "adversarial": AdversarialTerm}


def build_terms(config: Mapping[str, Mapping[str, Any] | None] | None) -> dict[str, ObjectiveTerm]:
    """``{name: options}`` → ``{name: term}``; a name is a key of ``TERMS`` or an import path
    to a user's term class."""
    check(
        config is None or isinstance(config, Mapping),
        f"method.terms must map term names to their options, e.g. "
        f"method.terms.stability.alpha=0.1; got {config!r}",
    )
    terms: dict[str, ObjectiveTerm] = {}
    for name, options in (config or {}).items():
        where = f"method.terms.{name}"
        check(
            options is None or isinstance(options, Mapping),
            f"{where} must be a mapping of the term's options, got {options!r}",
        )
        cls = resolve(TERMS, name, group="method.terms")
        options = dict(options or {})
        if "where" in (accepted_keywords(cls) or ()):
            options["where"] = where
        term = construct(cls, where, provided=("where",), **options)
        check(
            isinstance(term, ObjectiveTerm),
            f"{where}: {name} is not an objective term (needs weight, log_name and "
            "__call__(model, x, logits, y))",
        )
        terms[str(name)] = term
    return terms
