"""The robustlab checkpoint format: what training stores, and loading parts of a run back.

Lightning writes the checkpoint; every method adds one record under ``CHECKPOINT_KEY``
(:func:`run_record`): the resolved run config, the classifier's shape (classes, input channels),
the parts the method exports (:class:`ExportedPart`: per name, the state-dict prefix of its
weights and how to build it) and every global random state, so that

* any exported part — the classifier (part ``model``) or e.g. a GAN stage's generator — is
  rebuilt from the checkpoint alone, without the run's method or data and without fetching
  pretrained weights again (:func:`load_module`; :func:`load_classifier` is its ``model`` case);
* ``resume`` continues bit-for-bit (:func:`restore_rng`).

Beside it, Lightning stores the datamodule's state: the training subset's identity
(:func:`recorded_subset`), so a later run can refuse a part trained on other images.

The record's ``parts`` map each name to ``{"prefix", "factory", "kwargs"}``: ``factory`` is the
import path of a callable (``pkg.module:name``) that ``factory(**kwargs)`` builds the module with
(kwargs are plain config values), or null for the run's classifier, rebuilt from the stored
``config.model`` and the recorded classifier shape.

Checkpoints are read with ``torch.load(weights_only=True)`` — no arbitrary pickles.
"""

from __future__ import annotations

import random
import types
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from robustlab.errors import CheckpointError, ConfigError
from robustlab.models import build_classifier
from robustlab.registry import construct, import_object
from robustlab.results import RESULTS_FILE, read_results

CHECKPOINT_KEY = "robustlab"
#: 1: config + torch/cuda/python RNG; 2: + classifier shape, numpy RNG, python's gauss cache;
#: 3: + exported parts.
CHECKPOINT_FORMAT = 3
MODEL_PREFIX = "model."
#: the part every classifier run exports: its classifier, ``self.model`` of the method
CLASSIFIER_PART = "model"
#: the key of the training-subset record in the datamodule's checkpoint state
SUBSET_STATE = "subset"
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


@dataclass(frozen=True)
class ExportedPart:
    """A module of a method that other runs may load (:func:`load_module`).

    ``factory``: import path (``pkg.module:name``) of a callable that builds the module from
    ``kwargs`` alone (plain config values: numbers, strings, booleans, None, lists, dicts), or
    None for a module the run's ``model`` config builds (the classifier, rebuilt from the stored
    model config and classifier shape).
    """

    module: nn.Module
    factory: str | None = None
    kwargs: Mapping[str, Any] = field(default_factory=dict)


_PLAIN = (str, int, float, bool, type(None))


def _is_plain(value: Any) -> bool:
    if isinstance(value, Mapping):
        return all(isinstance(k, str) and _is_plain(v) for k, v in value.items())
    if isinstance(value, (list, tuple)):
        return all(_is_plain(v) for v in value)
    return isinstance(value, _PLAIN)


def _plain(value: Any) -> Any:
    """Tuples as lists, mappings as dicts (what ``weights_only`` loading accepts)."""
    if isinstance(value, Mapping):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    return value


def part_records(owner: nn.Module, parts: Mapping[str, ExportedPart]) -> dict[str, dict]:
    """``{name: {"prefix", "factory", "kwargs"}}`` for the checkpoint: each part's prefix is
    where its weights sit in ``owner.state_dict()`` (each part must be a submodule of it)."""
    names = {id(module): name for name, module in owner.named_modules() if name}
    records = {}
    for part, exported in parts.items():
        where = names.get(id(exported.module))
        if where is None:
            raise ValueError(
                f"exported part {part!r} is not a submodule of {type(owner).__name__}; "
                "register it as an attribute before declaring it"
            )
        if not _is_plain(dict(exported.kwargs)):
            raise TypeError(
                f"exported part {part!r}: kwargs must be plain config values (numbers, "
                f"strings, booleans, None, lists, dicts), got {exported.kwargs!r}"
            )
        records[part] = {
            "prefix": f"{where}.",
            "factory": exported.factory,
            "kwargs": _plain(exported.kwargs),
        }
    return records


