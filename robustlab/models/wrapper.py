"""The classifier wrapper that owns input normalisation, and forward-hook feature extraction.

Images enter every model in [0, 1] pixel space; :class:`ImageClassifier` applies the dataset's
per-channel normalisation z = (x - mean) / std inside the model, so data pipelines, corruptions
and attacks never see normalised tensors and checkpoints carry their normalisation.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import Any

import torch
from torch import nn

from robustlab.errors import ConfigError, check


def _channel_stats(values: float | Sequence[float], name: str) -> torch.Tensor:
    if isinstance(values, torch.Tensor):
        values = values.flatten().tolist()
    seq = [values] if isinstance(values, (int, float)) else list(values)
    check(len(seq) >= 1, f"{name} needs one value per input channel, got an empty sequence")
    try:
        stats = [float(v) for v in seq]
    except (TypeError, ValueError):
        raise ConfigError(f"{name} must be numbers (one per channel), got {values!r}") from None
    check(all(math.isfinite(v) for v in stats), f"{name} must be finite, got {stats}")
    return torch.tensor(stats, dtype=torch.float32).view(1, -1, 1, 1)


class ImageClassifier(nn.Module):
    """logits = backbone((x - mean) / std) for images x in [0, 1], per-channel mean and std.

    ``mean`` and ``std`` are buffers of shape (1, C, 1, 1) (so they follow ``.to()`` and are
    saved in checkpoints); a single value is broadcast over all channels.
    """

    mean: torch.Tensor
    std: torch.Tensor

    def __init__(
        self,
        backbone: nn.Module,
        mean: float | Sequence[float],
        std: float | Sequence[float],
    ) -> None:
        super().__init__()
        mean_t = _channel_stats(mean, "mean")
        std_t = _channel_stats(std, "std")
        check(
            mean_t.shape == std_t.shape,
            f"mean and std need the same number of channels, got {mean_t.numel()} and "
            f"{std_t.numel()}",
        )
        check(bool((std_t > 0).all()), f"std must be positive, got {std_t.flatten().tolist()}")
        expected = getattr(backbone, "in_channels", None)
        check(
            not isinstance(expected, int) or mean_t.shape[1] in (1, expected),
            f"mean/std have {mean_t.shape[1]} channels but the backbone expects {expected} input "
            f"channels; give one value or {expected} values",
        )
        for attr in ("features", "classifier", "feature_dim"):
            check(
                hasattr(backbone, attr),
                f"{type(backbone).__name__} lacks '{attr}'; a backbone needs features(x), "
                f"feature_dim and classifier (see robustlab.models.base.Backbone)",
            )
        self.backbone = backbone
        self.register_buffer("mean", mean_t)
        self.register_buffer("std", std_t)

    def normalize(self, x: torch.Tensor) -> torch.Tensor:
        """(x - mean) / std, per channel."""
        return (x - self.mean) / self.std

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Logits (B, K) for images x in [0, 1]."""
        return self.backbone(self.normalize(x))

    def features(self, x: torch.Tensor) -> torch.Tensor:
        """Penultimate features (B, feature_dim) for images x in [0, 1]."""
        return self.backbone.features(self.normalize(x))

    @property
    def feature_dim(self) -> int:
        return int(self.backbone.feature_dim)

    @property
    def classifier(self) -> nn.Linear:
        return self.backbone.classifier

    @property
    def num_classes(self) -> int:
        return int(self.backbone.classifier.out_features)

    @property
    def in_channels(self) -> int:
        """Input channels the backbone expects (else the number of mean/std values)."""
        return int(getattr(self.backbone, "in_channels", self.mean.shape[1]))


def resolve_submodule(module: nn.Module, path: str) -> nn.Module:
    """The submodule at dotted ``path`` (e.g. ``"backbone.layer3.0.conv1"``); ``""`` is ``module``.

    Raises ConfigError naming the first missing part and listing the children available there.
    """
    current = module
    walked: list[str] = []
    for part in path.split(".") if path else []:
        children = dict(current.named_children())
        if part not in children:
            where = ".".join(walked) or "<root>"
            names = ", ".join(children) or "none (it is a leaf module)"
            raise ConfigError(
                f"no submodule '{path}' in {type(module).__name__}: '{where}' "
                f"({type(current).__name__}) has no child '{part}'; its children are: {names}"
            )
        current = children[part]
        walked.append(part)
    return current


class FeatureExtractor:
    """Forward hooks that record the outputs of submodules named by dotted paths (in the style
    of torchdistill), so methods read intermediate features without rewriting a backbone.

    Every forward of the hooked module (through this object or directly) stores each hooked
    layer's latest output in :attr:`features`; calling the extractor clears them, runs the
    module and returns ``(output, {path: feature})``. Call :meth:`remove` (or use it as a
    context manager) to detach the hooks. Not an ``nn.Module``, so holding one as an attribute
    does not duplicate parameters in a state dict.
    """

    def __init__(
        self, module: nn.Module, layer_paths: str | Sequence[str], detach: bool = False
    ) -> None:
        paths = [layer_paths] if isinstance(layer_paths, str) else list(layer_paths)
        check(len(paths) >= 1, "feature_extractor needs at least one layer path")
        self.module = module
        self.layer_paths = tuple(paths)
        self.detach = detach
        self.features: dict[str, Any] = {}
        targets = [resolve_submodule(module, p) for p in paths]
        self._handles = [
            target.register_forward_hook(self._recorder(p))
            for p, target in zip(paths, targets, strict=True)
        ]

    def _recorder(self, path: str) -> Callable[[nn.Module, Any, Any], None]:
        def hook(_module: nn.Module, _inputs: Any, output: Any) -> None:
            if self.detach and isinstance(output, torch.Tensor):
                output = output.detach()
            self.features[path] = output

        return hook

    def __call__(self, *args: Any, **kwargs: Any) -> tuple[Any, dict[str, Any]]:
        """Run the module; return its output and the hooked layers' outputs by path."""
        self.features = {}
        output = self.module(*args, **kwargs)
        return output, dict(self.features)

    def remove(self) -> None:
        """Detach all hooks; the module behaves as before."""
        for handle in self._handles:
            handle.remove()
        self._handles = []

    def __enter__(self) -> FeatureExtractor:
        return self

    def __exit__(self, *exc: object) -> None:
        self.remove()


def feature_extractor(
    module: nn.Module, layer_path: str | Sequence[str], detach: bool = False
) -> FeatureExtractor:
    """Hook ``module``'s submodule(s) at dotted ``layer_path``; ``fx(x)`` -> (output, features).

    Example: ``out, feats = feature_extractor(model, "backbone.layer3")(x)``;
    ``feats["backbone.layer3"]`` is that stage's output.
    """
    return FeatureExtractor(module, layer_path, detach=detach)
