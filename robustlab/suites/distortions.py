"""Stability distortions (Zheng et al., CVPR 2016) as an evaluation suite: JPEG, thumbnail,
crop and noise levels, accuracy per (distortion, level)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from torch import Tensor

from robustlab.errors import ConfigError
from robustlab.perturbations.distortions import DEFAULT_LEVELS, DISTORTIONS, distort
from robustlab.randomness import RandomSource
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
        seed: int = 0,
        max_images: int | None = None,
        name: str | None = None,
    ):
        super().__init__(base, seed=seed, max_images=max_images, name=name)
        names = list(distortions or ("jpeg", "thumbnail", "crop", "gaussian_noise"))
        unknown = sorted(set(names) - set(DISTORTIONS)) + sorted(
            set(levels or {}) - set(DISTORTIONS)
        )
        if unknown:
            raise ConfigError(
                f"suite.distortions: unknown distortion(s) {unknown}; valid: {sorted(DISTORTIONS)}"
            )
        grid = {**DEFAULT_LEVELS, **dict(levels or {})}
        self.conditions = [Condition(n, level) for n in names for level in grid[n]]

    def perturb(self, x: Tensor, condition: Condition, random: RandomSource) -> Tensor:
        return distort(x, condition.name, condition.level, generator=random)
