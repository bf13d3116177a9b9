"""Benchmark: CRLD strong views per second, batched (robustlab) vs per image (torchvision).

(a) robustlab: ``data.views=[strong]`` on the tensor-resident training loader; every batch's
    strong view (crop + flip, RandAugment with 2 ops, Cutout) made by
    :meth:`ImageDataModule.make_views` on the training device (CUDA if available, else CPU);
(b) torchvision: the same images through a DataLoader whose workers apply per image
    ``RandomCrop(32, padding=4)``, ``RandomHorizontalFlip()``, ``RandAugment(num_ops=2)`` and
    ``ToTensor()`` (no Cutout: a conservative comparison for (a)); batches copied to the device.
Both yield float [0, 1] batches on the device, in the same run. Data: CIFAR-10 from
$ROBUSTLAB_DATA (canonical or the JPEG-decoded copy), else synthetic 3x32x32 images.
Reports the median over repeats after a warm-up of (1) views per second of wall-clock time,
(a) vs (b) with ``--workers`` processes, and (2) views per CPU-second of the process doing the
work, (a) vs (b) run in the main process: on a shared, loaded machine the second is the fair
one (the worker processes of (b) otherwise take more of the contended cores than (a)'s one
thread). Ratios (a) / (b) of both.

    python scripts/bench_views.py [--batches 40] [--batch-size 128] [--workers 2] [--threads 1]
"""

from __future__ import annotations

import argparse
import os
import platform

import torch
from _bench import (
    batched_vs_per_image,
    cifar10_or_synthetic,
    per_image_loader,
    time_device_batches,
)  # scripts/
from torch.utils.data import DataLoader
from torchvision import transforms as T


def make_datamodule(batch_size: int):
    common = dict(batch_size=batch_size, views=["strong"], drop_last=True, val_fraction=0.0)
    return cifar10_or_synthetic(20000, **common)


def time_batched(dm, device: torch.device, batches: int, epoch: int) -> tuple[float, float]:
    """(wall, CPU) seconds for ``batches`` strong-view batches made on ``device``."""
    return time_device_batches(dm, device, batches, epoch, dm.make_views)


def torchvision_loader(dm, batch_size: int, workers: int) -> DataLoader:
    transform = T.Compose(
        [
            T.RandomCrop(32, padding=4),
            T.RandomHorizontalFlip(),
            T.RandAugment(num_ops=2),
            T.ToTensor(),
        ]
    )
    return per_image_loader(dm, transform, batch_size, workers)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batches", type=int, default=40)
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--workers", type=int, default=2, help="torchvision DataLoader workers")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument(
        "--threads",
        type=int,
        default=1,
        help="torch threads of (a) (0: torch's default); each worker of (b) runs one thread",
    )
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    dm = make_datamodule(args.batch_size)
    workers = torchvision_loader(dm, args.batch_size, args.workers)
    in_process = torchvision_loader(dm, args.batch_size, 0)
    a, a_per_cpu, b, b_per_cpu = batched_vs_per_image(
        time_batched, dm, workers, in_process, device, args.batches, args.repeats
    )
    print(
        f"device={device} cpu={platform.processor() or platform.machine()} "
        f"threads={torch.get_num_threads()} cores={os.cpu_count()} load={os.getloadavg()[0]:.1f} "
        f"batch={args.batch_size} data={dm.description}"
    )
    print(f"(a) robustlab batched strong views:    {a:8.0f} views/s  {a_per_cpu:8.0f} views/CPU-s")
    print(f"(b) torchvision RandAugment per image: {b:8.0f} views/s  {b_per_cpu:8.0f} views/CPU-s")
    print(f"    (views/s with {args.workers} DataLoader workers; views/CPU-s in the main process)")
    print(f"ratio (a)/(b): {a / b:.2f}x wall-clock, {a_per_cpu / b_per_cpu:.2f}x per CPU-second")
    print("goal: >= 5x on CPU")


if __name__ == "__main__":
    main()
