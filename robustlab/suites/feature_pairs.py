"""Base for suites that compare the features of an image with those of a distorted copy
(near-duplicate detection and similar-image ranking, Zheng et al., CVPR 2016)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from robustlab.errors import ConfigError, check
from robustlab.perturbations.distortions import DISTORTIONS, distort
from robustlab.randomness import RandomSource
from robustlab.registry import check_known
from robustlab.suites.base import Case, Condition, EvaluationSuite

#: Default (distortion: levels) of the pair suites: the paper's JPEG q = 50 example, a
#: half-size thumbnail, a 2-pixel crop and the σ = 0.04 training noise.
DEFAULT_PAIR_DISTORTIONS: dict[str, list[float]] = {
    "jpeg": [50],
    "thumbnail": [0.5],
    "crop": [2],
    "gaussian_noise": [0.04],
}


def normalized_features(model: nn.Module, x: Tensor) -> Tensor:
    """L2-normalised penultimate features ``model.features(x) / ‖·‖₂`` (distances in [0, 2])."""
    features = getattr(model, "features", None)
    if not callable(features):
        raise ConfigError(
            f"feature-distance suites need a model with .features(x) (penultimate features); "
            f"{type(model).__name__} has none"
        )
    return F.normalize(features(x).flatten(1), dim=1)


class DistortedPairSuite(EvaluationSuite):
    """One condition per (distortion, level) of ``distortions`` (``{name: [levels]}``);
    :meth:`pair_features` gives the normalised features of the clean and distorted batch.

    The "other image" of image i is the next image of the evaluated split, i + 1 (mod N),
    loaded with the batch (``uses_neighbours``), so pairs do not depend on the batching.
    """

    uses_neighbours = True

    def __init__(
        self,
        base,
        *,
        distortions: Mapping[str, Sequence[float]] | None = None,
        **common: Any,
    ):
        super().__init__(base, **common)
        grid = dict(DEFAULT_PAIR_DISTORTIONS if distortions is None else distortions)
        where = f"suite.{self.name}.distortions"
        check(bool(grid), f"{where} is empty; give {{name: [levels]}}, e.g. {{jpeg: [50]}}")
        check_known(grid, DISTORTIONS, group="distortion(s)", where=where)
        self.conditions = [Condition(n, level) for n, levels in grid.items() for level in levels]

    def pair_features(
        self, case: Case, images: Tensor, random: RandomSource
    ) -> tuple[Tensor, Tensor]:
        """Normalised features of ``images`` and of their distorted copies (draws: ``random``)."""
        distorted = distort(images, case.condition.name, case.condition.level, generator=random)
        with torch.no_grad():
            both = normalized_features(case.model, torch.cat([images, distorted]))
        return both.chunk(2)

    @staticmethod
    def has_other_image(case: Case) -> Tensor:
        """(B,) whether image i has another image to pair with (False when N = 1)."""
        return case.next_index != case.index
