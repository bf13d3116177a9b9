"""Model zoo: CIFAR/MNIST-scale backbones, a registry, and the normalising classifier wrapper.

Every backbone maps (B, C, H, W) images to logits (B, K) as ``classifier(features(x))`` and
exposes ``feature_dim``; ``build_classifier`` wraps one in :class:`ImageClassifier`, which takes
[0, 1] images and normalises them itself. ``name`` may also be an import path
``"package.module:factory"`` (or ``"package.module.factory"``) to a user factory that accepts
``num_classes`` and ``in_channels``.
"""

from __future__ import annotations

import importlib
import inspect
from collections.abc import Callable, Sequence
from typing import Any

from torch import nn

from robustlab.errors import ConfigError
from robustlab.models.base import Backbone, init_weights
from robustlab.models.mobilenetv2 import MobileNetV2, mobilenetv2, mobilenetv2_half
from robustlab.models.preact_resnet import PreActResNet, preact_resnet18
from robustlab.models.resnet_cifar import (
    CifarResNet,
    cifar_resnet,
    resnet8,
    resnet8x4,
    resnet14,
    resnet20,
    resnet32,
    resnet32x4,
    resnet44,
    resnet56,
    resnet110,
)
from robustlab.models.shufflenetv2 import ShuffleNetV2, shufflenetv2
from robustlab.models.small_cnn import SmallCNN, small_cnn
from robustlab.models.vgg import VGG, vgg8, vgg11, vgg13, vgg16, vgg19
from robustlab.models.wide_resnet import (
    WideResNet,
    wide_resnet,
    wrn_16_2,
    wrn_16_4,
    wrn_16_8,
    wrn_28_4,
    wrn_28_10,
    wrn_40_1,
    wrn_40_2,
)
from robustlab.models.wrapper import (
    FeatureExtractor,
    ImageClassifier,
    feature_extractor,
    resolve_submodule,
)

#: Registered backbone factories; each takes ``num_classes``, ``in_channels`` and its own kwargs.
MODELS: dict[str, Callable[..., nn.Module]] = {
    "small_cnn": small_cnn,
    "cifar_resnet": cifar_resnet,
    "resnet8": resnet8,
    "resnet14": resnet14,
    "resnet20": resnet20,
    "resnet32": resnet32,
    "resnet44": resnet44,
    "resnet56": resnet56,
    "resnet110": resnet110,
    "resnet8x4": resnet8x4,
    "resnet32x4": resnet32x4,
    "preact_resnet18": preact_resnet18,
    "wide_resnet": wide_resnet,
    "wrn_16_2": wrn_16_2,
    "wrn_16_4": wrn_16_4,
    "wrn_16_8": wrn_16_8,
    "wrn_28_4": wrn_28_4,
    "wrn_28_10": wrn_28_10,
    "wrn_40_1": wrn_40_1,
    "wrn_40_2": wrn_40_2,
    "vgg8": vgg8,
    "vgg11": vgg11,
    "vgg13": vgg13,
    "vgg16": vgg16,
    "vgg19": vgg19,
    "mobilenetv2": mobilenetv2,
    "mobilenetv2_half": mobilenetv2_half,
    "shufflenetv2": shufflenetv2,
}

_BUILDER_ARGS = ("num_classes", "in_channels")


def _import_factory(path: str) -> Callable[..., nn.Module]:
    module_name, sep, attr = path.partition(":")
    if not sep:
        module_name, _, attr = path.rpartition(".")
    if not module_name or not attr:
        raise ConfigError(
            f"model import path '{path}' is malformed; write 'package.module:factory'"
        )
    try:
        target: Any = importlib.import_module(module_name)
    except ImportError as err:
        raise ConfigError(
            f"cannot import module '{module_name}' for model '{path}' ({err}); check the path "
            f"and that the package is installed, or use a registered name: "
            f"{', '.join(sorted(MODELS))}"
        ) from None
    for part in attr.split("."):
        if not hasattr(target, part):
            raise ConfigError(f"module '{module_name}' has no attribute '{attr}' (model '{path}')")
        target = getattr(target, part)
    if not callable(target):
        raise ConfigError(f"model '{path}' is not callable; point it at a factory or class")
    return target


