"""Benchmark: training batches/s of the tensor-resident path vs the torchvision (PIL) path.

(a) tensor-resident CIFAR-10 + batched device augmentation (random crop, pad 4, + flip) on the
    training device (CUDA if available, else CPU);
(b) the ordinary DataLoader path: per-image RandomCrop(32, padding=4) + RandomHorizontalFlip +
    ToTensor in 0 and 2 worker processes, batches copied to the same device.
Both produce float [0, 1] batches of 128 on the device. Data: CIFAR-10 from $ROBUSTLAB_DATA
(canonical or the JPEG-decoded copy), else synthetic 3x32x32 images of the same count.
Reports images/s as the median over repeats after a warm-up, and the ratio (a) / (b).

    python scripts/bench_augment.py [--batches 100] [--repeats 3] [--full-epoch] [--threads 1]
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import time

import torch
from _bench import cifar10_or_synthetic, sync  # scripts/_bench.py

from robustlab.perturbations.imageops import from_uint8

AUGMENT = {"crop_padding": 4, "flip": True}


def make_datamodule(device_augment: bool, num_workers: int, batch_size: int):
    common = dict(
        batch_size=batch_size,
        augment=AUGMENT,
        device_augment=device_augment,
        num_workers=num_workers,
        drop_last=True,
    )
    return cifar10_or_synthetic(50000, **common)


def time_batches(dm, device: torch.device, batches: int, epoch: int) -> float:
    """Seconds to produce ``batches`` float training batches on ``device``."""
    loader = dm.train_dataloader()
    loader.sampler.set_epoch(epoch)
    sync(device)
    start = time.perf_counter()
    for step, (images, labels) in enumerate(loader):
        if step == batches:
            break
        images = images.to(device, non_blocking=True)
        labels = labels.to(device, non_blocking=True)
        if dm.device_augment_active:
            images = dm.augment_batch(images, epoch, step)
        if images.dtype == torch.uint8:
            images = from_uint8(images)
    sync(device)
    return time.perf_counter() - start


def measure(name: str, dm, device: torch.device, batches: int, repeats: int) -> float:
    batches = min(batches, len(dm.train_dataloader()))
    time_batches(dm, device, min(batches, 10), epoch=0)  # warm-up (workers, caches, kernels)
    seconds = [time_batches(dm, device, batches, epoch=1 + r) for r in range(repeats)]
    rate = batches * dm.batch_size / statistics.median(seconds)
    spread = ", ".join(f"{batches * dm.batch_size / s:,.0f}" for s in seconds)
    print(f"{name:<44} {rate:>12,.0f} img/s   (repeats: {spread})")
    return rate


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batches", type=int, default=100, help="batches per timed run")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--full-epoch", action="store_true", help="time one whole epoch")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument(
        "--threads", type=int, default=None, help="torch threads (default: torch's)"
    )
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    batches = 10**9 if args.full_epoch else args.batches

    fast = make_datamodule(True, 0, args.batch_size)
    print(f"data: {fast.description}, {len(fast.train_index)} training images")
    gpu = torch.cuda.get_device_name(device) if device.type == "cuda" else "-"
    print(
        f"machine: {platform.processor() or platform.machine()}, {os.cpu_count()} CPUs, "
        f"torch {torch.__version__}, {torch.get_num_threads()} threads, device {device} ({gpu})"
    )
    print(f"batch size {args.batch_size}, crop padding 4 + flip, median of {args.repeats}")
    rate_fast = measure(
        "(a) tensor-resident + device augmentation", fast, device, batches, args.repeats
    )
    for workers in (0, 2):
        slow = make_datamodule(False, workers, args.batch_size)
        rate_slow = measure(
            f"(b) torchvision PIL DataLoader, {workers} workers",
            slow,
            device,
            batches,
            args.repeats,
        )
        print(f"    ratio (a) / (b, {workers} workers): {rate_fast / rate_slow:.1f}x")


if __name__ == "__main__":
    main()
