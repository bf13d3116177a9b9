"""Lightning callbacks chosen by the ``callbacks`` config group."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

from pytorch_lightning.callbacks import (
    Callback,
    EarlyStopping,
    LearningRateMonitor,
    ModelCheckpoint,
)

from robustlab.errors import ConfigError, check


def build_callbacks(
    cfg: Mapping, run_dir: Path, *, has_validation: bool, has_logger: bool
) -> tuple[list[Callback], ModelCheckpoint]:
    """Checkpointing (best by ``monitor`` + ``last.ckpt``), LR monitor, early stopping.

    Without a validation set there is nothing to rank checkpoints by: the last one is kept
    and counts as the best.
    """
    known = {"checkpoint", "lr_monitor", "early_stopping"}
    unknown = sorted(set(cfg) - known)
    if unknown:
        raise ConfigError(f"callbacks has unknown key(s) {unknown}; valid keys: {sorted(known)}")
    ckpt = dict(cfg["checkpoint"])
    check(
        ckpt.get("mode", "max") in ("min", "max"),
        f"callbacks.checkpoint.mode must be min or max, got {ckpt.get('mode')!r}",
    )
    if not has_validation:
        ckpt.update(monitor=None, save_top_k=1)
    checkpoint = ModelCheckpoint(
        dirpath=str(run_dir / "checkpoints"),
        filename="epoch{epoch:03d}",
        auto_insert_metric_name=False,
        **ckpt,
    )
    callbacks: list[Callback] = [checkpoint]
    if cfg.get("lr_monitor") and has_logger:
        callbacks.append(LearningRateMonitor(logging_interval="epoch"))
    early = dict(cfg.get("early_stopping") or {})
    if early.pop("enabled", False):
        check(
            has_validation,
            "callbacks.early_stopping needs a validation set (data.val_fraction > 0)",
        )
        callbacks.append(EarlyStopping(**early))
    return callbacks, checkpoint
