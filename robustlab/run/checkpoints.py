"""The robustlab checkpoint format: what training stores, and loading parts of a run back.

Lightning writes the checkpoint; every method adds one record under ``CHECKPOINT_KEY``
(:func:`run_record`): the resolved run config, the classifier's shape (classes, input channels)
and every global random state, so that

* a classifier is rebuilt from the checkpoint alone — without the run's method or data, and
  without fetching pretrained weights again (:func:`load_classifier`);
* ``resume`` continues bit-for-bit (:func:`restore_rng`).

Checkpoints are read with ``torch.load(weights_only=True)`` — no arbitrary pickles.
"""

from __future__ import annotations

import json
import random
import types
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from robustlab.errors import CheckpointError
from robustlab.models import build_classifier

CHECKPOINT_KEY = "robustlab"
#: 1: config + torch/cuda/python RNG; 2: + classifier shape, numpy RNG, python's gauss cache.
CHECKPOINT_FORMAT = 2
MODEL_PREFIX = "model."
#: torchvision archs whose pretrained weight sets switch on ``transform_input``
_PRETRAINED_TRANSFORM_INPUT = ("inception_v3", "googlenet")


# --------------------------------------------------------------------------- writing
def capture_rng() -> dict[str, Any]:
    """Every global random state (torch CPU and CUDA, python ``random``, numpy), as tensors and
    plain numbers so the checkpoint stays ``weights_only``-loadable."""
    version, python_state, gauss_next = random.getstate()
    _, keys, position, has_gauss, cached_gaussian = np.random.get_state()
    return {
        "torch": torch.get_rng_state(),
        "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
        "python": list(python_state),
        "python_gauss": gauss_next,
        "numpy": torch.from_numpy(np.asarray(keys, dtype=np.int64)),
        "numpy_position": int(position),
        "numpy_gauss": [int(has_gauss), float(cached_gaussian)],
    }


def restore_rng(rng: Mapping[str, Any]) -> None:
    """Set the global random states :func:`capture_rng` recorded (format 1 records lack numpy)."""
    torch.set_rng_state(rng["torch"])
    if rng.get("cuda") and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(rng["cuda"])
    random.setstate((3, tuple(int(v) for v in rng["python"]), rng.get("python_gauss")))
    if "numpy" in rng:
        has_gauss, cached = rng["numpy_gauss"]
        keys = rng["numpy"].numpy().astype(np.uint32)
        np.random.set_state(("MT19937", keys, rng["numpy_position"], int(has_gauss), cached))


def run_record(config: dict | None, model: nn.Module) -> dict[str, Any]:
    """The record a method stores under ``CHECKPOINT_KEY`` when Lightning saves."""
    return {
        "format": CHECKPOINT_FORMAT,
        "config": config,
        "classifier": {
            "num_classes": getattr(model, "num_classes", None),
            "in_channels": getattr(model, "in_channels", None),
        },
        "rng": capture_rng(),
    }


# --------------------------------------------------------------------------- reading
def load_checkpoint(path: str | Path) -> dict[str, Any]:
    """The checkpoint dict at ``path``; a clear error if missing, corrupt or foreign."""
    path = Path(path).expanduser()
    if not path.is_file():
        raise CheckpointError(
            f"checkpoint={path}: no such file; pass the path of a .ckpt written "
            "by robustlab-train (e.g. <run dir>/checkpoints/last.ckpt) or a run folder"
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
        or not isinstance(checkpoint.get(CHECKPOINT_KEY), dict)
        or not isinstance(checkpoint.get("state_dict"), dict)
    ):
        raise CheckpointError(
            f"checkpoint={path} was not written by robustlab-train (no "
            f"'{CHECKPOINT_KEY}' record); evaluate checkpoints of robustlab runs"
        )
    config = checkpoint[CHECKPOINT_KEY].get("config")
    if not isinstance(config, dict) or not isinstance(config.get("model"), dict):
        raise CheckpointError(
            f"checkpoint={path} has no run config (model settings); it cannot be rebuilt — "
            "use a checkpoint written by robustlab-train"
        )
    if not model_state(checkpoint):
        raise CheckpointError(f"checkpoint={path} holds no '{MODEL_PREFIX}*' weights")
    return checkpoint


