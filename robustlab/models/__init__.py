"""Model zoo: CIFAR/MNIST-scale backbones, torchvision's ImageNet classifiers (``torchvision``
with ``arch``/``weights``), a registry, and the normalising classifier wrapper.

Every backbone maps (B, C, H, W) images to logits (B, K) as ``classifier(features(x))`` and
exposes ``feature_dim``; ``build_classifier`` wraps one in :class:`ImageClassifier`, which takes
[0, 1] images and normalises them itself. ``name`` may also be an import path
``"package.module:factory"`` (or ``"package.module.factory"``) to a user factory that accepts
``num_classes`` and ``in_channels``.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

from torch import nn

from robustlab.errors import ConfigError
from robustlab.models.base import Backbone, init_weights
from robustlab.models.mobilenetv1 import MobileNetV1, mobilenetv1
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
from robustlab.models.resnet_winn import ResNetWinn, resnet32_winn
from robustlab.models.shufflenetv1 import ShuffleNetV1, shufflenetv1
from robustlab.models.shufflenetv2 import ShuffleNetV2, shufflenetv2
from robustlab.models.small_cnn import SmallCNN, small_cnn
from robustlab.models.torchvision_zoo import TorchvisionBackbone, torchvision_model
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
from robustlab.registry import accepted_keywords, construct, resolve

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
    "resnet32_winn": resnet32_winn,
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
    "mobilenetv1": mobilenetv1,
    "mobilenetv2": mobilenetv2,
    "mobilenetv2_half": mobilenetv2_half,
    "shufflenetv1": shufflenetv1,
    "shufflenetv2": shufflenetv2,
    "torchvision": torchvision_model,
}

_BUILDER_ARGS = ("num_classes", "in_channels")


def resolve_model(name: str) -> Callable[..., nn.Module]:
    """The factory registered as ``name`` in :data:`MODELS`, or imported from a dotted path."""
    return resolve(MODELS, name, group="model")


def _check_builder_arguments(name: str, factory: Callable[..., nn.Module]) -> None:
    """A user factory must take the two arguments robustlab passes to every backbone."""
    accepted = accepted_keywords(factory)
    lacking = [a for a in _BUILDER_ARGS if accepted is not None and a not in accepted]
    if lacking:
        raise ConfigError(
            f"model factory '{name}' must accept {' and '.join(_BUILDER_ARGS)} as keyword "
            f"arguments; it lacks {', '.join(lacking)}"
        )


def build_backbone(name: str, num_classes: int, in_channels: int = 3, **kwargs: Any) -> nn.Module:
    """Build backbone ``name`` (registry key or import path) for ``num_classes`` classes and
    ``in_channels`` input channels; extra ``kwargs`` go to its factory (checked first)."""
    factory = resolve_model(name)
    _check_builder_arguments(name, factory)
    model = construct(
        factory,
        f"model={name}",
        provided=_BUILDER_ARGS,
        num_classes=num_classes,
        in_channels=in_channels,
        **kwargs,
    )
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
    "MobileNetV1",
    "MobileNetV2",
    "PreActResNet",
    "ResNetWinn",
    "ShuffleNetV1",
    "ShuffleNetV2",
    "SmallCNN",
    "TorchvisionBackbone",
    "WideResNet",
    "build_backbone",
    "build_classifier",
    "cifar_resnet",
    "feature_extractor",
    "init_weights",
    "mobilenetv1",
    "mobilenetv2",
    "mobilenetv2_half",
    "preact_resnet18",
    "resnet8",
    "resnet8x4",
    "resnet14",
    "resnet20",
    "resnet32",
    "resnet32x4",
    "resnet32_winn",
    "resnet44",
    "resnet56",
    "resnet110",
    "resolve_model",
    "resolve_submodule",
    "shufflenetv1",
    "shufflenetv2",
    "small_cnn",
    "torchvision_model",
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
