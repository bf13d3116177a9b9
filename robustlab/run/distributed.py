"""Hydra-safe multi-process (DDP) launch.

Lightning's ``ddp`` strategy starts the other ranks by re-running the command line. Under Hydra
that breaks sweeps: a child of a multirun job would re-run the *whole sweep* (``-m`` and all
its values). :class:`HydraDDPStrategy` instead starts each child with exactly this job's
resolved overrides and output folder, and :func:`distributed_job` resets the process-group
state between the jobs of a sweep.
"""

from __future__ import annotations

import contextlib
import os
import sys
from collections.abc import Iterator, Sequence
from unittest import mock

import torch.distributed as dist
from pytorch_lightning.strategies import DDPStrategy
from pytorch_lightning.strategies.launchers import subprocess_script
from pytorch_lightning.strategies.launchers.subprocess_script import _SubprocessScriptLauncher

_LAUNCH_ENV = ("MASTER_ADDR", "MASTER_PORT", "NODE_RANK", "LOCAL_RANK", "WORLD_SIZE")


def job_command(app_module: str, local_rank: int) -> tuple[Sequence[str], str]:
    """The command line that re-runs the current Hydra job (not its sweep) as one more rank."""
    from hydra.core.hydra_config import HydraConfig
    from hydra.utils import get_original_cwd

    hydra_cfg = HydraConfig.get()
    command = [
        sys.executable,
        "-m",
        app_module,
        *hydra_cfg.overrides.task,
        f'hydra.run.dir="{hydra_cfg.runtime.output_dir}"',
        f"hydra.job.name={hydra_cfg.job.name}_rank{local_rank}",
        "hydra.output_subdir=null",
    ]
    return command, get_original_cwd()


class _HydraJobLauncher(_SubprocessScriptLauncher):
    def __init__(self, *args, app_module: str, **kwargs):
        super().__init__(*args, **kwargs)
        self.app_module = app_module

    def _call_children_scripts(self) -> None:
        def command(local_rank: int) -> tuple[Sequence[str], str]:
            return job_command(self.app_module, local_rank)

        with mock.patch.object(subprocess_script, "_hydra_subprocess_cmd", command):
            super()._call_children_scripts()


class HydraDDPStrategy(DDPStrategy):
    """DDP whose extra ranks re-run this Hydra job (``python -m <app_module> <overrides>``)."""

    def __init__(self, *args, app_module: str = "robustlab.cli.train", **kwargs):
        super().__init__(*args, **kwargs)
        self.app_module = app_module

    def _configure_launcher(self) -> None:
        super()._configure_launcher()
        if isinstance(self._launcher, _SubprocessScriptLauncher):
            self._launcher = _HydraJobLauncher(
                self.cluster_environment,
                self.num_processes,
                self.num_nodes,
                app_module=self.app_module,
            )


@contextlib.contextmanager
def distributed_job() -> Iterator[None]:
    """Leave no process group or launcher environment behind for the next job of a sweep."""
    saved = {key: os.environ.get(key) for key in _LAUNCH_ENV}
    try:
        yield
    finally:
        if dist.is_available() and dist.is_initialized():
            dist.destroy_process_group()
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value
