"""Training methods: each a LightningModule on the shared :class:`ERM` base.

``METHODS`` maps the names used by the ``method`` config group to classes;
:func:`build_method` also accepts a dotted import path for user-defined methods.
:func:`check_method_requirements` checks, before data loads, that a run gives its method the
data it declares it needs (views, same-class groups) and does not test or score a stage that
trains no classifier.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from torch import nn

from robustlab.errors import check
from robustlab.methods.adversarial import AdversarialTraining
from robustlab.methods.distillation import CRLD, DecoupledKD, KnowledgeDistillation
from robustlab.methods.erm import ERM, TrainingOutput
from robustlab.methods.generator_stage import GeneratorStage
from robustlab.methods.hydramix import HydraMix
from robustlab.methods.introspective import IntrospectiveTraining
from robustlab.methods.mix_generator import MixGenerator
from robustlab.methods.sample_mixing import CutMix, Mixup
from robustlab.methods.selfsup import SelfSupervised
from robustlab.methods.stability import StabilityTraining
from robustlab.registry import construct, resolve

METHODS: dict[str, type] = {
    "erm": ERM,
    "adversarial": AdversarialTraining,
    "selfsup": SelfSupervised,
    "stability": StabilityTraining,
    "kd": KnowledgeDistillation,
    "dkd": DecoupledKD,
    "crld": CRLD,
    "mixup": Mixup,
    "cutmix": CutMix,
    "hydramix": HydraMix,
    "mix_generator": MixGenerator,
    "introspective": IntrospectiveTraining,
}


def method_class(name: str) -> type[ERM]:
    """The method class called ``name`` (a ``METHODS`` key or an import path)."""
    return resolve(METHODS, name, group="method")


def build_method(name: str, model: nn.Module, **kwargs: Any) -> ERM:
    """Instantiate the method called ``name`` around ``model`` with config ``kwargs``."""
    return construct(method_class(name), f"method={name}", model=model, **kwargs)


def check_method_requirements(cfg: Mapping[str, Any]) -> None:
    """A one-line ConfigError when the run config ``cfg`` (``method``, ``data``, ``test``,
    ``suite``) does not fit what its method declares (:meth:`ERM.check_requirements`)."""
    check(
        isinstance(cfg.get("test", True), bool),
        f"test must be true or false, got {cfg.get('test')!r}",
    )
    cls = method_class(cfg["method"]["name"])
    if isinstance(cls, type) and issubclass(cls, ERM):  # a user's factory declares nothing
        cls.check_requirements(
            cfg["data"],
            test=bool(cfg.get("test", True)),
            suites=cfg.get("suite"),
            method=cfg["method"],
        )


__all__ = [
    "CutMix",
    "ERM",
    "METHODS",
    "Mixup",
    "GeneratorStage",
    "HydraMix",
    "IntrospectiveTraining",
    "MixGenerator",
    "TrainingOutput",
    "build_method",
    "check_method_requirements",
    "method_class",
]
