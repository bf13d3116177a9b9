"""Terms that pull a student's prediction on another input towards a target prediction.

- :class:`CrossViewConsistency` (``method.consistency=crld`` on ``method=kd|dkd``): CRLD's
  within-view and cross-view terms (Zhang et al., "Cross-View Consistency Regularisation for
  Knowledge Distillation", ACM MM 2024) around the host method's own per-example distillation
  divergence D (KD_T for KD, α·TCKD + β·NCKD for DKD), plus the cross-entropy of the strong
  view; :func:`robustlab.losses.cross_view_consistency` computes them.
- :class:`AdversarialTerm` (``method.terms.adversarial``, a composed objective term,
  :mod:`robustlab.methods.terms`): ``w · D(f(x_adv), target)`` on PGD examples x_adv of the
  trained inputs: ``target=label`` is Madry's CE (Madry et al., ICLR 2018), ``target=teacher``
  the teacher's soft labels on the clean inputs, ``T² · KL(t(x)/T ‖ f(x_adv)/T)`` — ARD
  (Goldblum, Fowl, Feizi & Goldstein, "Adversarially Robust Distillation", AAAI 2020).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

import torch.nn.functional as F
from torch import Tensor, nn

from robustlab.attacks import training_attack
from robustlab.errors import ConfigError, check
from robustlab.losses import cross_view_consistency, kd_per_sample, madry_loss
from robustlab.losses.distillation import Divergence
from robustlab.models.base import eval_mode
from robustlab.registry import construct, resolve


class CrossViewConsistency:
    """CRLD's consistency terms as a plug-in on a distillation method::

        λ_ce_s · CE(z_s^s, y) + λ_wv · mean_i(m_w[i] · (D(z_s^w, z_t^w) + D(z_s^s, z_t^s)))
                             + λ_cv · mean_i(m_s[i] · (D(z_s^s, z_t^w) + D(z_s^w, z_t^s)))

    D the host's per-example divergence, masks from the teacher's softmax at temperature 1
    (thresholds τ_w on the weak view, τ_s on the strong view), means over the whole batch.
    ``method=kd`` with ``lambda_kd=0`` plus this term (``lambda_ce=null``) is exactly
    ``method=crld`` of the same T, λ_ce, λ_wv, λ_cv, τ_w, τ_s.

    Args:
        lambda_wv: λ_wv, weight of the within-view term.
        lambda_cv: λ_cv, weight of the cross-view term.
        tau_w: τ_w, teacher-confidence threshold on the weak view.
        tau_s: τ_s, teacher-confidence threshold on the strong view.
        lambda_ce: weight of the strong view's cross-entropy; null: the host's λ_ce (CRLD gives
            both views the same weight).
    """

    name = "crld"

    def __init__(
        self,
        lambda_wv: float = 2.0,
        lambda_cv: float = 0.5,
        tau_w: float = 0.9,
        tau_s: float = 0.2,
        lambda_ce: float | None = None,
        *,
        where: str = "method.consistency",
    ):
        for key, value in (("lambda_wv", lambda_wv), ("lambda_cv", lambda_cv)):
            check(value >= 0, f"{where}.{key} must be >= 0, got {value}")
        for key, value in (("tau_w", tau_w), ("tau_s", tau_s)):
            check(0 <= value <= 1, f"{where}.{key} must be a probability in [0, 1], got {value}")
        check(
            lambda_ce is None or lambda_ce >= 0,
            f"{where}.lambda_ce must be >= 0 or null, got {lambda_ce}",
        )
        self.lambda_wv, self.lambda_cv = float(lambda_wv), float(lambda_cv)
        self.tau_w, self.tau_s = float(tau_w), float(tau_s)
        self.lambda_ce = None if lambda_ce is None else float(lambda_ce)

    def __call__(
        self,
        divergence: Divergence,
        student: tuple[Tensor, Tensor],
        teacher: tuple[Tensor, Tensor],
        y: Tensor,
        *,
        host_lambda_ce: float,
        label_smoothing: float = 0.0,
    ) -> tuple[Tensor, dict[str, Tensor]]:
        """``(loss, {"ce_strong", "kd_within", "kd_cross"})`` for ``student = (z_s^w, z_s^s)``
        and ``teacher = (z_t^w, z_t^s)``."""
        within, cross = cross_view_consistency(
            divergence, *student, *teacher, y, self.tau_w, self.tau_s
        )
        ce_strong = F.cross_entropy(student[1], y, label_smoothing=label_smoothing)
        lambda_ce = host_lambda_ce if self.lambda_ce is None else self.lambda_ce
        loss = lambda_ce * ce_strong + self.lambda_wv * within + self.lambda_cv * cross
        return loss, {"ce_strong": ce_strong, "kd_within": within, "kd_cross": cross}


CONSISTENCY: dict[str, type] = {"crld": CrossViewConsistency}


def build_consistency(config: str | Mapping[str, Any] | None) -> CrossViewConsistency | None:
    """``null`` → None; ``crld`` → the term with its defaults; ``{name: crld, ...options}``."""
    if config is None:
        return None
    check(
        isinstance(config, (str, Mapping)),
        f"method.consistency must be null, a name (crld) or a mapping {{name: crld, ...}}, "
        f"got {config!r}",
    )
    options = {"name": config} if isinstance(config, str) else dict(config)
    check("name" in options, "method.consistency needs a name, e.g. method.consistency.name=crld")
    cls = resolve(CONSISTENCY, options.pop("name"), group="method.consistency")
    return construct(cls, "method.consistency", provided=("where",), **options)


TARGETS = ("label", "teacher")


class AdversarialTerm:
    """A composed objective term on PGD examples: ``w · D(f(x_adv), target)``.

    x_adv maximises CE(f(x_adv), y) in the ε-ball around the trained inputs x (the training
    attack of ``method=adversarial``, model in eval mode while attacking by default).

    - ``target: label`` — ``CE(f(x_adv), y)`` (Madry et al. 2018);
    - ``target: teacher`` — ``mean_i T² · KL(softmax(t(x)/T) ‖ softmax(f(x_adv)/T))``, the
      teacher's soft labels on the clean x (ARD, Goldblum et al. 2020). Needs a distillation
      method (``method=kd|dkd|crld``), which hands the term its frozen teacher.

    ARD's objective ``(1 − α) · CE(f(x), y) + α · T² · KL(t(x) ‖ f(x_adv))`` is then
    ``method=kd method.lambda_ce=1−α method.lambda_kd=0`` plus this term with ``weight=α``
    (the reference code averages the KL over classes too, ``nn.KLDivLoss()``'s default; here
    it is summed over classes and averaged over the batch).

    Args:
        weight: w ≥ 0.
        attack: ``{name: pgd|fgsm, norm, eps, steps, step_size, random_start, restarts}``.
        target: ``label`` or ``teacher``.
        temperature: T of the soft labels (``target=teacher``).
        attack_in_eval_mode: attack with BatchNorm in eval mode (flags restored afterwards).
    """

    log_name = "adv_loss"

    def __init__(
        self,
        weight: float = 1.0,
        attack: Mapping[str, Any] | None = None,
        target: str = "label",
        temperature: float = 1.0,
        attack_in_eval_mode: bool = True,
        *,
        where: str = "method.terms.adversarial",
    ):

        check(weight >= 0, f"{where}.weight must be >= 0, got {weight}")
        check(target in TARGETS, f"{where}.target must be one of {list(TARGETS)}, got {target!r}")
        check(temperature > 0, f"{where}.temperature must be > 0, got {temperature}")
        defaults = {"name": "pgd", "eps": "8/255", "steps": 10, "step_size": "2/255"}
        self.attack = training_attack({**defaults, **dict(attack or {})}, f"{where}.attack")
        self.weight = float(weight)
        self.target = target
        self.temperature = float(temperature)
        self.attack_in_eval_mode = bool(attack_in_eval_mode)
        self.where = where
        self.teacher_logits: Callable[[Tensor], Tensor] | None = None

    def use_teacher(self, teacher_logits: Callable[[Tensor], Tensor]) -> None:
        """Called by a distillation method: ``teacher_logits(x)`` gives t(x) without gradient."""
        self.teacher_logits = teacher_logits

    def adversarial_examples(self, model: nn.Module, x: Tensor, y: Tensor) -> Tensor:
        with eval_mode(model, self.attack_in_eval_mode):
            return self.attack(model, x, y).detach()

    def __call__(self, model: nn.Module, x: Tensor, logits: Tensor, y: Tensor) -> Tensor:
        if self.target == "teacher" and self.teacher_logits is None:
            raise ConfigError(
                f"{self.where}.target=teacher needs a teacher: use it with method=kd, dkd or "
                "crld (method.teacher=<run folder>), or set target=label"
            )
        logits_adv = model(self.adversarial_examples(model, x, y))
        if self.target == "label":
            return madry_loss(logits_adv, y)
        return kd_per_sample(logits_adv, self.teacher_logits(x), self.temperature).mean()
