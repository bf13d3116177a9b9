"""The Lightning Trainer built from the ``trainer`` config group.

Besides Lightning's own arguments the group takes robustlab's :data:`OWN_KEYS`:
``ddp_backend`` (the DDP process-group backend) and ``memory_format`` (``contiguous`` or
``channels_last``: every module the trainer fits, validates or tests keeps its 4-D weights
channels-last, so cuDNN convolutions run NHWC; the result is the same up to float rounding).
"""

from __future__ import annotations

import inspect
from collections.abc import Mapping, Sequence
from typing import Any

import pytorch_lightning as pl
import torch
from pytorch_lightning.callbacks import Callback
from pytorch_lightning.loggers import Logger

from robustlab.errors import ConfigError
from robustlab.run.distributed import HydraDDPStrategy

#: Keys of the ``trainer`` group that robustlab interprets instead of passing them on.
OWN_KEYS = ("ddp_backend", "memory_format")

MEMORY_FORMATS = {"contiguous": torch.contiguous_format, "channels_last": torch.channels_last}


class MemoryFormat(Callback):
    """Put the module a trainer runs in ``memory_format`` when fitting or evaluating starts.

    Converting the weights is enough: a convolution runs channels-last when its input or its
    weight is, and its output (the next layer's input) then is too.
    """

    def __init__(self, memory_format: torch.memory_format):
        self.memory_format = memory_format

    def setup(self, trainer: pl.Trainer, pl_module: pl.LightningModule, stage: str) -> None:
        pl_module.to(memory_format=self.memory_format)


def memory_format_callbacks(name: str | None) -> list[Callback]:
    """The callback that applies ``trainer.memory_format`` (none for the default layout)."""
    name = name or "contiguous"
    if name not in MEMORY_FORMATS:
        raise ConfigError(
            f"trainer.memory_format must be one of {sorted(MEMORY_FORMATS)}, got {name!r}"
        )
    return [] if name == "contiguous" else [MemoryFormat(MEMORY_FORMATS[name])]


def build_trainer(
    cfg: Mapping[str, Any],
    *,
    callbacks: Sequence[Callback] = (),
    loggers: Sequence[Logger] = (),
    app_module: str = "robustlab.cli.train",
    **overrides: Any,
) -> pl.Trainer:
    """A ``pl.Trainer`` from config; ``strategy: ddp`` becomes :class:`HydraDDPStrategy`.

    robustlab's datamodules shard their own data (exact, unpadded evaluation shards), so
    Lightning's DistributedSampler injection is always off.
    """
    kwargs = {k: v for k, v in dict(cfg).items() if k not in OWN_KEYS}
    kwargs.update(overrides)
    callbacks = [*callbacks, *memory_format_callbacks(cfg.get("memory_format"))]
    accepted = set(inspect.signature(pl.Trainer.__init__).parameters) - {"self"}
    unknown = sorted(set(kwargs) - accepted)
    if unknown:
        raise ConfigError(f"trainer does not take {unknown}; see the Lightning Trainer arguments")
    if kwargs.get("accelerator") in ("gpu", "cuda") and not torch.cuda.is_available():
        raise ConfigError(
            "trainer=gpu/ddp needs a CUDA GPU and none is visible; use trainer=cpu "
            "or trainer=ddp_cpu"
        )
    if kwargs.get("strategy") == "ddp":
        kwargs["strategy"] = HydraDDPStrategy(
            app_module=app_module, process_group_backend=cfg.get("ddp_backend")
        )
    for key in ("limit_train_batches", "limit_val_batches", "limit_test_batches"):
        if kwargs.get(key) is None:
            kwargs.pop(key, None)
    return pl.Trainer(
        callbacks=list(callbacks),
        logger=list(loggers) or False,
        use_distributed_sampler=False,
        **kwargs,
    )
