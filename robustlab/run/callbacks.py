"""Lightning callbacks chosen by the ``callbacks`` config group."""

from __future__ import annotations

import csv
import signal
import threading
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path

import pytorch_lightning as pl
from pytorch_lightning.callbacks import (
    Callback,
    EarlyStopping,
    LearningRateMonitor,
    ModelCheckpoint,
)
from pytorch_lightning.loggers import CSVLogger

from robustlab.errors import ConfigError, check
from robustlab.results import scalar_metrics

LAST = "last.ckpt"


@contextmanager
def sigterm_deferred() -> Iterator[None]:
    """Hold SIGTERM back while the block runs (it is delivered right after), so a job killed
    while writing a checkpoint still leaves the previous one or the new one, never a mix."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGTERM})
    try:
        yield
    finally:
        signal.pthread_sigmask(signal.SIG_UNBLOCK, {signal.SIGTERM})


class RunCheckpoint(ModelCheckpoint):
    """Lightning's top-k checkpointing by ``monitor``, plus ``last.ckpt`` = the state at the
    end of *every* training epoch (Lightning's own ``save_last`` rewrites it only when a top-k
    file is saved, so it could hold an early epoch).

    ``last.ckpt`` is written after validation and after every other epoch-end callback, so it
    carries the epoch's complete state (early-stopping counters, best-k bookkeeping, RNG); a
    job stopped mid-epoch (SIGTERM, Ctrl-C) resumes from the end of its last finished epoch and
    re-runs the interrupted one with the same random draws.

    Each checkpoint also carries the epoch-level scalars of the last finished epoch
    (``epoch_metrics``; ``restored_metrics`` after a resume): a run stopped after its last epoch
    (in testing or the suites) resumes with no epoch left to train and still reports the
    ``train/`` and ``val/`` numbers of the uninterrupted run.
    """

    def __init__(self, *, save_last: bool = True, **kwargs) -> None:
        super().__init__(save_last=False, save_on_exception=False, **kwargs)
        self.keep_last = bool(save_last)
        self.epoch_metrics: dict[str, float] = {}
        self.restored_metrics: dict[str, float] = {}

    def state_dict(self) -> dict:
        return {**super().state_dict(), "epoch_metrics": dict(self.epoch_metrics)}

    def load_state_dict(self, state_dict: dict) -> None:
        super().load_state_dict(state_dict)
        self.restored_metrics = dict(state_dict.get("epoch_metrics") or {})

    def on_train_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        # monitoring callbacks run after the module's epoch-end hook: every epoch scalar is in
        self.epoch_metrics = scalar_metrics(trainer.callback_metrics)
        with sigterm_deferred():
            super().on_train_epoch_end(trainer, pl_module)
            if self.keep_last and not trainer.sanity_checking and not trainer.fast_dev_run:
                self.last_model_path = str(Path(self.dirpath) / LAST)
                trainer.save_checkpoint(self.last_model_path, weights_only=self.save_weights_only)

    def on_validation_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        with sigterm_deferred():
            super().on_validation_end(trainer, pl_module)


class LoggedHistory(Callback):
    """On resume, keep the CSV rows the interrupted part of the run wrote before its checkpoint
    (step < ``until_step``): Lightning's CSV logger deletes ``metrics.csv`` when it starts, and
    rows from a re-done partial epoch must not appear twice."""

    def __init__(self, csv_file: Path, *, until_step: int) -> None:
        self.rows: list[dict[str, str]] = []
        if Path(csv_file).is_file():
            with open(csv_file, newline="") as handle:
                for row in csv.DictReader(handle):
                    if row.get("step") and int(float(row["step"])) < until_step:
                        self.rows.append({k: v for k, v in row.items() if v not in ("", None)})

    def setup(self, trainer: pl.Trainer, pl_module: pl.LightningModule, stage: str) -> None:
        # the loggers' writers exist now (Lightning creates them before callbacks' setup)
        for logger in trainer.loggers:
            if isinstance(logger, CSVLogger) and trainer.is_global_zero:
                logger.experiment.metrics[:0] = self.rows
        self.rows = []


def build_callbacks(
    cfg: Mapping, run_dir: Path, *, has_validation: bool, has_logger: bool
) -> tuple[list[Callback], RunCheckpoint]:
    """Checkpointing (best by ``monitor`` + ``last.ckpt`` every epoch), LR monitor, early stopping.

    Without a validation set there is nothing to rank checkpoints by: the last one is kept
    and counts as the best.
    """
    known = {"checkpoint", "lr_monitor", "early_stopping"}
    unknown = sorted(set(cfg) - known)
    if unknown:
        raise ConfigError(f"callbacks has unknown key(s) {unknown}; valid keys: {sorted(known)}")
    ckpt = {"mode": "max", **cfg["checkpoint"]}  # val/acc: higher is better
    check(
        ckpt["mode"] in ("min", "max"),
        f"callbacks.checkpoint.mode must be min or max, got {ckpt['mode']!r}",
    )
    if not has_validation:
        ckpt.update(monitor=None, save_top_k=1)
    checkpoint = RunCheckpoint(
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
