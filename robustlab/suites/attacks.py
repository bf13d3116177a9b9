"""Adversarial robustness as an evaluation suite: accuracy under FGSM / PGD / AutoAttack on an
ε × steps grid, with the same attack objects the training methods use.

Levels are ε in [0, 1] pixel units (l∞) or l2 radii. Headline figures: ``<suite>/acc@<ε>``
(the strongest attack of the grid at that ε) and sanity checks a reader should trust:
robust ≤ clean accuracy, and accuracy non-increasing in ε and in steps.

Transfer (black-box) attacks: with ``source=<run folder or .ckpt>`` the adversarial examples are
also crafted on that run's classifier and scored on the evaluated model ("referee" transfer, as
in WINN, Lee et al., CVPR 2018). They are exactly the source's white-box examples (same attack,
same per-image random starts; PGD stops early where the *source* is fooled), so a source equal
to the evaluated model gives the white-box numbers. Records of the transfer examples have metric
``transfer_acc`` and summaries ``<suite>/transfer_acc@<ε>``, beside the unchanged white-box
``acc`` (``whitebox=false`` leaves the white-box attack out).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
from torch import nn

from robustlab.attacks import ATTACKS, build_attack, sanity_flags
from robustlab.attacks.autoattack import backend_provenance
from robustlab.attacks.config import parse_number
from robustlab.errors import CheckpointError, ConfigError, check
from robustlab.registry import resolve
from robustlab.results import RobustnessRecord, format_level
from robustlab.run.checkpoints import checkpoint_path, frozen, load_classifier
from robustlab.suites.base import Case, Condition, EvaluationSuite, Stats, correct_count

#: metric of the white-box examples' accuracy, and of the examples crafted on ``source``
WHITEBOX_METRIC = "acc"
TRANSFER_METRIC = "transfer_acc"


def load_source(source: str | Path, where: str) -> tuple[nn.Module, Path]:
    """The frozen, eval-mode classifier of the run ``source`` (a checkpoint file or a run
    folder) and its checkpoint path; a missing or foreign source is a one-line ConfigError
    naming the config key ``where``."""
    try:
        path = checkpoint_path(source)
        model = load_classifier(path)
    except CheckpointError as err:
        raise ConfigError(f"{where}: {err}") from None
    return frozen(model), path.resolve()


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
        source: a run folder or ``.ckpt`` whose classifier the examples are also crafted on
            (transfer attack, metric ``transfer_acc``); null: white-box only.
        whitebox: with a ``source``, whether the white-box attack runs too (metric ``acc``).
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
        source: str | None = None,
        whitebox: bool = True,
        **common: Any,
    ):
        super().__init__(base, **common)
        resolve(ATTACKS, attack, group=f"suite.{self.name}.attack", imports=False)
        check(
            source is not None or whitebox,
            f"suite.{self.name}.whitebox=false needs a suite.{self.name}.source to attack "
            "instead (a run folder or .ckpt)",
        )
        self.whitebox = bool(whitebox)
        self.source_model: nn.Module | None = None
        self.source: Path | None = None
        if source is not None:
            self.source_model, self.source = load_source(source, f"suite.{self.name}.source")
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

    def check_fits(self, num_classes: int, in_channels: int) -> None:
        """A ``source`` must classify the evaluated images: ``num_classes`` classes of
        ``in_channels``-channel images (ConfigError naming both shapes otherwise)."""
        if self.source_model is None:
            return
        ours = (int(num_classes), int(in_channels))
        theirs = (int(self.source_model.num_classes), int(self.source_model.in_channels))
        check(
            ours == theirs,
            f"suite.{self.name}.source={self.source} classifies {theirs[0]} classes of "
            f"{theirs[1]}-channel images, the evaluated data has {ours[0]} classes of "
            f"{ours[1]}-channel images; pick a source trained on the same data",
        )

    def setup(self, stage: str | None = None) -> None:
        """Load the test data, and check the ``source`` against it before any attack runs."""
        super().setup(stage)
        if self.source_model is not None:
            self.check_fits(self.base.num_classes, self.base.in_channels)

    def _source_on(self, device: torch.device) -> nn.Module:
        """The source classifier on the evaluated images' device."""
        assert self.source_model is not None
        if next(self.source_model.parameters()).device != device:
            self.source_model.to(device)
        return self.source_model

    def measure(self, case: Case) -> Stats:
        """Accuracy on the attack's adversarial images: ``acc`` for examples crafted on the
        evaluated model (white-box), ``transfer_acc`` for examples crafted on ``source``. PGD's
        random starts come from the images' own streams (``case.random``), so they do not
        depend on the batching, and the transfer examples are the source's white-box examples;
        AutoAttack's internal randomness belongs to its library (seeded by ``seed`` per batch),
        so its numbers may change with the batch size or world size."""
        attack = self.attacks[case.condition]
        crafted_on = {WHITEBOX_METRIC: case.model} if self.whitebox else {}
        if self.source_model is not None:
            crafted_on[TRANSFER_METRIC] = self._source_on(case.x.device)
        stats: Stats = {}
        for metric, model in crafted_on.items():
            x_adv = case.x
            if case.condition.level != 0:  # fresh streams: both attacks draw the same starts
                streams = case.random_for(case.index)
                x_adv = attack(model, case.x, case.y, generator=streams).detach()
            stats[metric] = correct_count(case.model, x_adv, case.y)["acc"]
        return stats

    def provenance(self) -> dict[str, str]:
        """What ran, for results.json: AutoAttack's backend and its version, and the
        transfer ``source`` checkpoint."""
        described = backend_provenance(self.backend) if self.backend is not None else {}
        if self.source is not None:
            described["source"] = str(self.source)
        return described

    def summarize(
        self, records: list[RobustnessRecord], clean_acc: float | None = None
    ) -> dict[str, float]:
        """Per metric (``acc``, ``transfer_acc``): the strongest attack's accuracy at each ε
        (``<suite>/<metric>@<ε>``) and their mean over ε (``<suite>/mean_<metric>``)."""
        summary = {}
        for metric in (WHITEBOX_METRIC, TRANSFER_METRIC):
            strongest: dict[float, float] = {}
            for r in records:
                if r.metric == metric:
                    strongest[r.level] = min(r.value, strongest.get(r.level, 1.0))
            if not strongest:
                continue
            for eps, acc in strongest.items():
                summary[f"{self.name}/{metric}@{format_level(eps)}"] = acc
            summary[f"{self.name}/mean_{metric}"] = sum(strongest.values()) / len(strongest)
        return summary

    def sanity_violations(
        self, records: list[RobustnessRecord], clean_acc: float | None
    ) -> list[str]:
        """White-box checks only: examples crafted on another model may well be classified
        better than clean images, or better at a larger ε."""
        steps = {(c.name, c.level): c.option("steps") for c in self.conditions}
        rows = [
            (r.level, steps[(r.condition, r.level)], r.value)
            for r in records
            if r.metric == WHITEBOX_METRIC
        ]
        return [f"{self.name}: {flag}" for flag in sanity_flags(rows, clean=clean_acc)]
