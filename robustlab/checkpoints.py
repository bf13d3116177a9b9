"""Loading robustlab checkpoints back into models, safely.

Checkpoints are read with ``torch.load(weights_only=True)`` — no arbitrary pickles — and must
carry the ``robustlab`` record that training writes (the resolved config), so a model can
be rebuilt without the code that trained it guessing its architecture.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from robustlab.errors import CheckpointError
from robustlab.methods.erm import CHECKPOINT_KEY


def load_checkpoint(path: str | Path) -> dict[str, Any]:
    """The checkpoint dict at ``path``; a clear error if missing, corrupt or foreign."""
    path = Path(path).expanduser()
    if not path.is_file():
        raise CheckpointError(
            f"checkpoint={path}: no such file; pass the path of a .ckpt written "
            "by robustlab-train (e.g. <run dir>/checkpoints/last.ckpt)"
        )
    try:
        checkpoint = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # any failure to unpickle a user's file means: unreadable
        raise CheckpointError(
            f"checkpoint={path} cannot be read ({type(err).__name__}: "
            f"{str(err).splitlines()[0][:200]}); the file is corrupt or not a "
            "PyTorch checkpoint — re-run training or pick another file"
        ) from None
    if (
        not isinstance(checkpoint, dict)
        or CHECKPOINT_KEY not in checkpoint
        or "state_dict" not in checkpoint
    ):
        raise CheckpointError(
            f"checkpoint={path} was not written by robustlab-train (no "
            f"'{CHECKPOINT_KEY}' record); evaluate checkpoints of robustlab runs"
        )
    if not checkpoint[CHECKPOINT_KEY].get("config"):
        raise CheckpointError(f"checkpoint={path} has no run config; it cannot be rebuilt")
    return checkpoint


def model_state(checkpoint: dict[str, Any]) -> dict[str, torch.Tensor]:
    """The classifier's weights (the ``model.`` part of the method's state dict)."""
    prefix = "model."
    return {
        k[len(prefix) :]: v for k, v in checkpoint["state_dict"].items() if k.startswith(prefix)
    }
