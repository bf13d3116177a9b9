"""Stability distortions (Zheng et al., CVPR 2016) as an evaluation suite: JPEG, thumbnail,
crop and noise levels, accuracy per (distortion, level)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from torch import Tensor

from robustlab.perturbations.distortions import DEFAULT_LEVELS, DISTORTIONS, distort
from robustlab.randomness import RandomSource
from robustlab.registry import check_known
from robustlab.suites.base import Condition, PerturbationSuite


class DistortionSuite(PerturbationSuite):
    """Accuracy under each distortion of ``distortions`` at each of its ``levels``."""

    name = "distortions"

    def __init__(
        self,
        base,
        *,
        distortions: Sequence[str] | None = None,
        levels: Mapping[str, Sequence[float]] | None = None,
        **common: Any,
    ):
        super().__init__(base, **common)
        names = list(distortions or ("jpeg", "thumbnail", "crop", "gaussian_noise"))
        check_known(
            [*names, *(levels or {})], DISTORTIONS, group="distortion(s)", where="suite.distortions"
        )
        grid = {**DEFAULT_LEVELS, **dict(levels or {})}
        self.conditions = [Condition(n, level) for n in names for level in grid[n]]

    def perturb(self, x: Tensor, condition: Condition, random: RandomSource) -> Tensor:
        return distort(x, condition.name, condition.level, generator=random)
