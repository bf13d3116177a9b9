"""Experiment loggers chosen by the ``logger`` config group (several may be active).

``csv`` and ``tensorboard`` write into the run folder. ``wandb`` runs offline unless
``logger.wandb.mode=online``; if an online run cannot start (no key, no network) it falls back
to offline with a warning — a run never fails because of its dashboard.
"""

from __future__ import annotations

import os
import warnings
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from pytorch_lightning.loggers import CSVLogger, Logger, TensorBoardLogger, WandbLogger

from robustlab.errors import ConfigError

LOGGERS = ("csv", "tensorboard", "wandb")


def wandb_logger(
    run_dir: Path,
    project: str = "robustlab",
    entity: str | None = None,
    name: str | None = None,
    group: str | None = None,
    tags: list | None = None,
    mode: str = "offline",
    log_model: bool = False,
) -> WandbLogger:
    """A wandb logger saving under ``run_dir``; an online run that cannot start goes offline."""
    if mode not in ("online", "offline", "disabled"):
        raise ConfigError(f"logger.wandb.mode={mode!r}; choose online, offline or disabled")
    kwargs: dict[str, Any] = dict(
        project=project,
        entity=entity,
        name=name,
        group=group,
        tags=list(tags or []),
        save_dir=str(run_dir),
        log_model=log_model,
    )
    os.environ.setdefault("WANDB_SILENT", "true")
    if mode == "online":
        logger = _without_anonymous(WandbLogger(mode="online", **kwargs))
        try:
            logger.experiment  # noqa: B018 - starts the run now, so failures surface here
            return logger
        except Exception as err:  # no key / no network: keep the run, lose only the sync
            warnings.warn(
                f"wandb online run could not start ({err}); logging offline instead", stacklevel=2
            )
    return _without_anonymous(WandbLogger(mode=mode, **kwargs))


def _without_anonymous(logger: WandbLogger) -> WandbLogger:
    """Lightning passes ``anonymous=None`` to ``wandb.init``, which recent wandb versions answer
    with a deprecation warning on every run; the setting does nothing, so leave it out."""
    init = getattr(logger, "_wandb_init", None)
    if isinstance(init, dict) and init.get("anonymous") is None:
        init.pop("anonymous", None)
    return logger


def build_loggers(cfg: Mapping[str, Mapping] | None, run_dir: Path) -> list[Logger]:
    """One logger per entry of ``cfg`` (``{"csv": {...}, "wandb": {...}}``)."""
    loggers: list[Logger] = []
    for name, options in (cfg or {}).items():
        options = dict(options or {})
        if name == "csv":
            loggers.append(CSVLogger(save_dir=str(run_dir), name="csv", version="", **options))
        elif name == "tensorboard":
            loggers.append(
                TensorBoardLogger(save_dir=str(run_dir), name="tensorboard", version="", **options)
            )
        elif name == "wandb":
            loggers.append(wandb_logger(run_dir, **options))
        else:
            raise ConfigError(f"unknown logger {name!r}; valid choices: {', '.join(LOGGERS)}")
    return loggers
