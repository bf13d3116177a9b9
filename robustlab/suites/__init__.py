"""Evaluation suites (the ``suite`` config group): each a LightningDataModule over a base
test set, with one dataloader per condition. ``SUITES`` maps config names to classes."""

from __future__ import annotations

from typing import Any

import pytorch_lightning as pl

from robustlab.registry import construct, resolve
from robustlab.suites.attacks import AttackSuite
from robustlab.suites.base import Condition, EvaluationSuite
from robustlab.suites.clean import CleanSuite
from robustlab.suites.corruptions import CorruptionSuite
from robustlab.suites.distortions import DistortionSuite
from robustlab.suites.near_duplicate import NearDuplicateSuite
from robustlab.suites.perturbation_sequences import PerturbationSequenceSuite
from robustlab.suites.similar_ranking import SimilarRankingSuite

SUITES: dict[str, type[EvaluationSuite]] = {
    "clean": CleanSuite,
    "pgd_linf": AttackSuite,
    "pgd_l2": AttackSuite,
    "fgsm": AttackSuite,
    "autoattack": AttackSuite,
    "corruptions": CorruptionSuite,
    "distortions": DistortionSuite,
    "perturbation_sequences": PerturbationSequenceSuite,
    "near_duplicate": NearDuplicateSuite,
    "similar_ranking": SimilarRankingSuite,
}


def build_suite(name: str, base: pl.LightningDataModule, **kwargs: Any) -> EvaluationSuite:
    cls = resolve(SUITES, name, group="suite")
    return construct(cls, f"suite.{name}", base=base, name=name, **kwargs)


__all__ = ["SUITES", "Condition", "EvaluationSuite", "build_suite"]
