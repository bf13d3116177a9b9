"""The Lightning Trainer built from the ``trainer`` config group."""

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
OWN_KEYS = ("ddp_backend",)


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
