"""The trainer's speed options, checked on the CPU: mixed precision (``trainer.precision``) and
the convolution memory layout (``trainer.memory_format``)."""

from __future__ import annotations

import pytorch_lightning as pl
import torch
from torch import nn

from robustlab.run.builders import build_data, build_run_method
from robustlab.run.trainer import build_trainer
from tests.helpers import QUICK, compose_train, run_app


def _fit_and_watch_convolutions(*overrides: str) -> tuple[nn.Module, set[torch.dtype], list[bool]]:
    """Fit a small CNN on digits for 3 steps; returns the fitted model, the dtypes its
    convolutions produced while training and, per training step, whether the first convolution's
    weight was channels-last when it ran (the first with more than one input channel, whose
    NHWC and NCHW strides differ)."""
    cfg = compose_train("logger=[]", "suite=[]", "data.val_fraction=0", *overrides)
    pl.seed_everything(0, verbose=False)
    datamodule = build_data(cfg)
    method = build_run_method(cfg, datamodule)
    convolutions = [m for m in method.model.modules() if isinstance(m, nn.Conv2d)]
    watched = next(conv for conv in convolutions if conv.in_channels > 1)
    dtypes: set[torch.dtype] = set()
    layouts: list[bool] = []

    def record(module: nn.Module, inputs: tuple, output: torch.Tensor) -> None:
        if module.training:
            dtypes.add(output.dtype)
            if module is watched:
                layouts.append(module.weight.is_contiguous(memory_format=torch.channels_last))

    for conv in convolutions:
        conv.register_forward_hook(record)
    trainer = build_trainer(
        cfg.trainer,
        max_steps=3,
        limit_val_batches=0,
        enable_checkpointing=False,
        enable_progress_bar=False,
    )
    trainer.fit(method, datamodule=datamodule)
    return method.model, dtypes, layouts


def test_channels_last_runs_every_convolution_nhwc_and_matches_the_default_layout():
    model, _, layouts = _fit_and_watch_convolutions("trainer.memory_format=channels_last")
    assert layouts == [True, True, True]
    conv = next(m for m in model.modules() if isinstance(m, nn.Conv2d) and m.in_channels > 1)
    assert not conv.weight.is_contiguous()  # NHWC strides, not the default NCHW ones
    reference, _, default_layouts = _fit_and_watch_convolutions()
    assert default_layouts == [False, False, False]
    x = torch.rand(4, 1, 8, 8)
    with torch.no_grad():  # the same training, so the same weights up to float rounding
        torch.testing.assert_close(model.eval()(x), reference.eval()(x), rtol=0, atol=1e-3)


def test_bf16_mixed_precision_computes_the_convolutions_in_bfloat16():
    _, dtypes, _ = _fit_and_watch_convolutions("trainer.precision=bf16-mixed")
    assert dtypes == {torch.bfloat16}
    _, dtypes, _ = _fit_and_watch_convolutions()
    assert dtypes == {torch.float32}


def test_unknown_memory_format_stops_the_run_before_data(tmp_path):
    proc = run_app(
        "train",
        *QUICK,
        "trainer.memory_format=nhwc",
        "data=mnist",  # its files are not under data.root: the check must come first
        f"data.root={tmp_path}/nowhere",
        f"hydra.run.dir={tmp_path / 'run'}",
        cwd=tmp_path,
    )
    assert proc.returncode == 2
    message = proc.stderr.strip().splitlines()
    assert len(message) == 1 and "trainer.memory_format" in message[0] and "nhwc" in message[0]
