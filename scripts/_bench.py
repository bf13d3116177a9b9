"""What the benchmark scripts share: the CIFAR-10 training data they time (or a synthetic set
of the same shape when $ROBUSTLAB_DATA has none) and device synchronisation."""

from __future__ import annotations

import os

import torch

from robustlab.data import build_datamodule
from robustlab.errors import DataNotFoundError


def cifar10_or_synthetic(n_synthetic: int, **options):
    """The CIFAR-10 data module from ``$ROBUSTLAB_DATA`` when present, else ``n_synthetic``
    random 32×32 images; set up for fitting."""
    root = os.environ.get("ROBUSTLAB_DATA")
    dm = None
    if root:
        try:
            dm = build_datamodule("cifar10", root=root, **options)
            dm.setup("fit")
        except DataNotFoundError:
            dm = None
    if dm is None:
        dm = build_datamodule("synthetic", n_train=n_synthetic, n_test=10, image_size=32, **options)
        dm.setup("fit")
    return dm


def sync(device: torch.device) -> None:
    """Wait for the device's queued work, so wall-clock timings are real."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)
