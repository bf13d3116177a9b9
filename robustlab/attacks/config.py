"""Attack descriptions that Hydra configs can hold, and the registry that builds them.

Training methods, evaluation suites and benchmarks all call the same objects, so "PGD-10 at
8/255" means one implementation everywhere. A config such as ``{name: pgd, eps: 8/255, steps: 10,
step_size: 2/255}`` becomes ``build_attack(**cfg)``; ``eps``/``step_size`` accept fractions
written as strings ("8/255") because YAML cannot divide.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from fractions import Fraction
from typing import Any

import torch
from torch import Tensor, nn

from robustlab.attacks.autoattack import (
    autoattack,
    backend_provenance,
    check_backend,
    check_version,
)
from robustlab.attacks.norms import check_eps, check_norm
from robustlab.attacks.objectives import Objective
from robustlab.attacks.pgd import check_counts, madry_step_size, pgd
from robustlab.errors import ConfigError, check
from robustlab.registry import resolve
from robustlab.results import format_level


def parse_number(value: float | int | str, field: str) -> float:
    """A float from a number or a fraction string such as ``"8/255"``."""
    if isinstance(value, str):
        try:
            return float(Fraction(value.replace(" ", "")))
        except (ValueError, ZeroDivisionError):
            raise ConfigError(
                f"attack {field} must be a number or a fraction like '8/255', got {value!r}"
            ) from None
    check(
        isinstance(value, (int, float)) and not isinstance(value, bool),
        f"attack {field} must be a number or a fraction like '8/255', got {value!r}",
    )
    return float(value)


@dataclass(frozen=True)
class Attack:
    """A gradient attack (FGSM or PGD) in [0, 1] pixel space; ``attack(model, x, y) -> x_adv``.

    ``name="fgsm"`` is one step of size ε from x (steps=1, no random start, one restart);
    ``name="pgd"`` is Madry's PGD (step_size default 2.5·ε/steps).
    """

    name: str = "pgd"
    norm: str = "linf"
    eps: float = 8 / 255
    steps: int = 10
    step_size: float | None = None
    restarts: int = 1
    random_start: bool = True
    targeted: bool = False
    stop_on_success: bool = False

    def __post_init__(self) -> None:
        name = str(self.name).strip().lower()
        check(name in ("fgsm", "pgd"), f"Attack name must be 'fgsm' or 'pgd', got {self.name!r}")
        object.__setattr__(self, "name", name)
        object.__setattr__(self, "norm", check_norm(self.norm))
        object.__setattr__(self, "eps", check_eps(parse_number(self.eps, "eps")))
        if self.step_size is not None:
            object.__setattr__(self, "step_size", parse_number(self.step_size, "step_size"))
        check_counts(self.steps, self.restarts, self.step_size)
        if name == "fgsm":
            check(
                self.steps == 1
                and not self.random_start
                and self.restarts == 1
                and self.step_size in (None, self.eps),
                "FGSM is a single step of size eps from the clean image; for several steps, "
                "a random start, restarts or another step size use name='pgd'",
            )

    @property
    def effective_step_size(self) -> float:
        """The step actually taken: ε for FGSM, else ``step_size`` or 2.5·ε/steps."""
        if self.name == "fgsm":
            return self.eps
        if self.step_size is not None:
            return self.step_size
        return madry_step_size(self.eps, self.steps)

    @property
    def label(self) -> str:
        """Short human-readable name, e.g. ``"PGD-20 linf eps=8/255"``."""
        head = "FGSM" if self.name == "fgsm" else f"PGD-{self.steps}"
        if self.restarts > 1:
            head += f"x{self.restarts}"
        if self.targeted:
            head += "-targeted"
        return f"{head} {self.norm} eps={format_level(self.eps)}"

    def to_dict(self) -> dict[str, Any]:
        """Plain fields, for results files and ``build_attack(**attack.to_dict())``."""
        return dataclasses.asdict(self)

    def __call__(
        self,
        model: nn.Module,
        x: Tensor,
        y: Tensor,
        generator: torch.Generator | None = None,
        objective: Objective | None = None,
    ) -> Tensor:
        """Adversarial version of ``x``; ``objective`` (default CE) is what the attack ascends."""
        step_size = self.step_size if self.name == "pgd" else (self.eps or None)
        return pgd(
            model,
            x,
            y,
            eps=self.eps,
            step_size=step_size,
            steps=self.steps,
            norm=self.norm,
            random_start=self.random_start,
            restarts=self.restarts,
            targeted=self.targeted,
            objective=objective,
            generator=generator,
            stop_on_success=self.stop_on_success and objective is None,
        )


@dataclass(frozen=True)
class AutoAttack:
    """AutoAttack (Croce & Hein, ICML 2020) as a config object; see :func:`autoattack`.

    Building one checks that ``backend`` is installed (ConfigError naming the pip command), so
    a missing backend stops a run before any work.
    """

    norm: str = "linf"
    eps: float = 8 / 255
    version: str = "standard"
    seed: int = 0
    backend: str = "reference"
    batch_size: int = 250
    name: str = "autoattack"

    def __post_init__(self) -> None:
        object.__setattr__(self, "norm", check_norm(self.norm))
        object.__setattr__(self, "eps", check_eps(parse_number(self.eps, "eps")))
        check_version(self.version)
        check_backend(self.backend)
        check(self.name == "autoattack", "AutoAttack name must be 'autoattack'")

    @property
    def label(self) -> str:
        return f"AutoAttack-{self.version} {self.norm} eps={format_level(self.eps)}"

    def provenance(self) -> dict[str, str]:
        """The implementation that runs: backend, package and package version."""
        return backend_provenance(self.backend)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def __call__(
        self, model: nn.Module, x: Tensor, y: Tensor, generator: torch.Generator | None = None
    ) -> Tensor:
        """Adversarial version of ``x``; randomness comes from ``seed`` (``generator`` unused)."""
        return autoattack(
            model,
            x,
            y,
            eps=self.eps,
            norm=self.norm,
            version=self.version,
            seed=self.seed,
            backend=self.backend,
            batch_size=self.batch_size,
        )


def _fgsm(**kwargs: Any) -> Attack:
    return Attack(name="fgsm", steps=1, random_start=False, **kwargs)


def _pgd(**kwargs: Any) -> Attack:
    return Attack(name="pgd", **kwargs)


ATTACKS: dict[str, Callable[..., Attack | AutoAttack]] = {
    "fgsm": _fgsm,
    "pgd": _pgd,
    "autoattack": AutoAttack,
}
_ACCEPTED: dict[str, tuple[str, ...]] = {
    "fgsm": ("eps", "norm", "targeted"),
    "pgd": (
        "eps",
        "norm",
        "steps",
        "step_size",
        "restarts",
        "random_start",
        "targeted",
        "stop_on_success",
    ),
    "autoattack": ("eps", "norm", "version", "seed", "backend", "batch_size"),
}


def build_attack(name: str, **kwargs: Any) -> Attack | AutoAttack:
    """Build a registered attack: ``build_attack("pgd", eps="8/255", steps=20, step_size="2/255")``.

    Unknown names and keyword arguments raise :class:`ConfigError` listing the valid ones.
    """
    key = str(name).strip().lower()
    factory = resolve(ATTACKS, key, group="attack", imports=False)
    unknown = sorted(set(kwargs) - set(_ACCEPTED[key]))
    check(
        not unknown,
        f"attack {key!r} does not take {unknown}; accepted arguments: {list(_ACCEPTED[key])}",
    )
    return factory(**kwargs)


def training_attack(config: Mapping[str, Any] | None, where: str) -> Attack:
    """The untargeted PGD/FGSM :class:`Attack` a training objective uses, from
    ``{name, norm, eps, steps, ...}``; ``where`` names the config key in errors."""
    options = dict(config or {})
    name = options.pop("name", "pgd")
    check(
        name in ("pgd", "fgsm"),
        f"{where}.name must be 'pgd' or 'fgsm' for training, got {name!r}",
    )
    try:
        attack = build_attack(name, **options)
    except ConfigError as err:
        raise ConfigError(f"{where}: {err}") from None
    check(
        not attack.targeted,
        f"{where}.targeted must be false: a targeted attack towards the true label makes "
        "examples easier, not harder",
    )
    return attack