def checkpoint_path(source: str | Path) -> Path:
    """``source`` itself, or for a run folder the checkpoint its ``results.json`` names (the
    best one; moved folders are followed to ``<folder>/checkpoints/<same name>``)."""
    source = Path(source).expanduser()
    if not source.is_dir():
        return source
    results = source / "results.json"
    try:
        named = json.loads(results.read_text()).get("checkpoint")
    except (OSError, ValueError):
        named = None
    if not named:
        raise CheckpointError(
            f"{source} is a folder without a results.json naming its checkpoint; pass a "
            ".ckpt file (e.g. <run dir>/checkpoints/last.ckpt)"
        )
    named = Path(named)
    if named.is_file():
        return named
    moved = source / "checkpoints" / named.name
    if moved.is_file():
        return moved
    raise CheckpointError(f"{results} names checkpoint {named}, which does not exist")


def model_state(checkpoint: Mapping[str, Any]) -> dict[str, torch.Tensor]:
    """The classifier's own tensors: the ``model.`` part of the method's state dict (method
    parts such as pretext heads, teachers or metric states are left out)."""
    return {
        k[len(MODEL_PREFIX) :]: v
        for k, v in checkpoint["state_dict"].items()
        if k.startswith(MODEL_PREFIX)
    }


def _classifier_shape(checkpoint: Mapping[str, Any], datamodule: Any) -> tuple[int, int]:
    """(num_classes, in_channels): recorded since format 2, else from the data module, else
    read off the weights (the normalisation buffer and the last classifier matrix)."""
    shape = checkpoint[CHECKPOINT_KEY].get("classifier") or {}
    if shape.get("num_classes") and shape.get("in_channels"):
        return int(shape["num_classes"]), int(shape["in_channels"])
    if datamodule is not None:
        return int(datamodule.num_classes), int(datamodule.in_channels)
    state = model_state(checkpoint)
    heads = [v for k, v in state.items() if "classifier" in k and k.endswith("weight")]
    if "mean" not in state or not heads or heads[-1].dim() != 2:
        raise CheckpointError(
            "checkpoint records no classifier shape; pass the run's data module to rebuild it"
        )
    return int(heads[-1].shape[0]), int(state["mean"].shape[1])


def load_classifier(
    source: str | Path | Mapping[str, Any], *, datamodule: Any = None, label: str = "checkpoint"
) -> nn.Module:
    """The classifier of another run, from a checkpoint file, a run folder (its best
    checkpoint) or an already loaded checkpoint dict, with that run's weights.

    It is rebuilt from the config stored with it, without the run's method or data and without
    pretrained weights (``model.weights`` only initialised training; the checkpoint holds the
    trained ones, so nothing is downloaded). The module is returned in eval mode.
    ``datamodule`` sizes checkpoints older than format 2; ``label`` names a loaded dict in errors.
    """
    checkpoint = source if isinstance(source, Mapping) else None
    if checkpoint is None:
        path = checkpoint_path(source)
        label = f"checkpoint={path}"
        checkpoint = load_checkpoint(path)
    model_cfg = dict(checkpoint[CHECKPOINT_KEY]["config"]["model"])
    name = model_cfg.pop("name")
    pretrained = model_cfg.get("weights") is not None
    if "weights" in model_cfg:
        model_cfg["weights"] = None
    num_classes, in_channels = _classifier_shape(checkpoint, datamodule)
    state = model_state(checkpoint)
    placeholder = (0.0,) * in_channels, (1.0,) * in_channels  # the checkpoint's buffers win
    model = build_classifier(name, num_classes, in_channels, *placeholder, **model_cfg)
    net = getattr(model.backbone, "net", None)
    if pretrained and getattr(model.backbone, "arch", None) in _PRETRAINED_TRANSFORM_INPUT:
        net.transform_input = True  # torchvision's pretrained builders switch it on
    try:  # tensors a method kept under ``model.`` beside the classifier's own are not needed
        missing = model.load_state_dict(state, strict=False).missing_keys
        detail = f"missing {', '.join(missing[:5])}" if missing else ""
    except RuntimeError as err:  # a tensor of another shape
        detail = str(err).splitlines()[-1].strip()
    if detail:
        raise CheckpointError(
            f"{label}: its weights do not fit the model its config describes ({detail})"
        )
    return model.eval()


def frozen(module: nn.Module) -> nn.Module:
    """``module`` without gradients and in eval mode for good: ``.train()`` (which Lightning
    calls on the whole LightningModule every epoch) leaves it, and its children, in eval mode."""
    module.requires_grad_(False)
    module.eval()
    module.train = types.MethodType(lambda self, mode=True: self, module)  # type: ignore[method-assign]
    return module
