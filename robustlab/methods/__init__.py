"""Training methods: each a LightningModule on the shared :class:`ERM` base.

``METHODS`` maps the names used by the ``method`` config group to classes;
:func:`build_method` also accepts a dotted import path for user-defined methods.
"""

from __future__ import annotations

from typing import Any

from torch import nn

from robustlab.methods.adversarial import AdversarialTraining
from robustlab.methods.erm import ERM, TrainingOutput
from robustlab.methods.selfsup import SelfSupervised
from robustlab.methods.stability import StabilityTraining
from robustlab.registry import construct, resolve

METHODS: dict[str, type] = {
    "erm": ERM,
    "adversarial": AdversarialTraining,
    "selfsup": SelfSupervised,
    "stability": StabilityTraining,
}


def build_method(name: str, model: nn.Module, **kwargs: Any) -> ERM:
    """Instantiate the method called ``name`` around ``model`` with config ``kwargs``."""
    cls = resolve(METHODS, name, group="method")
    return construct(cls, f"method={name}", model=model, **kwargs)


__all__ = ["ERM", "METHODS", "TrainingOutput", "build_method"]