def _classifier_only() -> dict[str, dict]:
    """The parts record of a method that exports only its classifier (``self.model``); what
    checkpoints older than format 3 are read as."""
    return {CLASSIFIER_PART: {"prefix": MODEL_PREFIX, "factory": None, "kwargs": {}}}


def run_record(
    config: dict | None, model: nn.Module, parts: Mapping[str, dict] | None = None
) -> dict[str, Any]:
    """The record a method stores under ``CHECKPOINT_KEY`` when Lightning saves; ``parts``
    from :func:`part_records` (default: the classifier ``model`` only)."""
    return {
        "format": CHECKPOINT_FORMAT,
        "config": config,
        "classifier": {
            "num_classes": getattr(model, "num_classes", None),
            "in_channels": getattr(model, "in_channels", None),
        },
        "parts": _classifier_only() if parts is None else dict(parts),
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
    return checkpoint


def checkpoint_path(source: str | Path) -> Path:
    """``source`` itself, or for a run folder the checkpoint its ``results.json`` names (the
    best one; moved folders are followed to ``<folder>/checkpoints/<same name>``)."""
    source = Path(source).expanduser()
    if not source.is_dir():
        return source
    try:
        named = read_results(source).get("checkpoint")
    except (OSError, ValueError, AttributeError):
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
    raise CheckpointError(f"{source / RESULTS_FILE} names checkpoint {named}, which does not exist")


def _part_state(checkpoint: Mapping[str, Any], prefix: str) -> dict[str, torch.Tensor]:
    """The tensors under ``prefix`` in the method's state dict, with the prefix removed."""
    return {
        k[len(prefix) :]: v for k, v in checkpoint["state_dict"].items() if k.startswith(prefix)
    }


def model_state(checkpoint: Mapping[str, Any]) -> dict[str, torch.Tensor]:
    """The classifier's own tensors: the ``model.`` part of the method's state dict (method
    parts such as pretext heads, teachers or metric states are left out)."""
    return _part_state(checkpoint, MODEL_PREFIX)


def recorded_subset(checkpoint: Mapping[str, Any]) -> dict[str, Any] | None:
    """The training images of the run that wrote ``checkpoint`` (the record of
    ``ImageDataModule.subset_record``: dataset, samples per class, subset seed, image count,
    hash), read from the datamodule state Lightning stores under the datamodule's class name;
    None when the checkpoint holds none (written before subsets were recorded)."""
    for key, value in checkpoint.items():
        if key in (CHECKPOINT_KEY, "state_dict") or not isinstance(value, Mapping):
            continue
        record = value.get(SUBSET_STATE)
        if isinstance(record, Mapping) and isinstance(record.get("hash"), str):
            return dict(record)
    return None


def _declared_parts(checkpoint: Mapping[str, Any], label: str = "checkpoint") -> dict[str, dict]:
    """The parts a checkpoint exports; a checkpoint older than format 3 exports its
    classifier only."""
    record = checkpoint[CHECKPOINT_KEY]
    parts = record.get("parts")
    if parts is None:
        return _classifier_only()
    if not isinstance(parts, Mapping):
        raise CheckpointError(f"{label}: its 'parts' record is malformed ({type(parts).__name__})")
    return dict(parts)


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


def _build_classifier(checkpoint: Mapping[str, Any], datamodule: Any) -> nn.Module:
    """The run's classifier from its stored model config, without pretrained weights."""
    model_cfg = dict(checkpoint[CHECKPOINT_KEY]["config"]["model"])
    name = model_cfg.pop("name")
    pretrained = model_cfg.get("weights") is not None
    if "weights" in model_cfg:
        model_cfg["weights"] = None
    num_classes, in_channels = _classifier_shape(checkpoint, datamodule)
    placeholder = (0.0,) * in_channels, (1.0,) * in_channels  # the checkpoint's buffers win
    model = build_classifier(name, num_classes, in_channels, *placeholder, **model_cfg)
    net = getattr(model.backbone, "net", None)
    if pretrained and getattr(model.backbone, "arch", None) in _PRETRAINED_TRANSFORM_INPUT:
        net.transform_input = True  # torchvision's pretrained builders switch it on
    return model


def _build_part(part: str, record: Mapping[str, Any], label: str) -> nn.Module:
    """``factory(**kwargs)`` of a declared part."""
    factory = record.get("factory")
    kwargs = record.get("kwargs") or {}
    try:
        module = construct(
            import_object(str(factory), group=f"part {part!r} factory"),
            f"part {part!r} factory {factory}",
            **kwargs,
        )
    except ConfigError as err:
        raise CheckpointError(f"{label}: cannot rebuild part {part!r}: {err}") from None
    if not isinstance(module, nn.Module):
        raise CheckpointError(
            f"{label}: part {part!r} factory {factory} built a {type(module).__name__}, "
            "not a torch module"
        )
    return module


def load_module(
    source: str | Path | Mapping[str, Any],
    part: str = CLASSIFIER_PART,
    *,
    datamodule: Any = None,
    label: str = "checkpoint",
) -> nn.Module:
    """A part another run exported — its classifier (``part="model"``) or any module its
    method declared (e.g. a generator) — from a checkpoint file, a run folder (its best
    checkpoint) or an already loaded checkpoint dict, with that run's weights, in eval mode.

    The module is rebuilt from the record stored with the checkpoint alone, without the run's
    method or data: the classifier from the stored model config without pretrained weights
    (``model.weights`` only initialised training; the checkpoint holds the trained ones, so
    nothing is downloaded), any other part by its recorded factory and keyword arguments.
    ``datamodule`` sizes classifiers of checkpoints older than format 2; ``label`` names a
    loaded dict in errors.
    """
    checkpoint = source if isinstance(source, Mapping) else None
    if checkpoint is None:
        path = checkpoint_path(source)
        label = f"checkpoint={path}"
        checkpoint = load_checkpoint(path)
    parts = _declared_parts(checkpoint, label)
    if part not in parts:
        if checkpoint[CHECKPOINT_KEY].get("parts") is None:
            raise CheckpointError(
                f"{label} is of checkpoint format {checkpoint[CHECKPOINT_KEY].get('format')}, "
                f"older than exported parts (format 3): only its classifier "
                f"(part '{CLASSIFIER_PART}') loads; re-train it to load part {part!r}"
            )
        raise CheckpointError(
            f"{label} exports no part {part!r}; its parts: {', '.join(parts) or 'none'}"
        )
    record = parts[part]
    is_classifier = record.get("factory") is None
    state = _part_state(checkpoint, str(record["prefix"]))
    if not state:
        raise CheckpointError(f"{label} holds no weights of part {part!r} ('{record['prefix']}*')")
    if is_classifier:
        module = _build_classifier(checkpoint, datamodule)
    else:
        module = _build_part(part, record, label)
    try:  # a classifier ignores tensors a method kept under ``model.`` beside its own
        keys = module.load_state_dict(state, strict=not is_classifier)
        missing = keys.missing_keys
        detail = f"missing {', '.join(missing[:5])}" if missing else ""
    except RuntimeError as err:  # a tensor of another shape, or (strict) an unexpected name
        lines = [line.strip() for line in str(err).splitlines() if line.strip()]
        detail = " ".join(lines[1:])[:300] if len(lines) > 1 else lines[0][:300]
    if detail:
        what = "the model its config describes" if is_classifier else f"part {part!r}"
        raise CheckpointError(f"{label}: its weights do not fit {what} ({detail})")
    return module.eval()


def load_classifier(
    source: str | Path | Mapping[str, Any], *, datamodule: Any = None, label: str = "checkpoint"
) -> nn.Module:
    """The classifier of another run: :func:`load_module` of part ``model``."""
    return load_module(source, CLASSIFIER_PART, datamodule=datamodule, label=label)


def frozen(module: nn.Module) -> nn.Module:
    """``module`` without gradients and in eval mode for good: ``.train()`` (which Lightning
    calls on the whole LightningModule every epoch) leaves it, and its children, in eval mode."""
    module.requires_grad_(False)
    module.eval()
    module.train = types.MethodType(lambda self, mode=True: self, module)  # type: ignore[method-assign]
    return module
