"""``hydra/launcher=submitit_slurm``: SLURM jobs through the optional submitit plugin.

The config ships with robustlab so it always composes; the work is delegated to
``hydra-submitit-launcher``. Launching without that plugin stops with a message that says
what to install, instead of Hydra's generic "unknown plugin" error.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from hydra.plugins.launcher import Launcher

INSTALL_HINT = (
    "hydra/launcher=submitit_slurm needs the submitit launcher plugin: "
    "pip install 'robustlab[slurm]'  (or: pip install hydra-submitit-launcher)"
)


class SlurmLauncher(Launcher):
    """Delegates to ``hydra_plugins.hydra_submitit_launcher``'s SlurmLauncher."""

    def __init__(self, **params: Any) -> None:
        try:
            from hydra_plugins.hydra_submitit_launcher.submitit_launcher import (
                SlurmLauncher as SubmititSlurmLauncher,
            )
        except ImportError as err:
            raise ImportError(INSTALL_HINT) from err
        self._launcher = SubmititSlurmLauncher(**params)

    def setup(self, **kwargs: Any) -> None:
        self._launcher.setup(**kwargs)

    def launch(self, job_overrides: Sequence[Sequence[str]], initial_job_idx: int) -> Any:
        return self._launcher.launch(job_overrides, initial_job_idx)
