"""Check every config group before any data is loaded or any step is taken.

A mistake found after training (a negative ε in a suite, ``trainer.max_epochs=abc``) costs the
whole run; here each group is checked up front by the code that will use it, so no rule is
written twice:

- ``data``: the datamodule is constructed (its ``__init__`` checks every option; files are
  only read by ``setup``).
- ``model`` and ``method``: the model is built on PyTorch's ``meta`` device (no memory, no
  initialisation work) with stand-in class and channel counts, and the method is constructed
  around it — the name, the keywords and the range checks of both are the real ones.
- ``suite``: every suite is constructed on the unloaded datamodule.
- ``trainer``: values are checked against the types of ``pytorch_lightning.Trainer``'s
  signature, then the trainer is constructed (Lightning's own checks: accelerator, precision,
  devices).
- ``logger`` and ``callbacks``: constructed as the run will construct them (wandb not started).

Only :class:`~robustlab.errors.RobustlabError` counts as a verdict: an unexpected exception from a
stand-in (a method that needs real tensors) is left for the real construction to report.
"""

from __future__ import annotations

import logging
import warnings
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytorch_lightning as pl
import torch
from omegaconf import DictConfig, OmegaConf

from robustlab.data import ImageDataModule, build_datamodule
from robustlab.errors import ConfigError, RobustlabError, check
from robustlab.methods import build_method, check_method_requirements
from robustlab.models import ImageClassifier, build_backbone, resolve_model
from robustlab.registry import check_keywords, check_types
from robustlab.run.callbacks import build_callbacks
from robustlab.run.loggers import build_loggers
from robustlab.run.trainer import OWN_KEYS, build_trainer
from robustlab.suites.runner import build_suites

log = logging.getLogger("robustlab")

#: Class and channel counts of the stand-in model (the real ones need the data files).
_STAND_IN_CLASSES = 10
_STAND_IN_CHANNELS = 3


def _container(node: Any) -> Any:
    return OmegaConf.to_container(node, resolve=True) if isinstance(node, DictConfig) else node


@contextmanager
def _quiet_lightning() -> Iterator[None]:
    """Constructing a trainer logs the device summary; the real trainer logs it once."""
    loggers = [logging.getLogger(n) for n in ("pytorch_lightning", "lightning.pytorch")]
    levels = [logger.level for logger in loggers]
    for logger in loggers:
        logger.setLevel(logging.WARNING)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            yield
    finally:
        for logger, level in zip(loggers, levels, strict=True):
            logger.setLevel(level)


def validate_data(data_cfg: Mapping) -> ImageDataModule:
    """The (unloaded) datamodule ``data_cfg`` describes; its constructor checks the options."""
    kwargs = dict(_container(data_cfg))
    return build_datamodule(kwargs.pop("name"), **kwargs)


def validate_model_and_method(model_cfg: Mapping, method_cfg: Mapping) -> None:
    """Build the model on the meta device and the method around it (real checks, no work).

    Pretrained ``model.weights`` would be a download, so that case checks the model's keys
    only and skips the method's stand-in.
    """
    model_kwargs = dict(_container(model_cfg))
    method_kwargs = dict(_container(method_cfg))
    model_name = model_kwargs.pop("name")
    if model_kwargs.get("weights"):
        check_keywords(
            resolve_model(model_name),
            f"model={model_name}",
            model_kwargs,
            provided=("num_classes", "in_channels"),
        )
        return
    try:
        with torch.device("meta"):  # parameters without storage or initialisation work
            backbone = build_backbone(
                model_name, _STAND_IN_CLASSES, _STAND_IN_CHANNELS, **model_kwargs
            )
        model = ImageClassifier(backbone, mean=0.5, std=0.25)
        with warnings.catch_warnings():  # init_from into meta tensors: copies are no-ops
            warnings.simplefilter("ignore")
            build_method(method_kwargs.pop("name"), model, **method_kwargs)
    except RobustlabError:
        raise
    except Exception as error:  # a stand-in limitation, not the user's mistake
        log.debug(f"validation: method stand-in skipped ({type(error).__name__}: {error})")


def validate_suites(suite_cfg: Mapping | None, datamodule: ImageDataModule, seed: int) -> None:
    """Construct every suite on the unloaded datamodule, as the evaluation will."""
    build_suites(_container(suite_cfg), datamodule, seed=seed)


def validate_trainer(trainer_cfg: Mapping, app_module: str) -> None:
    """Types against ``pl.Trainer``'s signature, then Lightning's own construction checks."""
    kwargs = dict(_container(trainer_cfg))
    check_types(pl.Trainer, "trainer", {k: v for k, v in kwargs.items() if k not in OWN_KEYS})
    try:
        with _quiet_lightning():
            build_trainer(kwargs, app_module=app_module)
    except RobustlabError:
        raise
    except (ValueError, TypeError) as error:  # Lightning's MisconfigurationException and kin
        message = str(error).strip().splitlines()[0] if str(error).strip() else repr(error)
        raise ConfigError(f"trainer: {message}") from None


def validate_seed(seed: object) -> int:
    """The run's ``seed``: a non-negative integer."""
    check(
        isinstance(seed, int) and not isinstance(seed, bool) and seed >= 0,
        f"seed must be a non-negative integer, got {seed!r}",
    )
    return int(seed)


def validate_skip_finished(value: object) -> None:
    check(isinstance(value, bool), f"skip_finished must be true or false, got {value!r}")


def validate_train(cfg: DictConfig, run_dir: Path) -> None:
    """Every group of a ``robustlab-train`` run; raises a one-line ConfigError on the first
    mistake. Reads no data files and takes no step."""
    validate_skip_finished(cfg.get("skip_finished", False))
    seed = validate_seed(cfg.get("seed"))
    datamodule = validate_data(cfg.data)
    validate_model_and_method(cfg.model, cfg.method)
    check_method_requirements(cfg)  # views, groups; test=false suite=[] for non-classifiers
    validate_suites(cfg.get("suite"), datamodule, seed)
    validate_trainer(cfg.trainer, "robustlab.cli.train")
    loggers = build_loggers(_container(cfg.get("logger")), run_dir, start=False)
    build_callbacks(
        _container(cfg.callbacks),
        run_dir,
        has_validation=datamodule.val_fraction > 0,
        has_logger=bool(loggers),
    )


def validate_eval(cfg: DictConfig, run_cfg: DictConfig, run_dir: Path) -> None:
    """Every group of a ``robustlab-eval`` run: the data of the checkpoint's config merged with
    this command's ``data`` keys, the suites, the trainer and the loggers."""
    validate_skip_finished(cfg.get("skip_finished", False))
    seed = validate_seed(cfg.get("seed"))
    datamodule = validate_data(run_cfg.data)
    validate_suites(cfg.get("suite"), datamodule, seed)
    validate_trainer(cfg.trainer, "robustlab.cli.evaluate")
    build_loggers(_container(cfg.get("logger")), run_dir, start=False)
