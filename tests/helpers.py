"""Test utilities: run the console apps as a user would, and compose configs in-process."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytorch_lightning as pl
import torch
from hydra import compose, initialize_config_module
from omegaconf import DictConfig
from torch import nn

#: Keep runs tiny: a handful of batches, no progress bar.
QUICK = [
    "trainer.enable_progress_bar=false",
    "trainer.max_epochs=1",
    "trainer.limit_train_batches=3",
    "trainer.limit_val_batches=2",
    "trainer.limit_test_batches=2",
]


def run_app(
    app: str, *overrides: str, cwd: Path, env: dict | None = None, timeout: int = 600
) -> subprocess.CompletedProcess:
    """``python -m robustlab.<app> overrides...`` in ``cwd``; returns the finished process."""
    full_env = {**os.environ, "PYTHONWARNINGS": "ignore", **(env or {})}
    full_env.pop("HYDRA_FULL_ERROR", None) if not (env or {}).get("HYDRA_FULL_ERROR") else None
    return subprocess.run(
        [sys.executable, "-m", f"robustlab.cli.{app}", *overrides],
        cwd=cwd,
        env=full_env,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def results_of(run_dir: Path) -> dict:
    return json.loads((Path(run_dir) / "results.json").read_text())


DIGITS_TEST_IMAGES = 359  # scikit-learn digits' test split


def evaluate_trained(trained: dict, eval_dir: Path, cwd: Path) -> dict:
    """Re-score a run's checkpoint (its ``results.json`` record ``trained``) with
    ``robustlab-eval`` and check it gets the same number of digits test images right as the run
    itself reported, not just a close accuracy. Returns the evaluation's record."""
    proc = run_app(
        "evaluate",
        f"checkpoint={trained['checkpoint']}",
        "trainer.enable_progress_bar=false",
        f"hydra.run.dir={eval_dir}",
        cwd=cwd,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    evaluated = results_of(eval_dir)
    n = DIGITS_TEST_IMAGES
    assert round(evaluated["metrics"]["test/acc"] * n) == round(trained["metrics"]["test/acc"] * n)
    return evaluated


def compose_train(*overrides: str, config_name: str = "train") -> DictConfig:
    with initialize_config_module(config_module="robustlab.conf", version_base="1.3"):
        return compose(config_name=config_name, overrides=list(overrides))


class LinearClassifier(nn.Module):
    """A classifier whose logits are set by hand: ``logits = W · flatten(x) + b``.

    ``features(x) = flatten(x)`` (so ``feature_dim = C·H·W``) and ``classifier`` is an
    ``nn.Linear`` holding ``weight`` (K, C·H·W) and ``bias`` (K,). No normalisation and no
    BatchNorm: train and eval mode agree, so a method's loss can be computed by hand.
    """

    def __init__(self, weight: torch.Tensor, bias: torch.Tensor | None = None):
        super().__init__()
        weight = torch.as_tensor(weight, dtype=torch.float32)
        self.classifier = nn.Linear(weight.shape[1], weight.shape[0])
        with torch.no_grad():
            self.classifier.weight.copy_(weight)
            self.classifier.bias.copy_(
                torch.zeros(weight.shape[0]) if bias is None else torch.as_tensor(bias)
            )

    @property
    def feature_dim(self) -> int:
        return self.classifier.in_features

    @property
    def num_classes(self) -> int:
        return self.classifier.out_features

    def features(self, x: torch.Tensor) -> torch.Tensor:
        return x.flatten(1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.features(x))


def _wandb_log_records(path: Path):
    """The raw records of a wandb transaction log (``run-<id>.wandb``): a 7-byte header
    (``:W&B``, magic, version), then LevelDB-log records (crc32, little-endian length, type)
    in 32 KiB blocks; types 1 = full, 2/3/4 = first/middle/last piece of a split record."""
    data = Path(path).read_bytes()
    assert data[:4] == b":W&B", f"{path} is not a wandb log"
    pos, block, pieces = 7, 32768, b""
    while pos + 7 <= len(data):
        if block - pos % block < 7:  # a block's tail too short for a header is padding
            pos += block - pos % block
            continue
        length, kind = int.from_bytes(data[pos + 4 : pos + 6], "little"), data[pos + 6]
        payload, pos = data[pos + 7 : pos + 7 + length], pos + 7 + length
        if kind == 1:
            yield payload
        elif kind == 2:
            pieces = payload
        elif kind == 3:
            pieces += payload
        elif kind == 4:
            yield pieces + payload


def wandb_offline_runs(folder: Path, wait: float = 30.0) -> list[dict]:
    """Every offline wandb run under ``folder``, read with wandb's own record schema:
    ``{"dir", "id", "name", "group", "config" (final values), "history" (rows), "exit_code"}``.
    wandb's writer flushes a finished run's log after ``wandb.finish`` returns, so this waits
    (up to ``wait`` seconds) until every log holds its run and exit records."""
    deadline = time.monotonic() + wait
    while True:
        runs = _read_wandb_runs(folder)
        finished = all("id" in run and run["exit_code"] is not None for run in runs)
        if finished or time.monotonic() > deadline:
            return runs
        time.sleep(0.2)


def _read_wandb_runs(folder: Path) -> list[dict]:
    from wandb.proto import wandb_internal_pb2

    runs = []
    for log in sorted(Path(folder).rglob("offline-run-*/run-*.wandb")):
        run = {"dir": log.parent, "config": {}, "history": 0, "exit_code": None}
        for raw in _wandb_log_records(log):
            record = wandb_internal_pb2.Record()
            record.ParseFromString(raw)
            kind = record.WhichOneof("record_type")
            if kind == "run":
                run.update(
                    id=record.run.run_id,
                    name=record.run.display_name,
                    group=record.run.run_group,
                )
                updates = record.run.config.update
            elif kind == "config":
                updates = record.config.update
            else:
                updates = ()
                run["history"] += kind == "history"
                if kind == "exit":
                    run["exit_code"] = record.exit.exit_code
            run["config"].update({item.key: json.loads(item.value_json) for item in updates})
        runs.append(run)
    return runs


def quiet_cpu_trainer(**options) -> pl.Trainer:
    """A one-process CPU Trainer for tiny in-test fits: no logger, checkpoints, progress bar or
    model summary; ``options`` override or add Trainer arguments (e.g. ``max_epochs``)."""
    defaults = dict(
        accelerator="cpu",
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
    )
    return pl.Trainer(**{**defaults, **options})


def suite_trainer():
    """The single-process CPU Trainer the evaluation suites run under in tests (input gradients
    allowed for attacks, robustlab's own sharding, no logger or progress output)."""
    import pytorch_lightning as pl

    return pl.Trainer(
        accelerator="cpu",
        devices=1,
        logger=False,
        inference_mode=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        use_distributed_sampler=False,
    )


class InterruptAt(pl.Callback):
    """Ctrl-C in the middle of epoch ``epoch``, after batch ``batch``: an interrupted run, for
    resume tests."""

    def __init__(self, epoch: int, batch: int):
        self.epoch, self.batch = epoch, batch

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        if (trainer.current_epoch, batch_idx) == (self.epoch, self.batch):
            raise KeyboardInterrupt("interrupted for the test")


def error_message(call, kind: type[Exception] | None = None) -> str:
    """The message of the ``kind`` error (default: ConfigError) that ``call()`` raises."""
    import pytest

    from robustlab.errors import ConfigError

    with pytest.raises(kind or ConfigError) as error:
        call()
    return str(error.value)
