"""Optimisers and learning-rate schedules built from config.

Schedules are multipliers of the base learning rate: a linear warm-up over ``warmup_epochs``,
then ``cosine`` (lr·[min_ratio + (1−min_ratio)·½(1+cos(π·t))]), ``multistep`` (lr·γ^k after
the k-th milestone epoch) or ``constant``; applied after every optimiser step
(``interval: step``, the default) or after every epoch (``interval: epoch``).

A method has one optimiser (``method.optimizer`` + ``method.scheduler``) or several named ones
(``method.optimizers: {generator: {name, lr, betas, ..., scheduler: {...}}, ...}``), each with
its own schedule: :func:`named_optimizer_configs`.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field

import torch

from robustlab.errors import ConfigError, check

OPTIMIZERS = ("sgd", "adam", "adamw")
SCHEDULES = ("cosine", "multistep", "constant")
INTERVALS = ("step", "epoch")


@dataclass(frozen=True)
class OptimizerConfig:
    name: str = "sgd"
    lr: float = 0.1
    momentum: float = 0.9
    nesterov: bool = False
    weight_decay: float = 5e-4
    betas: Sequence[float] = (0.9, 0.999)
    #: the config path named in error messages (not a config key)
    where: str = field(default="method.optimizer", compare=False, repr=False)

    def __post_init__(self) -> None:
        w = self.where
        check(
            self.name in OPTIMIZERS,
            f"{w}.name={self.name!r} is not known; choose one of {list(OPTIMIZERS)}",
        )
        check(self.lr > 0, f"{w}.lr must be > 0, got {self.lr}")
        check(self.weight_decay >= 0, f"{w}.weight_decay must be >= 0, got {self.weight_decay}")
        check(0 <= self.momentum < 1, f"{w}.momentum must be in [0, 1), got {self.momentum}")
        check(
            not (self.nesterov and self.momentum == 0),
            f"{w}.nesterov=true needs {w}.momentum > 0",
        )
        check(
            len(self.betas) == 2 and all(0 <= b < 1 for b in self.betas),
            f"{w}.betas must be two numbers in [0, 1), got {list(self.betas)}",
        )


@dataclass(frozen=True)
class ScheduleConfig:
    name: str = "cosine"
    warmup_epochs: float = 0.0
    milestones: Sequence[float] = field(default_factory=tuple)
    gamma: float = 0.1
    min_lr_ratio: float = 0.0
    interval: str = "step"
    #: the config path named in error messages (not a config key)
    where: str = field(default="method.scheduler", compare=False, repr=False)

    def __post_init__(self) -> None:
        w = self.where
        check(
            self.name in SCHEDULES,
            f"{w}.name={self.name!r} is not known; choose one of {list(SCHEDULES)}",
        )
        check(
            self.warmup_epochs >= 0,
            f"{w}.warmup_epochs must be >= 0, got {self.warmup_epochs}",
        )
        check(0 < self.gamma <= 1, f"{w}.gamma must be in (0, 1], got {self.gamma}")
        check(
            0 <= self.min_lr_ratio <= 1,
            f"{w}.min_lr_ratio must be in [0, 1], got {self.min_lr_ratio}",
        )
        check(
            list(self.milestones) == sorted(self.milestones),
            f"{w}.milestones must be increasing, got {list(self.milestones)}",
        )
        check(
            self.interval in INTERVALS,
            f"{w}.interval={self.interval!r} is not known; choose one of {list(INTERVALS)}",
        )


def _from_mapping(cls, cfg: Mapping | None, where: str):
    check(
        cfg is None or isinstance(cfg, Mapping),
        f"{where} must be a mapping of options, got {cfg!r}",
    )
    cfg = dict(cfg or {})
    known = set(cls.__dataclass_fields__) - {"where"}
    unknown = sorted(set(cfg) - known)
    if unknown:
        raise ConfigError(f"{where} has unknown key(s) {unknown}; valid keys are {sorted(known)}")
    return cls(**cfg, where=where)


def optimizer_config(cfg: Mapping | None, where: str = "method.optimizer") -> OptimizerConfig:
    return _from_mapping(OptimizerConfig, cfg, where)


def schedule_config(cfg: Mapping | None, where: str = "method.scheduler") -> ScheduleConfig:
    return _from_mapping(ScheduleConfig, cfg, where)


def named_optimizer_configs(
    cfg: Mapping[str, Mapping] | None, where: str = "method.optimizers"
) -> dict[str, tuple[OptimizerConfig, ScheduleConfig]]:
    """``{name: {optimizer keys..., scheduler: {schedule keys...}}}`` → ``{name: (optimizer,
    schedule)}`` in the given order; each name's keys checked like ``method.optimizer``'s."""
    check(
        isinstance(cfg, Mapping) and len(cfg) > 0,
        f"{where} must map optimiser names to their options, e.g. "
        f"{where}.generator.lr=2e-4; got {cfg!r}",
    )
    configs = {}
    for name, options in cfg.items():
        check(
            options is None or isinstance(options, Mapping),
            f"{where}.{name} must be a mapping of optimiser options, got {options!r}",
        )
        options = dict(options or {})
        schedule = schedule_config(options.pop("scheduler", None), f"{where}.{name}.scheduler")
        configs[str(name)] = (optimizer_config(options, f"{where}.{name}"), schedule)
    return configs


def build_optimizer(params: Iterable, cfg: OptimizerConfig) -> torch.optim.Optimizer:
    """The optimiser named by ``cfg`` over ``params`` (tensors or param-group dicts)."""
    if cfg.name == "sgd":
        return torch.optim.SGD(
            params,
            lr=cfg.lr,
            momentum=cfg.momentum,
            nesterov=cfg.nesterov,
            weight_decay=cfg.weight_decay,
        )
    optimizer_cls = torch.optim.Adam if cfg.name == "adam" else torch.optim.AdamW
    return optimizer_cls(params, lr=cfg.lr, betas=tuple(cfg.betas), weight_decay=cfg.weight_decay)


def lr_multiplier(
    step: int, cfg: ScheduleConfig, steps_per_epoch: float, total_steps: int
) -> float:
    """Learning-rate multiplier at optimisation ``step`` (0-based)."""
    warmup = cfg.warmup_epochs * steps_per_epoch
    if step < warmup:
        return (step + 1) / warmup
    if cfg.name == "constant":
        return 1.0
    if cfg.name == "multistep":
        epoch = step / steps_per_epoch
        return cfg.gamma ** sum(epoch >= m for m in cfg.milestones)
    progress = min(1.0, (step - warmup) / max(1.0, total_steps - warmup))
    cosine = 0.5 * (1.0 + math.cos(math.pi * progress))
    return cfg.min_lr_ratio + (1.0 - cfg.min_lr_ratio) * cosine


def build_scheduler(
    optimizer: torch.optim.Optimizer, cfg: ScheduleConfig, *, total_steps: int, max_epochs: int
) -> torch.optim.lr_scheduler.LambdaLR:
    """A LambdaLR stepped once per optimiser step (``cfg.interval == "step"``; ``total_steps``
    is the number of optimiser steps of the whole run) or once per epoch (``"epoch"``)."""
    if cfg.interval == "epoch":
        total_steps, steps_per_epoch = max(1, max_epochs), 1.0
    else:
        steps_per_epoch = max(1.0, total_steps / max(1, max_epochs))
        total_steps = max(1, total_steps)

    # A closure, not a callable object: LambdaLR then keeps it out of the checkpoint, which
    # stays loadable with ``torch.load(weights_only=True)``.
    def multiplier(step: int) -> float:
        return lr_multiplier(step, cfg, steps_per_epoch, total_steps)

    return torch.optim.lr_scheduler.LambdaLR(optimizer, multiplier)
