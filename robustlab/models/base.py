"""The backbone interface shared by every model in the zoo.

A backbone maps images (B, C, H, W) to logits (B, K) as ``classifier(features(x))``, where
``features`` ends with global average pooling, so any input of at least 16 x 16 pixels works.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from numbers import Integral

import torch
import torch.nn.functional as F
from torch import nn

from robustlab.errors import check


def check_positive_int(value: object, name: str, minimum: int = 1) -> int:
    """Return ``value`` as ``int`` or raise ConfigError unless it is an integer >= ``minimum``."""
    check(
        isinstance(value, Integral) and not isinstance(value, bool) and int(value) >= minimum,
        f"{name} must be an integer >= {minimum}, got {value!r}",
    )
    return int(value)  # type: ignore[arg-type]


def check_positive_number(value: object, name: str) -> float:
    """Return ``value`` as ``float`` or raise ConfigError unless it is a number > 0."""
    check(
        isinstance(value, (int, float)) and not isinstance(value, bool) and value > 0,
        f"{name} must be a positive number, got {value!r}",
    )
    return float(value)  # type: ignore[arg-type]


def check_dropout(value: object) -> float:
    """Return ``value`` as ``float`` or raise ConfigError unless it is a probability in [0, 1)."""
    check(
        isinstance(value, (int, float)) and not isinstance(value, bool) and 0.0 <= value < 1.0,
        f"dropout must be a probability in [0, 1), got {value!r}",
    )
    return float(value)  # type: ignore[arg-type]


@contextmanager
def eval_mode(module: nn.Module, enabled: bool = True) -> Iterator[nn.Module]:
    """Inside, every submodule of ``module`` is in eval mode (BatchNorm uses running statistics,
    dropout is off); afterwards each submodule gets back its own train/eval flag, so parts kept
    in eval mode on purpose (a frozen teacher) stay so. ``enabled=False`` changes nothing."""
    flags = [(m, m.training) for m in module.modules()] if enabled else []
    if enabled:
        module.eval()
    try:
        yield module
    finally:
        for m, training in flags:
            m.training = training


def is_stand_in(model: nn.Module) -> bool:
    """Whether ``model`` lives on PyTorch's ``meta`` device (the stand-in with which
    :mod:`robustlab.run.validation` checks a method's options before any data is read)."""
    return any(p.is_meta for p in model.parameters())


def global_avg_pool(x: torch.Tensor) -> torch.Tensor:
    """Mean over the spatial axes: (B, C, H, W) -> (B, C)."""
    return torch.flatten(F.adaptive_avg_pool2d(x, 1), 1)


def init_weights(module: nn.Module) -> None:
    """He et al. (2015) init: conv ~ N(0, 2 / fan_out); norm layers weight 1, bias 0; biases 0.

    Linear weights keep PyTorch's default uniform init.
    """
    for m in module.modules():
        if isinstance(m, nn.Conv2d):
            nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
            if m.bias is not None:
                nn.init.zeros_(m.bias)
        elif isinstance(m, (nn.BatchNorm2d, nn.GroupNorm)):
            nn.init.ones_(m.weight)
            nn.init.zeros_(m.bias)
        elif isinstance(m, nn.Linear) and m.bias is not None:
            nn.init.zeros_(m.bias)


class Backbone(nn.Module):
    """Classifier backbone: logits = classifier(features(x)) with features in R^feature_dim.

    Subclasses build their layers, set ``feature_dim`` and ``classifier`` (an ``nn.Linear``),
    implement :meth:`features`, and list in ``stage_names`` the dotted paths of their main
    intermediate stages (inputs to :func:`robustlab.models.feature_extractor`).
    """

    feature_dim: int
    classifier: nn.Linear
    stage_names: tuple[str, ...] = ()

    def __init__(self, num_classes: int, in_channels: int) -> None:
        super().__init__()
        self.num_classes = check_positive_int(num_classes, "num_classes")
        self.in_channels = check_positive_int(in_channels, "in_channels")

    def features(self, x: torch.Tensor) -> torch.Tensor:
        """Penultimate features (B, feature_dim): after global pooling, before ``classifier``."""
        raise NotImplementedError

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Logits (B, num_classes)."""
        return self.classifier(self.features(x))
