"""Adversarial robustness as an evaluation suite: accuracy under FGSM / PGD / AutoAttack on an
ε × steps grid, with the same attack objects the training methods use.

Levels are ε in [0, 1] pixel units (l∞) or l2 radii. Headline figures: ``<suite>/acc@<ε>``
(the strongest attack of the grid at that ε) and sanity checks a reader should trust:
robust ≤ clean accuracy, and accuracy non-increasing in ε and in steps.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from robustlab.attacks import ATTACKS, build_attack, sanity_flags
from robustlab.attacks.autoattack import backend_provenance
from robustlab.attacks.config import parse_number
from robustlab.errors import check
from robustlab.registry import resolve
from robustlab.results import RobustnessRecord, format_level
from robustlab.suites.base import Case, Condition, EvaluationSuite, Stats, correct_count


class AttackSuite(EvaluationSuite):
    """Accuracy of the model on adversarial examples, one condition per (steps, ε).

    Args:
        attack: ``pgd`` | ``fgsm`` | ``autoattack``.
        norm: ``linf`` | ``l2``.
        epsilons: radii (numbers or fractions such as ``"8/255"``).
        steps: PGD iteration counts, e.g. ``[20, 100]`` (ignored by FGSM and AutoAttack).
            PGD here stops per example at the first iterate that fools the model
            (``stop_on_success``): an example counts as robust only if no iterate fooled it.
        step_size: PGD step; null = 2.5·ε/steps (Madry et al.); or ``step_size_ratio``·ε.
        restarts, random_start: PGD restarts and uniform random start in the ball.
        version: AutoAttack version (``standard`` | ``plus`` | ``rand``).
        backend: AutoAttack implementation, explicit: ``reference`` (the authors' code,
            ``pyautoattack``) or ``torchattacks``; recorded by :meth:`provenance`.
    """

    name = "attack"
    needs_grad = True

    def __init__(
        self,
        base,
        *,
        attack: str = "pgd",
        norm: str = "linf",
        epsilons: Sequence[float | str] = ("8/255",),
        steps: Sequence[int] = (20,),
        step_size: float | str | None = None,
        step_size_ratio: float | None = None,
        restarts: int = 1,
        random_start: bool = True,
        version: str = "standard",
        backend: str | None = None,
        **common: Any,
    ):
        super().__init__(base, **common)
        resolve(ATTACKS, attack, group=f"suite.{self.name}.attack", imports=False)
        check(len(epsilons) > 0, f"suite.{self.name}.epsilons must list at least one radius")
        check(
            step_size is None or step_size_ratio is None,
            f"suite.{self.name}: give step_size or step_size_ratio, not both",
        )
        self.backend = backend if attack == "autoattack" else None
        self.attacks = {}
        for eps in (parse_number(e, "eps") for e in epsilons):
            check(eps >= 0, f"suite.{self.name}.epsilons must be >= 0, got {eps}")
            for n in steps if attack == "pgd" else (1,):
                options = {"norm": norm, "eps": eps}
                if attack == "pgd":
                    size = step_size
                    if step_size_ratio is not None and eps > 0:  # ε = 0: clean, no step
                        size = step_size_ratio * eps
                    options.update(
                        stop_on_success=True,
                        steps=int(n),
                        step_size=size,
                        restarts=restarts,
                        random_start=random_start,
                    )
                elif attack == "autoattack":
                    check(
                        backend is not None,
                        f"suite.{self.name}.backend must name the AutoAttack implementation: "
                        'reference (pip install "robustlab[autoattack]") or torchattacks',
                    )
                    options.update(version=version, seed=self.seed, backend=backend)
                label = {"pgd": f"pgd{int(n)}", "fgsm": "fgsm"}.get(attack, f"autoattack-{version}")
                condition = Condition(label, eps, (("steps", int(n)),))
                self.attacks[condition] = build_attack(attack, **options)
        self.conditions = list(self.attacks)

    def measure(self, case: Case) -> Stats:
        """Accuracy on the attack's adversarial images. PGD's random starts come from the
        images' own streams (``case.random``), so they do not depend on the batching;
        AutoAttack's internal randomness belongs to its library (seeded by ``seed`` per batch),
        so its numbers may change with the batch size or world size."""
        attack = self.attacks[case.condition]
        if case.condition.level == 0:
            return correct_count(case.model, case.x, case.y)
        x_adv = attack(case.model, case.x, case.y, generator=case.random)
        return correct_count(case.model, x_adv.detach(), case.y)

    def provenance(self) -> dict[str, str]:
        """The attack implementation, for results.json: AutoAttack's backend and its version."""
        return backend_provenance(self.backend) if self.backend is not None else {}

    def summarize(
        self, records: list[RobustnessRecord], clean_acc: float | None = None
    ) -> dict[str, float]:
        strongest: dict[float, float] = {}
        for r in records:
            strongest[r.level] = min(r.value, strongest.get(r.level, 1.0))
        summary = {f"{self.name}/acc@{format_level(eps)}": acc for eps, acc in strongest.items()}
        summary[f"{self.name}/mean_acc"] = sum(strongest.values()) / len(strongest)
        return summary

    def sanity_violations(
        self, records: list[RobustnessRecord], clean_acc: float | None
    ) -> list[str]:
        steps = {(c.name, c.level): c.option("steps") for c in self.conditions}
        rows = [(r.level, steps[(r.condition, r.level)], r.value) for r in records]
        return [f"{self.name}: {flag}" for flag in sanity_flags(rows, clean=clean_acc)]