def resolve_model(name: str) -> Callable[..., nn.Module]:
    """The factory registered as ``name`` in :data:`MODELS`, or imported from a dotted path."""
    if not isinstance(name, str) or not name:
        raise ConfigError(f"model name must be a non-empty string, got {name!r}")
    if name in MODELS:
        return MODELS[name]
    if ":" in name or "." in name:
        return _import_factory(name)
    raise ConfigError(
        f"unknown model '{name}'; valid names: {', '.join(sorted(MODELS))} "
        f"(or an import path 'package.module:factory')"
    )


def _check_arguments(name: str, factory: Callable[..., nn.Module], kwargs: dict) -> None:
    """ConfigError for kwargs the factory does not accept or required ones that are missing."""
    try:
        params = inspect.signature(factory).parameters
    except (TypeError, ValueError):  # builtins without a signature: let the call decide
        return
    kinds = (inspect.Parameter.POSITIONAL_OR_KEYWORD, inspect.Parameter.KEYWORD_ONLY)
    named = {n: p for n, p in params.items() if p.kind in kinds}
    takes_any = any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params.values())
    missing_builder = [a for a in _BUILDER_ARGS if a not in named and not takes_any]
    if missing_builder:
        raise ConfigError(
            f"model factory '{name}' must accept {' and '.join(_BUILDER_ARGS)} as keyword "
            f"arguments; it lacks {', '.join(missing_builder)}"
        )
    accepted = sorted(n for n in named if n not in _BUILDER_ARGS)
    accepted_text = ", ".join(accepted) if accepted else "nothing besides num_classes, in_channels"
    unknown = [k for k in kwargs if k not in named]
    if unknown and not takes_any:
        raise ConfigError(
            f"model '{name}' got unknown argument(s) {', '.join(unknown)}; it accepts: "
            f"{accepted_text}"
        )
    missing = [
        n
        for n, p in named.items()
        if p.default is inspect.Parameter.empty and n not in kwargs and n not in _BUILDER_ARGS
    ]
    if missing:
        raise ConfigError(
            f"model '{name}' needs argument(s) {', '.join(missing)}; it accepts: {accepted_text}"
        )


def build_backbone(name: str, num_classes: int, in_channels: int = 3, **kwargs: Any) -> nn.Module:
    """Build backbone ``name`` (registry key or import path) for ``num_classes`` classes and
    ``in_channels`` input channels; extra ``kwargs`` go to its factory (checked first)."""
    factory = resolve_model(name)
    _check_arguments(name, factory, kwargs)
    model = factory(num_classes=num_classes, in_channels=in_channels, **kwargs)
    if not (
        isinstance(model, nn.Module)
        and callable(getattr(model, "features", None))
        and isinstance(getattr(model, "feature_dim", None), int)
        and isinstance(getattr(model, "classifier", None), nn.Module)
    ):
        raise ConfigError(
            f"model '{name}' returned {type(model).__name__}, which is not a backbone: it needs "
            f"to be an nn.Module with features(x), an int feature_dim and a classifier layer "
            f"(subclass robustlab.models.Backbone)"
        )
    return model


def build_classifier(
    name: str,
    num_classes: int,
    in_channels: int,
    mean: float | Sequence[float],
    std: float | Sequence[float],
    **kwargs: Any,
) -> ImageClassifier:
    """:func:`build_backbone` wrapped in :class:`ImageClassifier` (inputs in [0, 1],
    normalised by ``mean`` / ``std`` inside the model)."""
    return ImageClassifier(build_backbone(name, num_classes, in_channels, **kwargs), mean, std)


__all__ = [
    "MODELS",
    "VGG",
    "Backbone",
    "CifarResNet",
    "FeatureExtractor",
    "ImageClassifier",
    "MobileNetV2",
    "PreActResNet",
    "ShuffleNetV2",
    "SmallCNN",
    "WideResNet",
    "build_backbone",
    "build_classifier",
    "cifar_resnet",
    "feature_extractor",
    "init_weights",
    "mobilenetv2",
    "mobilenetv2_half",
    "preact_resnet18",
    "resnet8",
    "resnet8x4",
    "resnet14",
    "resnet20",
    "resnet32",
    "resnet32x4",
    "resnet44",
    "resnet56",
    "resnet110",
    "resolve_model",
    "resolve_submodule",
    "shufflenetv2",
    "small_cnn",
    "vgg8",
    "vgg11",
    "vgg13",
    "vgg16",
    "vgg19",
    "wide_resnet",
    "wrn_16_2",
    "wrn_16_4",
    "wrn_16_8",
    "wrn_28_4",
    "wrn_28_10",
    "wrn_40_1",
    "wrn_40_2",
]
