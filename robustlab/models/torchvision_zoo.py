"""torchvision's ImageNet classifiers (ResNet-50, Inception-v3, ViT, ...) as robustlab backbones.

``torchvision_model(arch, weights=None)`` builds ``torchvision.models.<arch>``, optionally with
pretrained ``weights`` (a torchvision weight name such as ``"IMAGENET1K_V1"``, or ``"DEFAULT"``;
downloaded once into the torch hub cache, ``$TORCH_HOME``). The network's last linear layer is
the backbone's ``classifier``; when ``num_classes`` differs from that layer's output size it is
replaced by a freshly initialised ``nn.Linear(feature_dim, num_classes)``, so a pretrained
network fine-tunes on another label set. ``features(x)`` runs the network with that layer
replaced by the identity: the penultimate features the pair suites and embeddings use.
Inception-v3 and GoogLeNet are built without their auxiliary heads (robustlab methods train on
the main logits); with pretrained weights they keep torchvision's ``transform_input``, which
expects inputs normalised with the ImageNet mean/std (``data=imagenet`` uses them). Grey-scale
inputs (``in_channels=1``) are repeated over the three colour channels.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from robustlab.errors import ConfigError, check
from robustlab.models.base import Backbone

#: architectures whose auxiliary classifier heads are switched off
AUX_HEADS = ("inception_v3", "googlenet")


def _classification_archs() -> list[str]:
    import torchvision.models as tvm

    return sorted(tvm.list_models(module=tvm))


def _last_linear(model: nn.Module) -> tuple[nn.Module, str, nn.Linear]:
    """(parent, attribute, layer) of the last ``nn.Linear`` registered in ``model``."""
    found = None
    for name, module in model.named_modules():
        if isinstance(module, nn.Linear):
            found = name
    if found is None:
        raise ConfigError(f"{type(model).__name__} has no linear classifier layer to replace")
    parent_name, _, attribute = found.rpartition(".")
    parent = model.get_submodule(parent_name) if parent_name else model
    return parent, attribute, getattr(parent, attribute)


class TorchvisionBackbone(Backbone):
    """A torchvision classifier split into ``features`` and its last linear ``classifier``."""

    def __init__(
        self, arch: str, num_classes: int, in_channels: int = 3, weights: str | None = None
    ) -> None:
        super().__init__(num_classes, in_channels)
        import torchvision.models as tvm

        archs = _classification_archs()
        check(
            arch in archs,
            f"model.arch={arch!r} is not a torchvision classification model; choose one of "
            + ", ".join(archs),
        )
        check(in_channels in (1, 3), f"torchvision models take 1 or 3 channels, got {in_channels}")
        kwargs: dict[str, Any] = {"aux_logits": False} if arch in AUX_HEADS else {}
        if weights is None:
            kwargs["num_classes"] = num_classes
            if arch in AUX_HEADS:
                kwargs["init_weights"] = True  # torchvision's own (truncated normal) init
        else:
            try:
                weights = tvm.get_model_weights(arch)[weights]
            except KeyError:
                names = ", ".join(w.name for w in tvm.get_model_weights(arch))
                raise ConfigError(
                    f"model.weights={weights!r} is not a weight set of {arch}; choose one of "
                    f"{names}, DEFAULT, or null (random init)"
                ) from None
        self.arch, self.weights = arch, None if weights is None else weights.name
        self.net = tvm.get_model(arch, weights=weights, **kwargs)
        parent, attribute, head = _last_linear(self.net)
        if head.out_features != num_classes:
            head = nn.Linear(head.in_features, num_classes)
        setattr(parent, attribute, nn.Identity())
        self.classifier = head
        self.feature_dim = head.in_features
        layers = ("layer1", "layer2", "layer3", "layer4")  # the ResNet family's stages
        if all(hasattr(self.net, name) for name in layers):
            self.stage_names = tuple(f"net.{name}" for name in layers)

    def features(self, x: torch.Tensor) -> torch.Tensor:
        """Penultimate features; a grey-scale input is repeated over the 3 RGB channels."""
        return self.net(x.expand(-1, 3, -1, -1) if x.shape[1] == 1 else x)


def torchvision_model(
    num_classes: int, in_channels: int = 3, arch: str = "resnet50", weights: str | None = None
) -> TorchvisionBackbone:
    """``torchvision.models.<arch>`` (pretrained ``weights`` or random init) as a backbone."""
    return TorchvisionBackbone(arch, num_classes, in_channels, weights)
