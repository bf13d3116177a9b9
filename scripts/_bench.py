"""What the benchmark scripts share: the CIFAR-10 training data they time (or a synthetic set
of the same shape when $ROBUSTLAB_DATA has none), device synchronisation, and the per-image
torchvision DataLoader that batched augmentation is compared with."""

from __future__ import annotations

import os
import statistics
import time
from collections.abc import Callable

import torch
from hydra import compose, initialize_config_module
from torch.utils.data import DataLoader

from robustlab.cli.train import train
from robustlab.data import build_datamodule
from robustlab.data.items import ArrayItems
from robustlab.errors import DataNotFoundError


def cifar10_or_synthetic(n_synthetic: int, n_test: int = 10, **options):
    """The CIFAR-10 data module from ``$ROBUSTLAB_DATA`` when present, else ``n_synthetic``
    random 32×32 training and ``n_test`` test images; set up for fitting."""
    root = os.environ.get("ROBUSTLAB_DATA")
    dm = None
    if root:
        try:
            dm = build_datamodule("cifar10", root=root, **options)
            dm.setup("fit")
        except DataNotFoundError:
            dm = None
    if dm is None:
        dm = build_datamodule(
            "synthetic", n_train=n_synthetic, n_test=n_test, image_size=32, **options
        )
        dm.setup("fit")
    return dm


def compose_config(*overrides: str):
    """The ``robustlab-train`` config with ``overrides``, composed in-process."""
    with initialize_config_module(config_module="robustlab.conf", version_base="1.3"):
        return compose(config_name="train", overrides=list(overrides))


def train_one_step(folder, *overrides: str):
    """A ``robustlab-train`` run in ``folder`` stopped after one optimiser step, with no test and
    no suites: enough for a part (teacher, generator) another run loads. Returns ``folder``."""
    cfg = compose_config(
        *overrides,
        "trainer.max_epochs=1",
        "trainer.limit_train_batches=1",
        "trainer.enable_progress_bar=false",
        "test=false",
        "suite=[]",
    )
    train(cfg, folder)
    return folder


def timed(step: Callable[[], object], steps: int, device: torch.device) -> float:
    """Seconds per call of ``step`` over ``steps`` calls, the device's queue drained first and
    last."""
    sync(device)
    start = time.perf_counter()
    for _ in range(steps):
        step()
    sync(device)
    return (time.perf_counter() - start) / steps


def sync(device: torch.device) -> None:
    """Wait for the device's queued work, so wall-clock timings are real."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def per_image_loader(dm, transform, batch_size: int, workers: int) -> DataLoader:
    """The reference pipeline: ``transform`` (torchvision, per PIL image) over ``dm``'s training
    images in a shuffled DataLoader with ``workers`` processes."""
    train = dm._ensure_loaded().train
    items = ArrayItems(train.images, train.labels, dm.train_index, transform)
    return DataLoader(
        items,
        batch_size=batch_size,
        shuffle=True,
        drop_last=True,
        num_workers=workers,
        persistent_workers=workers > 0,
    )


def time_per_image(loader: DataLoader, device: torch.device, batches: int) -> tuple[float, float]:
    """(wall, main-process CPU) seconds for ``batches`` torchvision batches on ``device``."""
    sync(device)
    start, cpu = time.perf_counter(), time.process_time()
    for step, (images, _) in enumerate(loader):
        if step == batches:
            break
        images.to(device, non_blocking=True)
    sync(device)
    return time.perf_counter() - start, time.process_time() - cpu


def time_device_batches(
    dm, device: torch.device, batches: int, epoch: int, work: Callable[..., object]
) -> tuple[float, float]:
    """(wall, main-process CPU) seconds for ``batches`` training batches of ``dm`` moved to
    ``device`` and passed to ``work(images, epoch, step)`` (the batched side of a comparison)."""
    loader = dm.train_dataloader()
    loader.sampler.set_epoch(epoch)
    sync(device)
    start, cpu = time.perf_counter(), time.process_time()
    for step, (images, _) in enumerate(loader):
        if step == batches:
            break
        work(images.to(device, non_blocking=True), epoch, step)
    sync(device)
    return time.perf_counter() - start, time.process_time() - cpu


def batched_vs_per_image(
    time_batched: Callable[..., tuple[float, float]],
    dm,
    workers: DataLoader,
    in_process: DataLoader,
    device: torch.device,
    batches: int,
    repeats: int,
) -> tuple[float, float, float, float]:
    """Medians over ``repeats`` interleaved runs, after a warm-up of each side: (a) images/s and
    images/CPU-s of ``time_batched(dm, device, batches, epoch=...)`` (robustlab's batched side),
    (b) images/s of the per-image ``workers`` loader and images/CPU-s of ``in_process``."""
    images = batches * dm.batch_size
    time_batched(dm, device, 2, epoch=0)
    time_per_image(workers, device, 2)
    time_per_image(in_process, device, 2)
    a_wall, a_cpu, b_wall, b_cpu = [], [], [], []
    for repeat in range(repeats):
        wall, cpu = time_batched(dm, device, batches, epoch=repeat + 1)
        a_wall.append(images / wall)
        a_cpu.append(images / cpu)
        b_wall.append(images / time_per_image(workers, device, batches)[0])
        b_cpu.append(images / time_per_image(in_process, device, batches)[1])
    return tuple(statistics.median(v) for v in (a_wall, a_cpu, b_wall, b_cpu))
