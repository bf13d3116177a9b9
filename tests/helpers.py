"""Test utilities: run the console apps as a user would, and compose configs in-process."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from hydra import compose, initialize_config_module
from omegaconf import DictConfig

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
        [sys.executable, "-m", f"robustlab.{app}", *overrides],
        cwd=cwd,
        env=full_env,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def results_of(run_dir: Path) -> dict:
    return json.loads((Path(run_dir) / "results.json").read_text())


def compose_train(*overrides: str, config_name: str = "train") -> DictConfig:
    with initialize_config_module(config_module="robustlab.conf", version_base="1.3"):
        return compose(config_name=config_name, overrides=list(overrides))
