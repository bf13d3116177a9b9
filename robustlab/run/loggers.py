"""Experiment loggers chosen by the ``logger`` config group (several may be active).

``csv`` and ``tensorboard`` write into the run folder. ``wandb`` runs offline unless
``logger.wandb.mode=online``; if an online run cannot start (no key, no network) it falls back
to offline with a warning — a run never fails because of its dashboard.

One job, one wandb run: :func:`job_scope` (entered by the apps around every Hydra job) names and
groups the job's run after the sweep, puts the job's choices, seed and overrides into its config,
and finishes the run when the job ends, whether it succeeded or failed. Without it a later job of
the same process (a sequential sweep, a reused joblib worker) would log into the first job's run.
"""

from __future__ import annotations

import os
import sys
import uuid
import warnings
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from lightning_fabric.utilities.exceptions import MisconfigurationException
from omegaconf import DictConfig, OmegaConf
from pytorch_lightning.loggers import CSVLogger, Logger, TensorBoardLogger, WandbLogger

from robustlab.errors import ConfigError
from robustlab.registry import check_keywords, check_types, resolve


@dataclass
class JobIdentity:
    """What a dashboard needs to tell the jobs of a sweep apart."""

    name: str | None = None  #: the job's override string, e.g. ``method.optimizer.lr=0.1,seed=1``
    group: str | None = None  #: the sweep folder (multirun only)
    config: dict[str, Any] = field(default_factory=dict)  #: choices, seed, overrides, full config


_job: JobIdentity | None = None


@contextmanager
def job_scope(identity: JobIdentity) -> Iterator[None]:
    """Loggers built inside take ``identity``; the job's wandb run is finished on the way out
    (exit code 1 when the job raised)."""
    global _job
    _job = identity
    failed = True
    try:
        yield
        failed = False
    finally:
        _job = None
        finish_wandb(exit_code=1 if failed else 0)


def finish_wandb(exit_code: int = 0) -> None:
    """Finish the process's current wandb run, if any (so the next job starts its own)."""
    wandb = sys.modules.get("wandb")
    if wandb is not None and getattr(wandb, "run", None) is not None:
        wandb.finish(exit_code=exit_code)


def wandb_logger(
    run_dir: Path,
    project: str = "robustlab",
    entity: str | None = None,
    name: str | None = None,
    group: str | None = None,
    tags: list | None = None,
    mode: str = "offline",
    log_model: bool = False,
    *,
    start: bool = True,
    resume_run: bool = False,
) -> WandbLogger:
    """A wandb logger saving under ``run_dir``; an online run that cannot start goes offline.

    ``name``/``group`` default to the current job's (see :func:`job_scope`). ``start=False``
    builds the logger without contacting wandb (to check a config before any work).
    ``resume_run``: continue the wandb run this run folder logged into before (a resumed
    training run), so its history stays one run.
    """
    # "dryrun" is wandb's older name for offline (Lightning's WandbLogger(offline=True) still
    # sets WANDB_MODE=dryrun in the process environment, which the config reads)
    mode = "offline" if mode == "dryrun" else mode
    if mode not in ("online", "offline", "disabled"):
        raise ConfigError(f"logger.wandb.mode={mode!r}; choose online, offline or disabled")
    job = _job or JobIdentity()
    identity = {} if not start else run_identity(Path(run_dir), resume_run)
    kwargs: dict[str, Any] = dict(
        **identity,
        project=project,
        entity=entity,
        name=name or job.name,
        group=group or job.group,
        tags=list(tags or []),
        save_dir=str(run_dir),
        log_model=log_model,
        config=job.config or None,
    )
    os.environ.setdefault("WANDB_SILENT", "true")
    if mode == "online" and start:
        logger = _without_anonymous(WandbLogger(mode="online", **kwargs))
        try:
            logger.experiment  # noqa: B018 - starts the run now, so failures surface here
            return logger
        except Exception as err:  # no key / no network: keep the run, lose only the sync
            warnings.warn(
                f"wandb online run could not start ({err}); logging offline instead", stacklevel=2
            )
            mode = "offline"
    return _without_anonymous(WandbLogger(mode=mode, **kwargs))


def run_identity(run_dir: Path, resume: bool) -> dict[str, str]:
    """The wandb run id of ``run_dir`` (kept in ``wandb/run-id``): the stored one with
    ``resume="allow"`` when resuming, else a new id, stored for a later resume."""
    path = run_dir / "wandb" / "run-id"
    if resume and path.is_file():
        return {"id": path.read_text().strip(), "resume": "allow"}
    run_id = uuid.uuid4().hex[:8]  # wandb's id alphabet: lower-case letters and digits
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(run_id)
    return {"id": run_id}


def _without_anonymous(logger: WandbLogger) -> WandbLogger:
    """Lightning passes ``anonymous=None`` to ``wandb.init``, which recent wandb versions answer
    with a deprecation warning on every run; the setting does nothing, so leave it out."""
    init = getattr(logger, "_wandb_init", None)
    if isinstance(init, dict) and init.get("anonymous") is None:
        init.pop("anonymous", None)
    return logger


def _csv_logger(run_dir: Path, **options: Any) -> CSVLogger:
    return CSVLogger(save_dir=str(run_dir), name="csv", version="", **options)


def _tensorboard_logger(run_dir: Path, **options: Any) -> TensorBoardLogger:
    return TensorBoardLogger(save_dir=str(run_dir), name="tensorboard", version="", **options)


#: logger name -> (factory taking the run folder, the class whose signature checks the options)
LOGGERS: dict[str, tuple[Callable[..., Logger], Callable[..., Any]]] = {
    "csv": (_csv_logger, CSVLogger),
    "tensorboard": (_tensorboard_logger, TensorBoardLogger),
    "wandb": (wandb_logger, wandb_logger),
}
#: keywords robustlab sets itself (not user options)
_PROVIDED = {"wandb": ("run_dir", "start", "resume_run")}
_FOLDER_KEYS = ("save_dir", "name", "version")


def build_loggers(
    cfg: Mapping[str, Mapping] | None, run_dir: Path, *, start: bool = True, resume: bool = False
) -> list[Logger]:
    """One logger per entry of ``cfg`` (``{"csv": {...}, "wandb": {...}}``), options checked
    against the logger's signature and types. ``start=False``: build without contacting wandb."""
    if isinstance(cfg, DictConfig):  # plain containers, so options type-check as lists/dicts
        cfg = OmegaConf.to_container(cfg, resolve=True)
    loggers: list[Logger] = []
    for name, options in (cfg or {}).items():
        factory, signature = resolve(LOGGERS, name, group="logger", imports=False, ordered=True)
        options = dict(options or {})
        where = f"logger.{name}"
        provided = _PROVIDED.get(name, _FOLDER_KEYS)
        blocked = sorted(set(options) & set(provided))
        if blocked:
            raise ConfigError(f"{where}: robustlab sets {blocked} itself; leave them out")
        check_keywords(signature, where, options, provided=provided)
        check_types(signature, where, options)
        if name == "wandb":
            options.update(start=start, resume_run=resume)
        try:
            loggers.append(factory(run_dir, **options))
        except MisconfigurationException as err:
            raise ConfigError(f"{where}: {str(err).splitlines()[0]}") from None
    return loggers
